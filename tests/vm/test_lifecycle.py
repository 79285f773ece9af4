"""QEMU is gone when its owner is: after an exception, Ctrl-C, SIGTERM, even SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

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


def _default_sigint() -> None:
    # A terminal's Ctrl-C reaches a process whose SIGINT is not ignored; a background job of a
    # non-interactive shell (how CI may start us) ignores it, and children inherit that.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def _lab_run(*extra: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`vmreclaim lab run -- sleep 300` in a child; yields it and its QEMU's PID once the guest
    runs the command. The child is killed at the end whatever the test did (its QEMU follows
    it by its parent-death signal), so a failing test leaves nothing running."""
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
        preexec_fn=_default_sigint,  # noqa: PLW1509 - a signal disposition, set in the child
    )
    try:
        assert _wait(lambda: lab_qemu_pids() - before, 30), "QEMU did not start"
        (qemu,) = lab_qemu_pids() - before
        time.sleep(15)  # let the guest boot and start the command
        yield child, qemu
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)
        _wait(lambda: not (lab_qemu_pids() - before), 10)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_stop_the_guest(sig: signal.Signals, code: int) -> None:
    with _lab_run() as (child, qemu):
        child.send_signal(sig)
        assert child.wait(timeout=30) == code
        assert not pid_alive(qemu)


def test_qemu_dies_with_a_killed_owner() -> None:
    with _lab_run() as (child, qemu):
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        assert _wait(lambda: not pid_alive(qemu), 10), "QEMU outlived its SIGKILLed owner"
