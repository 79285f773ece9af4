"""`vmreclaim host run` over a real (paused) QEMU and a socket that never answers: `top` shows
the daemon's view while the daemon holds the monitor, a stale socket blocks neither `top` nor
a new daemon, and SIGTERM or SIGINT stop the daemon within 2 s with exit 0."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmreclaim.bench.polling_cost import paused_qemus
from vmreclaim.errors import MissingDependencyError
from vmreclaim.lab.qemu_command import find_qemu

from .daemon_process import DaemonProcess, host_daemon, vmreclaim, wait_until
from .silent_socket import silent_socket

MIB = 1 << 20


@pytest.fixture
def paused_qemu() -> Iterator[Path]:
    """One QEMU stopped before its first instruction, owned by `paused_qemus`."""
    try:
        find_qemu()
    except MissingDependencyError as err:
        pytest.skip(err.message)
    with paused_qemus(1) as (socket_path,):
        yield socket_path


@pytest.fixture
def hung(tmp_path: Path) -> Iterator[Path]:
    with silent_socket(tmp_path / "hung.qmp") as path:
        yield path


def write_config(directory: Path, *qmp: Path) -> Path:
    config = directory / "host.toml"
    sockets = ", ".join(f'"{path}"' for path in qmp)
    config.write_text(
        f'qmp = [{sockets}]\nsocket = "{directory / "run" / "host.sock"}"\n'
        '[metrics]\nport = 0\n[host]\nkeep_available = "1G"\n'
    )
    return config


@pytest.fixture
def daemon(paused_qemu: Path, hung: Path, tmp_path: Path) -> Iterator[DaemonProcess]:
    config = write_config(tmp_path, paused_qemu, hung)
    with host_daemon(config, tmp_path / "run" / "host.sock") as process:
        assert wait_until(lambda: process.view_has(str(paused_qemu)), 30), process.log_text()
        yield process


def test_top_shows_the_daemons_view_while_the_daemon_holds_the_monitor(
    daemon: DaemonProcess, paused_qemu: Path, hung: Path
) -> None:
    # The same command as without a daemon: the config names the VMs and the socket.
    done = vmreclaim("top", "--once", "--json", "--config", str(daemon.config))
    assert done.returncode == 4, done.stderr  # the hung socket did not answer the daemon
    snapshot = json.loads(done.stdout)
    assert snapshot["daemon"] == str(daemon.socket)
    (vm,) = snapshot["vms"]
    assert (vm["address"], vm["name"]) == (str(paused_qemu), "bench000")
    assert vm["pid"] > 0
    assert vm["balloon"]["ram_bytes"] == 64 * MIB
    assert vm["guest"]["stale"] is True  # a paused guest never reports
    (failure,) = snapshot["unreachable"]
    assert (failure["address"], failure["hung"]) == (str(hung), True)
    # The daemon still holds the monitor: asked directly, the VM is hung.
    direct = vmreclaim(
        "top", "--once", "--json", "--no-daemon", "--wait", "0", "--qmp", str(paused_qemu)
    )
    assert direct.returncode == 1
    assert "no answer within" in direct.stderr
    assert daemon.view_has(str(paused_qemu))


def test_top_names_one_vm_of_the_daemons(daemon: DaemonProcess, paused_qemu: Path) -> None:
    done = vmreclaim(
        "top", "--once", "--json", "--socket", str(daemon.socket), "--qmp", str(paused_qemu)
    )
    assert done.returncode == 0, done.stderr
    snapshot = json.loads(done.stdout)
    assert [vm["address"] for vm in snapshot["vms"]] == [str(paused_qemu)]
    assert snapshot["unreachable"] == []


def test_the_view_socket_is_its_owners_only(daemon: DaemonProcess) -> None:
    assert daemon.socket.stat().st_mode & 0o777 == 0o600
    assert daemon.socket.parent.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_daemon_within_2_s_with_a_hung_vm_watched(
    daemon: DaemonProcess, signum: int
) -> None:
    code, seconds = daemon.stop(signum)
    assert code == 0, daemon.log_text()
    assert seconds < 2.0, daemon.log_text()
    assert not daemon.socket.exists()
    assert "stopped after" in daemon.log_text()


def test_a_killed_daemons_socket_blocks_neither_top_nor_a_new_daemon(
    daemon: DaemonProcess, paused_qemu: Path, tmp_path: Path
) -> None:
    daemon.process.kill()
    daemon.process.wait()
    assert daemon.socket.exists()  # left behind
    named = vmreclaim("top", "--once", "--json", "--socket", str(daemon.socket))
    assert named.returncode == 1
    assert f"no daemon answers at {daemon.socket}" in named.stderr
    direct = vmreclaim("top", "--once", "--json", "--wait", "0", "--config", str(daemon.config))
    assert "left by a daemon that stopped" in direct.stderr
    assert "asking the VMs directly" in direct.stderr
    assert str(paused_qemu) in [vm["address"] for vm in json.loads(direct.stdout)["vms"]]
    with host_daemon(daemon.config, daemon.socket) as again:
        assert wait_until(lambda: again.view_has(str(paused_qemu)), 30), again.log_text()
        assert "replacing" in again.log_text()
        assert again.stop()[0] == 0


def test_a_second_daemon_on_the_same_socket_refuses_to_start(daemon: DaemonProcess) -> None:
    second = vmreclaim("host", "run", "--config", str(daemon.config), timeout=30)
    assert second.returncode == 1
    assert f"another vmreclaim daemon answers at {daemon.socket}" in second.stderr
    assert daemon.view_has(daemon.view()["vms"][0]["address"])
