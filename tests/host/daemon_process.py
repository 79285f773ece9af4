"""`vmreclaim host run` as a child process the test owns: killed and reaped when the block
ends, on errors too."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmreclaim.errors import HostError
from vmreclaim.host.view import read_view

SRC = str(Path(__file__).parents[2] / "src")


def vmreclaim(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the command from this checkout."""
    return subprocess.run(
        [sys.executable, "-m", "vmreclaim", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        # COLUMNS: rich draws tables for an 80-column terminal when stdout is a pipe.
        env={**os.environ, "PYTHONPATH": SRC, "COLUMNS": "250"},
    )


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(check: Callable[[], bool], seconds: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


@dataclass
class DaemonProcess:
    process: subprocess.Popen[bytes]
    config: Path
    socket: Path
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def view(self) -> dict[str, Any]:
        return read_view(self.socket, 2.0)

    def view_has(self, address: str) -> bool:
        """The daemon's view lists the VM at `address` (and the daemon is alive)."""
        assert self.process.poll() is None, self.log_text()
        try:
            return any(vm["address"] == address for vm in self.view()["vms"])
        except HostError:
            return False

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[int, float]:
        """Send `signum`; the exit status and the seconds it took to exit."""
        started = time.monotonic()
        self.process.send_signal(signum)
        code = self.process.wait(timeout)
        return code, time.monotonic() - started


@contextlib.contextmanager
def host_daemon(config: Path, socket: Path, *args: str) -> Iterator[DaemonProcess]:
    log = config.with_suffix(".log")
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vmreclaim",
                "-v",
                "host",
                "run",
                "--config",
                str(config),
                *args,
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": SRC},
        )
    try:
        yield DaemonProcess(process, config, socket, log)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
