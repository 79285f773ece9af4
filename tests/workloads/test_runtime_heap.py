"""The Go heap workload's parsing and reporting, and the program itself where `go` is installed
(natively: the huge pages it leaves held are a guest's matter, measured in the benchmark)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vmreclaim.errors import VmreclaimError
from vmreclaim.guest.observe.memory import MemInfo, parse_meminfo
from vmreclaim.workloads.runtime_heap import HeapReport, heap_report, parse_status, run

MIB = 1 << 20

# A lab guest's /proc/meminfo (kernel 6.1, 2 GiB, THP always), its first 25 lines, right after
# the Go program built a 1 GiB heap and its runtime released 906 MiB of it (HeapReleased).
HELD_MEMINFO = """\
MemTotal:        2012132 kB
MemFree:          754488 kB
MemAvailable:     726032 kB
Buffers:               0 kB
Cached:            89144 kB
SwapCached:            0 kB
Active:            23744 kB
Inactive:        1187452 kB
Active(anon):       7544 kB
Inactive(anon):  1122528 kB
Active(file):      16200 kB
Inactive(file):    64924 kB
Unevictable:           0 kB
Mlocked:               0 kB
SwapTotal:             0 kB
SwapFree:              0 kB
Zswap:                 0 kB
Zswapped:              0 kB
Dirty:                 0 kB
Writeback:             0 kB
AnonPages:        200912 kB
Mapped:             9404 kB
Shmem:              8020 kB
KReclaimable:      12592 kB
"""


def _meminfo(**fields: int) -> MemInfo:
    base = {
        "MemFree": 0,
        "Active(anon)": 0,
        "Inactive(anon)": 0,
        "AnonPages": 0,
        "Shmem": 0,
        "SwapCached": 0,
    } | fields
    return parse_meminfo("".join(f"{key}: {value // 1024} kB\n" for key, value in base.items()))


def test_held_is_anonymous_memory_on_the_lru_that_no_process_maps() -> None:
    # (7544 + 1122528 - 200912 - 8020) kB: 900 MiB of the 906 MiB the runtime released.
    assert parse_meminfo(HELD_MEMINFO).unmapped_anon_bytes == 921140 * 1024


def test_held_is_never_negative() -> None:
    # Pages still in per-CPU LRU batches, or mlocked (unevictable), count in AnonPages but on
    # neither anon list: on a quiet system the difference can dip just below zero.
    memory = _meminfo(**{"Active(anon)": 10 * 1024, "AnonPages": 8 * 1024, "Shmem": 5 * 1024})
    assert memory.unmapped_anon_bytes == 0


def test_the_programs_lines_are_checked_word_and_numbers() -> None:
    assert parse_status("built 1080262656 2000000\n", "built") == (1080262656, 2000000)
    with pytest.raises(VmreclaimError, match="expected 'freed'"):
        parse_status("built 1 2\n", "freed")
    with pytest.raises(VmreclaimError):
        parse_status("freed many\n", "freed")


def test_the_report_counts_what_the_runtime_released_and_what_the_kernel_kept() -> None:
    before = _meminfo(**{"Active(anon)": 1000 * MIB, "AnonPages": 990 * MIB, "MemFree": 800 * MIB})
    after = _meminfo(**{"Active(anon)": 1000 * MIB, "AnonPages": 100 * MIB, "MemFree": 795 * MIB})
    report = heap_report((1024 * MIB, 2 * MIB), (64 * MIB, 902 * MIB), before, after)
    assert report == HeapReport(
        heap_bytes=1024 * MIB,
        freed_bytes=900 * MIB,
        held_bytes=890 * MIB,
        memfree_rise_bytes=-5 * MIB,
    )


@pytest.mark.skipif(shutil.which("go") is None, reason="needs go (golang-go)")
def test_the_go_program_builds_frees_and_reports(tmp_path: Path) -> None:
    ready, release, out = tmp_path / "ready", tmp_path / "release", tmp_path / "report.json"
    release.touch()
    report = run(32 * MIB, tmp_path / "work", ready=ready, release=release, report=out, hold=0)
    assert int(ready.read_text()) >= 32 * MIB
    assert HeapReport(**json.loads(out.read_text())) == report
    # All but one object in 16 goes back to the kernel (the runtime's own figure).
    assert report.freed_bytes >= 32 * MIB * 3 // 4
