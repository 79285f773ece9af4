"""The workloads themselves. Each is a plain function, so the benchmark's scenarios compose them
and the command line (`__main__`) only parses and dispatches."""

from __future__ import annotations

import json
import mmap
import os
import statistics
import time
from pathlib import Path

PAGE = 4096
_CHUNK = 1 << 20


def wait_for(path: Path | None, seconds: float) -> None:
    """Until `path` exists, `seconds` at most (all of them when `path` is None)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (path is not None and path.exists()):
        time.sleep(0.05)


def alloc(
    size: int,
    ready: Path | None,
    release: Path | None,
    hold: float,
    rate: float | None = None,
) -> float:
    """Allocate `size` bytes of anonymous memory and write every page, so the guest really
    backs it: at once, or `rate` bytes a second in 10 MiB pieces; create `ready`; hold until
    `release` exists (or `hold` seconds); then free it. Returns the seconds the allocation
    took."""
    started = time.monotonic()
    blocks = []
    piece = size if rate is None else 10 * _CHUNK
    for start in range(0, size, piece):
        if rate is not None:
            time.sleep(max(0.0, started + start / rate - time.monotonic()))
        # One C-speed fill writes every page: a loop of Python writes, one a page, ran at
        # 57 MB/s in a TCG guest, too slow to be "at once".
        blocks.append(bytearray(b"\x01") * min(piece, size - start))
    took = time.monotonic() - started
    if ready is not None:
        ready.write_text(f"{size}\n")
    wait_for(release, hold)
    del blocks
    return took


def write_files(directory: Path, total: int, file_size: int) -> list[Path]:
    """Write `total` bytes as files of `file_size` into `directory` and sync them: page cache
    the guest holds until something reclaims it. Pages differ, so nothing dedups them."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    chunk = bytearray(_CHUNK)
    index = 0
    while total > 0:
        path = directory / f"data-{index:04d}"
        size = min(file_size, total)
        with path.open("wb") as out:
            for offset in range(0, size, _CHUNK):
                # A different first word on every page keeps the data from being all zeros.
                for page in range(0, _CHUNK, PAGE):
                    chunk[page : page + 8] = (index * size + offset + page).to_bytes(8, "little")
                out.write(chunk[: min(_CHUNK, size - offset)])
            os.fsync(out.fileno())
        written.append(path)
        total -= size
        index += 1
    return written


def busy(duty: float, seconds: float) -> None:
    """Keep one CPU busy `duty` of the time (spin, then sleep, in 100 ms periods): a VM that is
    never idle by WSL2's measure (busy > 0.5 % of all CPU time), like one running an IDE."""
    period = 0.1
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        spin_until = time.monotonic() + period * duty
        while time.monotonic() < spin_until:
            pass
        time.sleep(period * (1 - duty))


def _refaults() -> int:
    for line in Path("/proc/vmstat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key in ("workingset_refault_file", "workingset_refault"):
            return int(value)
    return 0


def reread(
    directory: Path,
    seconds: float,
    pause: float,
    report: Path | None,
    until: Path | None = None,
) -> dict[str, float]:
    """Read every file of `directory` again and again for `seconds`, or until `until` exists:
    a hot file set. Reports the passes, their mean, median and worst time, and the file
    refaults seen meanwhile. `until` lets the host end it on its own clock, which a guest on
    an instruction-counting clock does not keep."""
    files = sorted(p for p in directory.iterdir() if p.is_file())
    refaults_before = _refaults()
    times: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (until is not None and until.exists()):
        started = time.monotonic()
        for path in files:
            with path.open("rb") as data:
                while data.read(_CHUNK):
                    pass
        times.append(time.monotonic() - started)
        time.sleep(pause)
    summary = {
        "passes": float(len(times)),
        "mean_pass_seconds": sum(times) / len(times) if times else 0.0,
        # Under TCG a pass now and then takes twice as long for no reason of ours: the
        # median is the figure to compare.
        "median_pass_seconds": statistics.median(times) if times else 0.0,
        "worst_pass_seconds": max(times, default=0.0),
        "refaults": float(_refaults() - refaults_before),
    }
    if report is not None:
        report.write_text(json.dumps(summary) + "\n")
    return summary


def fragment(size: int, ready: Path | None, hold: float) -> None:
    """Touch `size` bytes of anonymous memory, then free every other page and keep the rest:
    half of it becomes free memory in single pages, which free page reporting (blocks of
    order 9 and up) cannot return until compaction moves the pages still held."""
    region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    # Small pages only: freeing 4 KiB of a transparent huge page frees nothing until the
    # kernel splits it (seen here: with THP the "freed" half stayed allocated).
    region.madvise(mmap.MADV_NOHUGEPAGE)
    for offset in range(0, size, PAGE):
        region[offset] = 1
    for offset in range(0, size, 2 * PAGE):
        region.madvise(mmap.MADV_DONTNEED, offset, PAGE)
    if ready is not None:
        ready.write_text(f"{size // 2}\n")
    wait_for(None, hold)
    region.close()
