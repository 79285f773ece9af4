"""Run in a guest as root (standard library only): which pages pin the free memory that lies in
partly free 2 MiB blocks, which free page reporting at order 9 cannot return. From
/proc/kpageflags: a free block is a BUDDY head and the flagless pages after it up to the largest
aligned run (its order is guessed so: a page with no flags that is not free is counted as free
when it follows one). Used by build_real_idle.py MODE pins."""

import collections
import struct

BUDDY, LRU, SLAB, ANON, COMPOUND_HEAD, COMPOUND_TAIL, PGTABLE, RESERVED = (
    10,
    5,
    7,
    12,
    15,
    16,
    26,
    32,
)
chunks = []
with open("/proc/kpageflags", "rb", buffering=0) as f:
    while True:
        chunk = f.read(1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
raw = b"".join(chunks)
flags = struct.unpack(f"{len(raw) // 8}Q", raw)
free = bytearray(len(flags))
pfn = 0
while pfn < len(flags):
    if flags[pfn] >> BUDDY & 1:
        order = 0  # the largest aligned run of flagless pages after the head: its order, guessed
        while (
            order < 10
            and pfn % (2 << order) == 0
            and pfn + (2 << order) <= len(flags)
            and not any(flags[pfn + (1 << order) : pfn + (2 << order)])
        ):
            order += 1
        free[pfn : pfn + (1 << order)] = b"\1" * (1 << order)
        pfn += 1 << order
    else:
        pfn += 1


def kind(value):
    for bit, name in ((SLAB, "slab"), (PGTABLE, "page table"), (RESERVED, "reserved")):
        if value >> bit & 1:
            return name
    if value >> COMPOUND_HEAD & 1 or value >> COMPOUND_TAIL & 1:
        return "compound (THP, large kmalloc)"
    if value >> LRU & 1:
        return "anon on LRU" if value >> ANON & 1 else "file on LRU"
    return "no flags (vmalloc, kernel stack, other)" if value == 0 else f"other {value:#x}"


pins = collections.Counter()
stuck = blocks = 0
for start in range(0, len(flags) - 511, 512):
    n = sum(free[start : start + 512])
    if 0 < n < 512:
        blocks += 1
        stuck += n
        for i in range(start, start + 512):
            if not free[i]:
                pins[kind(flags[i])] += 1
print(f"{blocks} partly free 2 MiB blocks hold {stuck * 4 / 1024:.1f} MiB free; pinned by:")
for name, count in pins.most_common():
    print(f"  {name}: {count} pages ({count * 4 / 1024:.1f} MiB)")
