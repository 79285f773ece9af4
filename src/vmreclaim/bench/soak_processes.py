"""What the soak owns: paused QEMUs it can crash, restart and freeze, a `vmreclaim host run`
daemon in a child process, and the host's memory figures that daemon reads.

Every process is started inside a context manager and killed (by process group, SIGKILL, which
a stopped process obeys too) and reaped when the block exits, on errors and Ctrl-C included;
each also gets a parent-death signal, so none outlives a soak that is itself SIGKILLed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import vmreclaim
from vmreclaim.bench.polling_cost import PROCESS_NAME
from vmreclaim.errors import VmreclaimError
from vmreclaim.lab.qemu_command import find_qemu
from vmreclaim.qemu.process import set_parent_death_signal

SRC = Path(vmreclaim.__file__).resolve().parents[1]
"""The tree this module runs from: the daemon runs the same code."""


def _spawn(
    argv: list[str], output: int | IO[bytes], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
        preexec_fn=set_parent_death_signal,  # noqa: PLW1509 - prctl must run in the child
    )


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class PausedQemus:
    """`count` QEMUs stopped before their first instruction (-S), 64 MiB with a balloon, each
    with its QMP socket at a fixed path, named like polling_cost's (`pgrep -f
    vmreclaim-bench` finds them). Made by `paused_qemus`, which owns them."""

    def __init__(self, directory: Path, count: int, memory_mib: int) -> None:
        self.sockets = [directory / f"vm{index:03d}.qmp" for index in range(count)]
        self._memory_mib = memory_mib
        self._qemu = str(find_qemu())
        self._processes: list[subprocess.Popen[bytes] | None] = [None] * count

    def pid(self, index: int) -> int | None:
        process = self._processes[index]
        return process.pid if process is not None else None

    def start(self, index: int) -> None:
        """Start the VM at `index`, on its socket path (QEMU replaces a socket left there)."""
        assert self._processes[index] is None, f"vm{index:03d} runs already"
        balloon = "virtio-balloon-pci,id=balloon0,free-page-reporting=on"
        argv = [
            self._qemu,
            "-S",
            "-name", f"soak{index:03d},process={PROCESS_NAME}",
            "-m", str(self._memory_mib),
            "-nodefaults", "-no-user-config", "-display", "none",
            "-device", balloon,
            "-qmp", f"unix:{self.sockets[index]},server=on,wait=off",
        ]  # fmt: skip
        self._processes[index] = _spawn(argv, subprocess.DEVNULL)

    def crash(self, index: int) -> None:
        """kill -9, as a host OOM kill or a QEMU abort would: the socket file stays behind."""
        process, self._processes[index] = self._processes[index], None
        if process is not None:
            _kill(process)

    def freeze(self, index: int) -> None:
        self._signal(index, signal.SIGSTOP)

    def thaw(self, index: int) -> None:
        self._signal(index, signal.SIGCONT)

    def _signal(self, index: int, signum: int) -> None:
        process = self._processes[index]
        if process is not None:
            os.kill(process.pid, signum)

    def wait_for_sockets(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not all(path.exists() for path in self.sockets):
            dead = [p.pid for p in self._processes if p is not None and p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise VmreclaimError(f"the soak's QEMUs did not start (exited: {dead})")
            time.sleep(0.05)

    def kill_all(self) -> None:
        for index in range(len(self._processes)):
            self.crash(index)


@contextlib.contextmanager
def paused_qemus(directory: Path, count: int, memory_mib: int = 64) -> Iterator[PausedQemus]:
    directory.mkdir(parents=True, exist_ok=True)
    qemus = PausedQemus(directory, count, memory_mib)
    try:
        for index in range(count):
            qemus.start(index)
        qemus.wait_for_sockets(30)
        yield qemus
    finally:
        qemus.kill_all()


@dataclass
class DaemonProcess:
    process: subprocess.Popen[bytes]
    log: Path

    def rss_bytes(self) -> int:
        """VmRSS from /proc/PID/status."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        if match is None:
            raise VmreclaimError(f"no VmRSS in /proc/{self.process.pid}/status")
        return int(match.group(1)) * 1024

    def stop(self, seconds: float = 10.0) -> tuple[int | None, float]:
        """SIGTERM; the exit status (None when it did not exit in `seconds`) and the time."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - started


@contextlib.contextmanager
def host_daemon(config: Path, log: Path) -> Iterator[DaemonProcess]:
    """`vmreclaim -v host run --config CONFIG` from this tree, its output in `log`."""
    argv = [sys.executable, "-m", "vmreclaim", "-v", "host", "run", "--config", str(config)]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    with log.open("wb") as output:
        process = _spawn(argv, output, env)
    try:
        yield DaemonProcess(process, log)
    finally:
        _kill(process)


@dataclass(frozen=True)
class HostLoad:
    """One state of the host's memory, as /proc/meminfo and /proc/pressure/memory say it."""

    name: str
    available_bytes: int
    psi_some_avg10: float


class FakeHostProc:
    """The host's meminfo and pressure/memory under a directory the daemon reads as its
    `[host] proc`: the real /proc/meminfo text with MemTotal and MemAvailable set, and a PSI
    file in the kernel's format. Each file is replaced whole (rename), so the daemon never
    reads half of one."""

    def __init__(self, directory: Path, total_bytes: int) -> None:
        self.directory = directory
        self.total_bytes = total_bytes
        (directory / "pressure").mkdir(parents=True, exist_ok=True)
        self._meminfo = Path("/proc/meminfo").read_text()

    def set(self, load: HostLoad) -> None:
        meminfo = self._meminfo
        for key, value in (("MemTotal", self.total_bytes), ("MemAvailable", load.available_bytes)):
            meminfo = re.sub(
                rf"^{key}:\s+\d+ kB$",
                f"{key}:{value // 1024:>16} kB",
                meminfo,
                flags=re.MULTILINE,
            )
        some = load.psi_some_avg10
        pressure = (
            f"some avg10={some:.2f} avg60={some / 2:.2f} avg300={some / 4:.2f} total=0\n"
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
        )
        self._replace(self.directory / "meminfo", meminfo)
        self._replace(self.directory / "pressure" / "memory", pressure)

    @staticmethod
    def _replace(path: Path, text: str) -> None:
        staged = path.with_name(f".{path.name}.new")
        staged.write_text(text)
        os.replace(staged, path)
