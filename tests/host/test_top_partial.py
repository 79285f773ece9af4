"""`vmreclaim top --once --json` over a real (paused) QEMU and a socket that never answers:
the real VM complete, the hung one listed with its error, within two intervals, exit 4."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmreclaim.bench.polling_cost import paused_qemus
from vmreclaim.errors import MissingDependencyError
from vmreclaim.lab.qemu_command import find_qemu

from .silent_socket import silent_socket

MIB = 1 << 20
INTERVAL = 2.0


@pytest.fixture
def paused_qemu() -> Iterator[Path]:
    """One QEMU stopped before its first instruction (-S), 64 MiB, a virtio-balloon and a QMP
    socket: its monitor answers as a running VM's does, at almost no CPU. `paused_qemus` owns
    it and kills its process group when the test ends, on errors too."""
    try:
        find_qemu()
    except MissingDependencyError as err:
        pytest.skip(err.message)
    with paused_qemus(1) as (socket_path,):
        yield socket_path


def test_one_hung_vm_leaves_the_others_complete(paused_qemu: Path, tmp_path: Path) -> None:
    hung = tmp_path / "hung.qmp"
    top = [
        "top", "--once", "--json", "--interval", str(INTERVAL), "--no-daemon",
        "--wait", "0",  # no waiting for guest statistics: a paused guest never sends any
        "--qmp", str(paused_qemu), "--qmp", str(hung),
    ]  # fmt: skip
    with silent_socket(hung):
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "vmreclaim", *top],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")},
        )
        elapsed = time.monotonic() - started
    assert done.returncode == 4, done.stderr  # some VMs failed
    assert elapsed < 2 * INTERVAL  # Python's start-up included
    snapshot = json.loads(done.stdout)
    (vm,) = snapshot["vms"]
    assert vm["address"] == str(paused_qemu)
    assert vm["name"] == "bench000"
    assert vm["pid"] > 0
    assert vm["rss_bytes"] > 0
    assert vm["balloon"]["ram_bytes"] == 64 * MIB
    assert vm["free_page_reporting"] is True
    (failure,) = snapshot["unreachable"]
    assert failure["address"] == str(hung)
    assert failure["hung"] is True
    # The call bound is half the interval.
    assert "no answer within 1.0 s to the QMP greeting" in failure["error"]
    assert "1 of 2 VMs did not answer" in done.stderr
    assert "Greeting" not in done.stderr  # qemu.qmp's own log lines stay off the terminal
    assert "CancelledError" not in done.stderr
