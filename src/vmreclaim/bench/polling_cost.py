"""The host side's own cost: poll N paused QEMUs once a second and measure our CPU time.

    python -m vmreclaim.bench.polling_cost --vms 50 --seconds 30

Each QEMU is stopped at start (-S), 64 MiB, with a virtio-balloon and one QMP socket: the
monitor answers exactly as a running VM's does, so the polling cost is the real one. Guest
statistics stay unknown, and the backend reads them once per `--stats-interval` as it does for
a guest that reports (qemu.QemuVm._stats_due), so the count of QMP round trips is a live
fleet's. Every QEMU is owned by `paused_qemus`: killed by process group when the block exits,
on errors, Ctrl-C and SIGTERM, and by a parent-death signal even if this process is SIGKILLed.
The QEMUs start at nice 19, 16 at a time, so that starting hundreds disturbs the rest of the
host less.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vmreclaim.bench.standalone import run_standalone
from vmreclaim.errors import VmreclaimError
from vmreclaim.host.backends.qemu import QemuVm
from vmreclaim.host.config import STATS_PERIOD_S
from vmreclaim.host.fleet import Fleet
from vmreclaim.host.hostmem import read_host_memory
from vmreclaim.lab.qemu_command import find_qemu
from vmreclaim.qemu.process import set_parent_death_signal

log = logging.getLogger(__name__)

PROCESS_NAME = "vmreclaim-bench"
_QEMU_NICENESS = 19
_START_BATCH = 16
"""QEMUs started before waiting for their sockets: 500 starting at once queued 50 runnable
processes on this 2-core host (load average 56), and even at nice 19 so many starve the
host's other work."""
_SPARE_FILES = 64
"""File descriptors beyond one QMP socket per VM: stdio, /proc reads, the event loop."""


def _start_niced() -> None:
    """In the child before exec: die with the parent, and yield the CPU to the host's work."""
    set_parent_death_signal()
    os.nice(_QEMU_NICENESS)


@contextlib.contextmanager
def paused_qemus(
    count: int, *, memory_mib: int = 64, reporting: bool = True
) -> Iterator[list[Path]]:
    """Start `count` paused QEMUs; yields their QMP socket paths once all exist."""
    directory = Path(tempfile.mkdtemp(prefix="vmreclaim-bench-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        sockets = []
        for index in range(count):
            socket_path = directory / f"vm{index:03d}.qmp"
            balloon = (
                f"virtio-balloon-pci,id=balloon0,free-page-reporting={'on' if reporting else 'off'}"
            )
            argv = [
                str(find_qemu()),
                "-S",
                "-name", f"bench{index:03d},process={PROCESS_NAME}",
                "-m", str(memory_mib),
                "-nodefaults", "-no-user-config", "-display", "none",
                "-device", balloon,
                "-qmp", f"unix:{socket_path},server=on,wait=off",
            ]  # fmt: skip
            processes.append(
                subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=_start_niced,  # noqa: PLW1509 - prctl must run in the child
                )
            )
            sockets.append(socket_path)
            if len(processes) % _START_BATCH == 0 or len(processes) == count:
                _wait_for_sockets(sockets, processes)
        yield sockets
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for process in processes:
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def _wait_for_sockets(sockets: list[Path], processes: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 30
    while not all(path.exists() for path in sockets):
        dead = [p.pid for p in processes if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise VmreclaimError(f"benchmark QEMUs did not start (exited: {dead})")
        time.sleep(0.05)


def ensure_file_limit(vms: int) -> None:
    """Raise the soft limit of open files to what `vms` QMP sockets need, up to the hard limit
    (the soft limit is often 1024: a little over 950 VMs)."""
    needed = vms + _SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise VmreclaimError(
            f"{vms} VMs need {needed} open files; the hard limit is {hard}",
            hint="raise it (ulimit -Hn as root, or LimitNOFILE= in a systemd unit), or poll "
            "fewer VMs",
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    print(
        f"bench: raised the soft limit of open files from {soft} to {needed} "
        f"(one QMP socket per VM)",
        file=sys.stderr,
    )


@dataclass(frozen=True)
class BenchResult:
    vms: int
    polls: int
    seconds: float
    cpu_seconds: float

    @property
    def cpu_percent(self) -> float:
        """Percent of one CPU, user + system, all our threads."""
        return 100.0 * self.cpu_seconds / self.seconds

    @property
    def us_per_vm_poll(self) -> float:
        """CPU microseconds per VM per poll."""
        return 1e6 * self.cpu_seconds / max(1, self.polls * self.vms)


async def _connect_every_vm(fleet: Fleet, count: int, within: float) -> None:
    """Poll until every VM answers: a QMP socket exists as soon as QEMU binds it and refuses
    connections until QEMU listens, so a connect may fail once and is retried (the fleet backs
    off 1 s, 2 s, ...)."""
    await fleet.connect_all()
    deadline = time.monotonic() + within
    while True:
        poll = await fleet.poll()
        if len(poll.vms) == count:
            return
        if time.monotonic() > deadline:
            why = poll.unreachable[0].error if poll.unreachable else "no error"
            raise VmreclaimError(f"only {len(poll.vms)} of {count} VMs answered ({why})")
        await asyncio.sleep(0.5)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(
    sockets: list[Path], seconds: float, interval: float = 1.0, stats_interval: int = STATS_PERIOD_S
) -> BenchResult:
    """Connect to every socket, then poll once per interval (plus the host's /proc, as the
    daemon does) for `seconds`, counting only the polling."""

    def backend(address: str) -> QemuVm:
        return QemuVm(address, stats_interval=stats_interval)

    fleet = Fleet([str(path) for path in sockets], backend)
    try:
        await _connect_every_vm(fleet, len(sockets), within=60.0)
        polls = 0
        start_wall, start_cpu = time.monotonic(), _cpu_seconds()
        next_poll = start_wall
        while time.monotonic() - start_wall < seconds:
            poll = await fleet.poll()
            read_host_memory()
            polls += 1
            if len(poll.vms) != len(sockets):
                raise VmreclaimError(f"{len(sockets) - len(poll.vms)} VMs stopped answering")
            next_poll += interval
            await asyncio.sleep(max(0.0, next_poll - time.monotonic()))
        wall = time.monotonic() - start_wall
        return BenchResult(len(sockets), polls, wall, _cpu_seconds() - start_cpu)
    finally:
        await fleet.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--vms", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument(
        "--stats-interval",
        type=int,
        default=STATS_PERIOD_S,
        help=f"QEMU's guest-stats-polling-interval in s (the host daemon's: {STATS_PERIOD_S})",
    )
    args = parser.parse_args(argv)

    def work(scratch: Path) -> BenchResult:
        ensure_file_limit(args.vms)
        with paused_qemus(args.vms) as sockets:
            return asyncio.run(measure(sockets, args.seconds, args.interval, args.stats_interval))

    result = run_standalone("bench", work, level=logging.WARNING)
    print(
        f"polled {result.vms} VMs {result.polls} times in {result.seconds:.1f} s: "
        f"{result.cpu_seconds:.2f} CPU s = {result.cpu_percent:.2f} % of one CPU, "
        f"{result.us_per_vm_poll:.0f} us per VM-poll"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
