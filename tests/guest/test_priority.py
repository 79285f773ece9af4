from __future__ import annotations

import errno
import logging

import pytest

from vmreclaim.guest.priority import lower_priority, set_io_idle


def test_io_idle_calls_ioprio_set_with_the_idle_class_on_x86_64():
    calls: list[tuple[int, ...]] = []

    def syscall(*args: int) -> int:
        calls.append(args)
        return 0

    set_io_idle("x86_64", syscall)
    assert calls == [(251, 1, 0, 3 << 13)]


def test_io_idle_on_an_unknown_architecture_is_an_os_error():
    with pytest.raises(OSError, match="no known ioprio_set syscall number on sparc64"):
        set_io_idle("sparc64", lambda *args: 0)


def test_lower_priority_does_all_three_steps():
    niced: list[int] = []

    def nice(increment: int) -> int:
        niced.append(increment)
        return 19

    report = lower_priority(nice=nice, set_scheduler=lambda: None, set_io=lambda: None)
    assert niced == [19]
    assert (report.nice, report.sched_idle, report.io_idle) == (True, True, True)
    assert report.problems == ()


def test_failures_to_lower_priority_are_logged_not_raised(caplog):
    def refuse(*args: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    caplog.set_level(logging.WARNING)
    report = lower_priority(nice=lambda n: 19, set_scheduler=refuse, set_io=refuse)
    assert report.nice
    assert not report.sched_idle
    assert not report.io_idle
    assert len(report.problems) == 2
    assert caplog.messages[0].startswith("cannot switch to SCHED_IDLE: [Errno 1] Operation not")
