"""The bursts benchmark's pieces that need no guest: reading the guest script's output, and the
summary table (bench/bursts.py; the guest runs are in tests/vm/test_host_bursts.py)."""

from __future__ import annotations

import pytest

from vmreclaim.bench.bursts import BurstResult, parse_guest_output, summary
from vmreclaim.errors import VmreclaimError

MIB = 1 << 20


def result(
    deflate: bool, shape: str, code: int | None, kills: int | None, error: str = "", **kw: float
) -> BurstResult:
    return BurstResult(
        deflate_on_oom=deflate,
        shape=shape,
        repeat=0,
        exit_code=code,
        oom_kills=kills,
        seconds=kw.get("seconds"),
        guest_available_bytes=300 * MIB,
        guest_total_bytes=400 * MIB,
        balloon_before_bytes=1100 * MIB,
        balloon_lowest_bytes=1100 * MIB,
        balloon_largest_bytes=1536 * MIB,
        let_go_s=kw.get("let_go"),
        error=error,
    )


def test_a_finished_burst_is_read_with_its_time() -> None:
    out = '0 3 3 301234 402000\n{"allocated_bytes": 734003200, "seconds": 7.25}\n'
    assert parse_guest_output(out) == (0, 3, 3, 301234 * 1024, 402000 * 1024, 7.25)


def test_a_killed_burst_has_no_time_and_counts_the_kill() -> None:
    # The allocator was SIGKILLed: the shell reports 137 and no JSON followed.
    code, before, after, available, _, seconds = parse_guest_output("137 0 1 250000 400000\n")
    assert (code, after - before, seconds) == (137, 1, None)
    assert available == 250000 * 1024


def test_output_without_the_status_line_is_an_error() -> None:
    with pytest.raises(VmreclaimError, match="unexpected output"):
        parse_guest_output("Killed\n")


def test_survived_needs_exit_0_and_no_oom_kill() -> None:
    assert result(True, "at once", 0, 0, seconds=2.0).survived
    assert not result(True, "at once", 0, 1, seconds=2.0).survived  # something else was killed
    assert not result(False, "at once", 137, 1).survived
    assert not result(False, "at once", None, None).survived  # the channel was lost


def test_summary_has_a_row_per_setting_and_shape_with_median_and_spread() -> None:
    runs = [
        result(False, "at once", 137, 1, let_go=2.0),
        result(False, "at once", 1, 0, "MemoryError"),
        result(False, "at once", 0, 0, seconds=3.0, let_go=3.0),
        result(False, "at once", 0, 0, seconds=5.0, let_go=4.0),
        result(True, "100 MB/s", 0, 0, seconds=7.1, let_go=2.5),
    ]
    rows = summary(runs).splitlines()
    assert len(rows) == 4
    assert rows[2] == (
        "| off | at once | 2 of 4 | 1 | OOM kill x1, MemoryError x1 | 4.0 s (3.0 - 5.0) "
        "| 3.0 s (2.0 - 4.0) |"
    )
    assert rows[3] == "| on | 100 MB/s | 1 of 1 | 0 | - | 7.1 s | 2.5 s |"
