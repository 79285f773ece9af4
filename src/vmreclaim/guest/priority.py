"""Run the agent at idle priority: CPU nice 19, SCHED_IDLE, and the idle I/O class.

The agent must never compete with the guest's work. Each step may fail (containers, seccomp, a
kernel without SCHED_IDLE): failures are reported and logged, never fatal. The systemd unit sets
the same (Nice=19, CPUSchedulingPolicy=idle, IOSchedulingClass=idle), so running unprivileged
outside systemd is the only case where these calls matter.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

NICE_LOWEST = 19
# include/uapi/linux/ioprio.h: the class sits above a 13-bit data field; IOPRIO_CLASS_IDLE = 3;
# IOPRIO_WHO_PROCESS = 1 with who = 0 means the calling process.
IOPRIO_CLASS_SHIFT = 13
IOPRIO_CLASS_IDLE = 3
IOPRIO_WHO_PROCESS = 1
# ioprio_set has no libc wrapper; its syscall number depends on the architecture
# (arch/x86/entry/syscalls/syscall_64.tbl: 251; include/uapi/asm-generic/unistd.h: 30).
IOPRIO_SET_SYSCALL = {"x86_64": 251, "aarch64": 30, "riscv64": 30}

Syscall = Callable[[int, int, int, int], int]  # (number, which, who, ioprio) -> -1 and errno


@dataclass(frozen=True)
class PriorityReport:
    """Which steps took effect; `problems` says why the others did not, one line each."""

    nice: bool
    sched_idle: bool
    io_idle: bool
    problems: tuple[str, ...]


def _libc_syscall(number: int, which: int, who: int, ioprio: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    result: int = libc.syscall(number, which, who, ioprio)
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def set_io_idle(machine: str | None = None, syscall: Syscall = _libc_syscall) -> None:
    """ioprio_set(IOPRIO_WHO_PROCESS, 0, IOPRIO_CLASS_IDLE << 13); OSError when it fails."""
    machine = machine or platform.machine()
    number = IOPRIO_SET_SYSCALL.get(machine)
    if number is None:
        raise OSError(f"no known ioprio_set syscall number on {machine}")
    syscall(number, IOPRIO_WHO_PROCESS, 0, IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT)


def set_sched_idle() -> None:
    """sched_setscheduler(0, SCHED_IDLE): run only when no other task wants the CPU."""
    if not hasattr(os, "sched_setscheduler") or not hasattr(os, "SCHED_IDLE"):
        raise OSError("this Python or OS has no SCHED_IDLE")
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def lower_priority(
    *,
    nice: Callable[[int], int] = os.nice,
    set_scheduler: Callable[[], None] = set_sched_idle,
    set_io: Callable[[], None] = set_io_idle,
) -> PriorityReport:
    """Lower this process's CPU and I/O priority as far as it goes; log what could not be done."""
    problems = []
    done_nice = done_sched = done_io = False
    try:
        nice(NICE_LOWEST)  # an increment: the kernel clamps the result at 19
        done_nice = True
    except OSError as err:
        problems.append(f"cannot lower CPU priority (nice): {err}")
    try:
        set_scheduler()
        done_sched = True
    except OSError as err:
        problems.append(f"cannot switch to SCHED_IDLE: {err}")
    try:
        set_io()
        done_io = True
    except OSError as err:
        problems.append(f"cannot set the idle I/O class (ioprio_set): {err}")
    for problem in problems:
        log.warning("%s; running at a higher priority than intended", problem)
    return PriorityReport(done_nice, done_sched, done_io, tuple(problems))


@contextlib.contextmanager
def normal_cpu_priority() -> Iterator[None]:
    """Run the block as an ordinary task (SCHED_OTHER, nice 0), then go back to what we were.

    Compaction runs in the context of the task that writes compact_memory, and gives up early
    when other tasks want the CPU: under SCHED_IDLE and nice 19 it moved 6,821 pages of a
    fragmented 512 MiB guest here, as an ordinary task 34,360 (and returned 250 MiB more to
    the host). Needs CAP_SYS_NICE to raise the priority back, which the agent has as root;
    without it the block runs at whatever priority we have.
    """
    if not hasattr(os, "sched_getscheduler"):
        yield
        return
    policy = os.sched_getscheduler(0)
    niceness = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        os.setpriority(os.PRIO_PROCESS, 0, 0)
    except OSError as err:
        log.debug("cannot raise the priority for compaction: %s", err)
    try:
        yield
    finally:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, niceness)
            os.sched_setscheduler(0, policy, os.sched_param(0))
        except OSError as err:
            log.warning("cannot go back to idle priority: %s", err)
