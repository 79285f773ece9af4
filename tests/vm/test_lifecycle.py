"""QEMU is gone when its owner is: after an exception, Ctrl-C, SIGTERM, even SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import lab_qemu_pids, pid_alive
from vmreclaim.lab import MachineConfig, VirtualMachine

MIB = 1 << 20


def _wait(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_qemu_is_gone_after_an_exception_inside_the_block(guest_image) -> None:
    pid = None
    with (  # noqa: PT012 - the exception is raised inside the machine's block on purpose
        pytest.raises(RuntimeError, match="on purpose"),
        VirtualMachine(MachineConfig(memory=512 * MIB), guest_image) as vm,
    ):
        pid = vm.pid
        raise RuntimeError("on purpose")
    assert pid is not None
    assert not pid_alive(pid)


def _start_lab_run(*extra: str) -> tuple[subprocess.Popen[bytes], int]:
    """`vmreclaim lab run -- sleep 300` in a child; returns it and its QEMU's PID once the
    guest runs the command."""
    before = lab_qemu_pids()
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vmreclaim",
            "lab",
            "run",
            "--memory",
            "512M",
            *extra,
            "--",
            "sleep",
            "300",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert _wait(lambda: lab_qemu_pids() - before, 30), "QEMU did not start"
    (qemu,) = lab_qemu_pids() - before
    time.sleep(15)  # let the guest boot and start the command
    return child, qemu


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_stop_the_guest(sig: signal.Signals, code: int) -> None:
    child, qemu = _start_lab_run()
    child.send_signal(sig)
    assert child.wait(timeout=30) == code
    assert not pid_alive(qemu)


def test_qemu_dies_with_a_killed_owner() -> None:
    child, qemu = _start_lab_run()
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    assert _wait(lambda: not pid_alive(qemu), 10), "QEMU outlived its SIGKILLed owner"
