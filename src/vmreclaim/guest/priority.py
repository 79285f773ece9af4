"""Run the agent at low priority: CPU nice 10, SCHED_BATCH, and the lowest best-effort I/O level.

Low, not idle. The agent must yield to the guest's work, but it must also keep running when
that work fills every CPU, which is when returning cold cache matters. Measured in the
benchmark's pgbench-ro (one vCPU that pgbench's four processes keep busy): under SCHED_IDLE and
nice 19 the agent's ticks overran by 24-63 s and one 65 MiB memory.reclaim write took 37 s, so
almost nothing came back. Nice 10 weighs 110 against 1024 for each busy nice-0 task (about 2.6 %
of a CPU against four of them), above what a tick costs; SCHED_BATCH keeps its wake-ups from
preempting them. The idle I/O class would stall drop-behind's writes behind a database's I/O
under BFQ, so the I/O class is best-effort at its lowest level (7).

Each step may fail (containers, seccomp): failures are reported and logged, never fatal. The
systemd unit sets the same (Nice=10, CPUSchedulingPolicy=batch, IOSchedulingClass=best-effort,
IOSchedulingPriority=7), so running outside systemd is the only case where these calls matter.
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

AGENT_NICE = 10
# include/uapi/linux/ioprio.h: the class sits above a 13-bit data field; IOPRIO_CLASS_BE = 2
# with levels 0 (highest) to 7; IOPRIO_WHO_PROCESS = 1 with who = 0 means the calling process.
IOPRIO_CLASS_SHIFT = 13
IOPRIO_CLASS_BE = 2
IOPRIO_BE_LOWEST = 7
IOPRIO_WHO_PROCESS = 1
# ioprio_set has no libc wrapper; its syscall number depends on the architecture
# (arch/x86/entry/syscalls/syscall_64.tbl: 251; include/uapi/asm-generic/unistd.h: 30).
IOPRIO_SET_SYSCALL = {"x86_64": 251, "aarch64": 30, "riscv64": 30}

Syscall = Callable[[int, int, int, int], int]  # (number, which, who, ioprio) -> -1 and errno


@dataclass(frozen=True)
class PriorityReport:
    """Which steps took effect; `problems` says why the others did not, one line each."""

    nice: bool
    sched_batch: bool
    io_low: bool
    problems: tuple[str, ...]


def _libc_syscall(number: int, which: int, who: int, ioprio: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    result: int = libc.syscall(number, which, who, ioprio)
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def set_io_low(machine: str | None = None, syscall: Syscall = _libc_syscall) -> None:
    """ioprio_set(IOPRIO_WHO_PROCESS, 0, IOPRIO_CLASS_BE << 13 | 7); OSError when it fails."""
    machine = machine or platform.machine()
    number = IOPRIO_SET_SYSCALL.get(machine)
    if number is None:
        raise OSError(f"no known ioprio_set syscall number on {machine}")
    ioprio = IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT | IOPRIO_BE_LOWEST
    syscall(number, IOPRIO_WHO_PROCESS, 0, ioprio)


def set_sched_batch() -> None:
    """sched_setscheduler(0, SCHED_BATCH): CPU time by nice, without preempting on wake-up."""
    if not hasattr(os, "sched_setscheduler") or not hasattr(os, "SCHED_BATCH"):
        raise OSError("this Python or OS has no SCHED_BATCH")
    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def lower_priority(
    *,
    nice: Callable[[int], int] = os.nice,
    set_scheduler: Callable[[], None] = set_sched_batch,
    set_io: Callable[[], None] = set_io_low,
    current_nice: Callable[[], int] = lambda: os.getpriority(os.PRIO_PROCESS, 0),
) -> PriorityReport:
    """Lower this process's CPU and I/O priority to the agent's; log what could not be done.
    A process already nicer than AGENT_NICE stays as it is."""
    problems = []
    done_nice = done_sched = done_io = False
    try:
        nice(max(0, AGENT_NICE - current_nice()))  # an increment
        done_nice = True
    except OSError as err:
        problems.append(f"cannot lower CPU priority (nice): {err}")
    try:
        set_scheduler()
        done_sched = True
    except OSError as err:
        problems.append(f"cannot switch to SCHED_BATCH: {err}")
    try:
        set_io()
        done_io = True
    except OSError as err:
        problems.append(f"cannot set the lowest best-effort I/O level (ioprio_set): {err}")
    for problem in problems:
        log.warning("%s; running at a higher priority than intended", problem)
    return PriorityReport(done_nice, done_sched, done_io, tuple(problems))


@contextlib.contextmanager
def normal_cpu_priority() -> Iterator[None]:
    """Run the block as an ordinary task (SCHED_OTHER, nice 0), then go back to what we were.

    Compaction runs in the context of the task that writes compact_memory, and gives up early
    when other tasks want the CPU: at the idle priority the agent once ran at (SCHED_IDLE,
    nice 19) it moved 6,821 pages of a
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
            log.warning("cannot go back to the agent's low priority: %s", err)
