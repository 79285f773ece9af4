from __future__ import annotations

import errno
import logging

import pytest

from vmreclaim.guest.priority import lower_priority, set_io_low


def test_io_low_calls_ioprio_set_with_the_lowest_best_effort_level_on_x86_64():
    calls: list[tuple[int, ...]] = []

    def syscall(*args: int) -> int:
        calls.append(args)
        return 0

    set_io_low("x86_64", syscall)
    assert calls == [(251, 1, 0, 2 << 13 | 7)]


def test_io_low_on_an_unknown_architecture_is_an_os_error():
    with pytest.raises(OSError, match="no known ioprio_set syscall number on sparc64"):
        set_io_low("sparc64", lambda *args: 0)


def test_lower_priority_does_all_three_steps():
    niced: list[int] = []

    def nice(increment: int) -> int:
        niced.append(increment)
        return 10

    report = lower_priority(
        nice=nice, set_scheduler=lambda: None, set_io=lambda: None, current_nice=lambda: 0
    )
    assert niced == [10]
    assert (report.nice, report.sched_batch, report.io_low) == (True, True, True)
    assert report.problems == ()


def test_a_process_already_nicer_than_the_agent_stays_so():
    niced: list[int] = []

    def nice(increment: int) -> int:
        niced.append(increment)
        return 19

    lower_priority(
        nice=nice,
        set_scheduler=lambda: None,
        set_io=lambda: None,
        current_nice=lambda: 19,
    )
    assert niced == [0]


def test_failures_to_lower_priority_are_logged_not_raised(caplog):
    def refuse(*args: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    caplog.set_level(logging.WARNING)
    report = lower_priority(
        nice=lambda n: 10, set_scheduler=refuse, set_io=refuse, current_nice=lambda: 0
    )
    assert report.nice
    assert not report.sched_batch
    assert not report.io_low
    assert len(report.problems) == 2
    assert caplog.messages[0].startswith("cannot switch to SCHED_BATCH: [Errno 1] Operation not")
