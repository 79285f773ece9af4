"""A real language runtime's heap, freed by the runtime itself: the Go program beside this file
(`runtime_heap.go`), built with the guest's `go` (Debian's golang-go, Go 1.19) and driven over
its stdin and stdout. What it freed is measured twice: by the runtime (its HeapReleased) and by
the kernel (what stayed allocated in partly freed transparent huge pages, `thp_held_bytes`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from vmreclaim.errors import MissingDependencyError, VmreclaimError
from vmreclaim.guest.observe.memory import MemInfo, parse_meminfo
from vmreclaim.workloads.kinds import wait_for

SOURCE = Path(__file__).with_name("runtime_heap.go")
# One object in 16 survives: a live page every 64 KiB, so no 2 MiB of the heap is wholly free.
KEEP_EVERY = 16


@dataclass(frozen=True)
class HeapReport:
    heap_bytes: int
    """The heap in use once built (the runtime's HeapInuse)."""
    freed_bytes: int
    """What the runtime gave back to the kernel (the rise of its HeapReleased)."""
    held_bytes: int
    """The rise of MemInfo.unmapped_anon_bytes across the free: freed by the program, still
    allocated in partly freed huge pages."""
    memfree_rise_bytes: int
    """The rise of the guest's MemFree across the free (may be negative: other activity)."""


def parse_status(line: str, expected: str) -> tuple[int, int]:
    """(HeapInuse, HeapReleased) from the program's `WORD INUSE RELEASED` line."""
    parts = line.split()
    if len(parts) != 3 or parts[0] != expected or not all(p.isdigit() for p in parts[1:]):
        raise VmreclaimError(f"the Go heap program said {line!r}, expected {expected!r}")
    return int(parts[1]), int(parts[2])


def heap_report(
    built: tuple[int, int], freed: tuple[int, int], before: MemInfo, after: MemInfo
) -> HeapReport:
    return HeapReport(
        heap_bytes=built[0],
        freed_bytes=max(0, freed[1] - built[1]),
        held_bytes=max(0, (after.unmapped_anon_bytes or 0) - (before.unmapped_anon_bytes or 0)),
        memfree_rise_bytes=(after.free_bytes or 0) - (before.free_bytes or 0),
    )


def build(workdir: Path) -> Path:
    """Compile the program into `workdir` (about 30 s in a TCG guest, under 1 s natively)."""
    go = shutil.which("go")
    if go is None:
        raise MissingDependencyError(
            "no `go` on PATH", hint="install golang-go (scripts/setup does)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    binary = workdir / "runtime-heap"
    # A guest has no HOME, and the build cache must be somewhere writable. The environment is
    # otherwise left alone: changing CGO_ENABLED, say, would rebuild the standard library that
    # Debian ships compiled (minutes under TCG).
    env = {**os.environ, "HOME": str(workdir), "GOCACHE": str(workdir / "cache")}
    done = subprocess.run(
        [go, "build", "-o", str(binary), str(SOURCE)], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise VmreclaimError(f"go build of {SOURCE.name} failed: {done.stderr.strip()}")
    return binary


def _read_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise VmreclaimError(f"the Go heap program exited early ({process.wait()})")
    return line


def run(
    size: int,
    workdir: Path,
    *,
    ready: Path | None,
    release: Path | None,
    report: Path | None,
    hold: float,
    proc: Path = Path("/proc"),
) -> HeapReport:
    """Build a `size` heap in the Go program; create `ready`; once `release` exists (or after
    `hold` seconds) have the program free all but one object in KEEP_EVERY; write what it
    freed to `report` as JSON; hold the survivors for `hold` seconds more; end the program."""
    binary = build(workdir)
    with subprocess.Popen(
        [str(binary), str(size), str(KEEP_EVERY)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdin is not None
        try:
            built = parse_status(_read_line(process), "built")
            if ready is not None:
                ready.write_text(f"{built[0]}\n")
            wait_for(release, hold)
            before = parse_meminfo((proc / "meminfo").read_text())
            process.stdin.write("free\n")
            process.stdin.flush()
            freed = parse_status(_read_line(process), "freed")
            result = heap_report(
                built, freed, before, parse_meminfo((proc / "meminfo").read_text())
            )
            if report is not None:
                report.write_text(json.dumps(asdict(result)) + "\n")
            wait_for(None, hold)
        finally:
            # End of input is the program's signal to exit; kill it if it does not.
            process.stdin.close()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    return result
