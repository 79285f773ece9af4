// A Go program that builds a heap of small objects and frees most of it through the Go
// runtime's own means (a GC, then the scavenger via debug.FreeOSMemory), then stays alive.
// Driven by vmreclaim.workloads.runtime_heap over stdin and stdout, one line each way:
//
//	argv:   SIZE KEEP_EVERY      bytes of heap to build, keep one object in KEEP_EVERY
//	stdout: built HEAP_INUSE HEAP_RELEASED
//	stdin:  any line             free the heap
//	stdout: freed HEAP_INUSE HEAP_RELEASED
//	stdin:  end of file          exit
//
// Why this frees inside huge pages: the objects that stay are spread over the whole heap, so
// the free runs between them are smaller than 2 MiB, and Go 1.19's scavenger returns each run
// with madvise(MADV_DONTNEED). Under THP "always" the heap's arenas (64 MiB mappings) were
// faulted in huge pages, and the kernel keeps each partly freed one whole on its deferred-split
// list until memory pressure or compaction splits it.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
)

// One object per page: every page of the heap is written, and the survivors (one in
// KEEP_EVERY) land a few pages apart across the whole heap.
const objectSize = 4096

var survivors [][]byte

func report(what string) {
	var stats runtime.MemStats
	runtime.ReadMemStats(&stats)
	fmt.Printf("%s %d %d\n", what, stats.HeapInuse, stats.HeapReleased)
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: runtime_heap SIZE KEEP_EVERY")
		os.Exit(2)
	}
	size, err1 := strconv.ParseInt(os.Args[1], 10, 64)
	keepEvery, err2 := strconv.Atoi(os.Args[2])
	if err1 != nil || err2 != nil || size < objectSize || keepEvery < 1 {
		fmt.Fprintln(os.Stderr, "runtime_heap: SIZE and KEEP_EVERY are positive integers")
		os.Exit(2)
	}
	heap := make([][]byte, size/objectSize)
	for i := range heap {
		heap[i] = make([]byte, objectSize)
		heap[i][0] = 1
	}
	report("built")
	stdin := bufio.NewReader(os.Stdin)
	if _, err := stdin.ReadString('\n'); err != nil {
		os.Exit(0)
	}
	for i := 0; i < len(heap); i += keepEvery {
		survivors = append(survivors, heap[i])
	}
	heap = nil
	debug.FreeOSMemory()
	report("freed")
	for {
		if _, err := stdin.ReadString('\n'); err != nil {
			break
		}
	}
	runtime.KeepAlive(survivors)
}
