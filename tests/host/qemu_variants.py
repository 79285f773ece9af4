"""Paused QEMUs started with the command line a test chooses (its monitor given as -qmp, as a
chardev with -mon, ...), owned like `paused_qemus`'s: killed by process group when the block
exits, on errors too, and by a parent-death signal if the test process dies. A paused QEMU
runs no guest code and costs almost no CPU."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from vmreclaim.lab.qemu_command import find_qemu
from vmreclaim.qemu.process import set_parent_death_signal

BALLOON = ("-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=on")


@contextlib.contextmanager
def paused_qemu(
    name: str, monitor: list[str], socket: Path, *, balloon: bool = True, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """QEMU stopped before its first instruction, 64 MiB, with `monitor`'s options; yields
    once `socket` exists."""
    argv = [
        str(find_qemu()), "-S", "-name", f"guest={name}", "-m", "64",
        "-nodefaults", "-no-user-config", "-display", "none",
        *(BALLOON if balloon else ()), *monitor,
    ]  # fmt: skip
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=set_parent_death_signal,  # noqa: PLW1509 - prctl must run in the child
    )
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            if process.poll() is not None:
                assert process.stderr is not None
                raise AssertionError(f"QEMU {name} exited: {process.stderr.read().decode()}")
            assert time.monotonic() < deadline, f"QEMU {name} made no socket {socket}"
            time.sleep(0.05)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if process.stderr is not None:
            process.stderr.close()
