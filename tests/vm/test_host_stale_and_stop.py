"""`vmreclaim host run` over one real guest (and a socket that never answers): statistics of a
paused guest turn stale and stop the shrinking, `top` beside the daemon says so, and SIGTERM
stops the daemon within 2 s with every balloon it squeezed given back (or kept, when asked)."""

from __future__ import annotations

import contextlib
import json
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vmreclaim.lab import MachineConfig, VirtualMachine

from ..host.daemon_process import DaemonProcess, free_port, host_daemon, vmreclaim, wait_until
from ..host.silent_socket import silent_socket

MIB = 1 << 20
RAM = 768 * MIB
MINIMUM = 640 * MIB
"""The daemon's floor in the stop tests: reached in a few 5 % steps, then held."""


@pytest.fixture(scope="module")
def vm(guest_image) -> Iterator[VirtualMachine]:
    with VirtualMachine(MachineConfig(memory=RAM, cpus=1), guest_image) as machine:
        yield machine


@pytest.fixture
def hung(tmp_path: Path) -> Iterator[Path]:
    with silent_socket(tmp_path / "hung.qmp") as path:
        yield path


@pytest.fixture(autouse=True)
def full_balloon(vm: VirtualMachine) -> Iterator[None]:
    """Each test starts and ends with the guest running at its full RAM."""
    yield
    vm.qmp.execute("cont")
    vm.qmp.execute("balloon", {"value": RAM})


@contextlib.contextmanager
def start_daemon(
    vm: VirtualMachine, hung: Path, directory: Path, minimum: int, *args: str
) -> Iterator[tuple[DaemonProcess, int]]:
    """The daemon over the guest and the hung socket, once its view lists the guest; and the
    port of its metrics."""
    socket = directory / "run" / "host.sock"
    config = directory / "host.toml"
    port = free_port()
    # A threshold no host meets: the policy is short of memory from the first cycle.
    config.write_text(
        f'qmp = ["{vm.qmp_socket}", "{hung}"]\nsocket = "{socket}"\n'
        f"[metrics]\nport = {port}\n"
        '[host]\nkeep_available = "1T"\nmax_memory_pressure = 100.0\n'
        '[balloon]\nguest_available_margin = "128M"\nmajor_faults_per_cycle = 100000\n'
        f'[vm_defaults]\nminimum = "{minimum // MIB}M"\n'
    )
    with host_daemon(config, socket, *args) as daemon:
        assert wait_until(lambda: daemon.view_has(str(vm.qmp_socket)), 30), daemon.log_text()
        yield daemon, port


def entry(daemon: DaemonProcess, vm: VirtualMachine) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        e for e in daemon.view()["vms"] if e["address"] == str(vm.qmp_socket)
    ]
    assert len(found) == 1, found
    return found[0]


def actual(vm: VirtualMachine) -> int:
    return int(vm.qmp.execute("query-balloon")["actual"])


def squeezed_to_minimum(daemon: DaemonProcess, vm: VirtualMachine) -> bool:
    balloon = entry(daemon, vm)["balloon"]
    return balloon["target_bytes"] == MINIMUM and actual(vm) <= MINIMUM + 16 * MIB


def test_a_paused_guest_turns_stale_and_is_no_longer_shrunk(
    vm: VirtualMachine, hung: Path, tmp_path: Path
) -> None:
    with start_daemon(vm, hung, tmp_path, 256 * MIB) as (daemon, port):
        assert wait_until(lambda: entry(daemon, vm)["guest"]["stale"] is False, 30)
        # Shrinking, a step a cycle, far from its minimum.
        assert wait_until(lambda: (entry(daemon, vm)["balloon"]["target_bytes"] or RAM) < RAM, 30)
        vm.qmp.execute("stop")
        assert wait_until(lambda: entry(daemon, vm)["guest"]["stale"], 15), daemon.log_text()
        stale = entry(daemon, vm)
        target = stale["balloon"]["target_bytes"]
        assert target > 256 * MIB + 200 * MIB  # room left: only staleness stops it
        taken = daemon.view()["time"]
        assert wait_until(lambda: daemon.view()["time"] >= taken + 4, 15)  # four more cycles
        later = entry(daemon, vm)
        assert later["balloon"]["target_bytes"] == target
        assert later["guest"]["stale"] is True
        assert later["guest"]["age_s"] > 3.0
        # top beside the daemon, table and JSON, and the metrics say stale, with the age.
        shown = vmreclaim("top", "--once", "--json", "--socket", str(daemon.socket))
        (vm_json,) = [e for e in json.loads(shown.stdout)["vms"] if e["pid"] == vm.pid]
        assert vm_json["guest"]["stale"] is True
        table = vmreclaim("top", "--once", "--socket", str(daemon.socket))
        assert "stale" in table.stdout
        metrics = vmreclaim_metrics(port)
        assert metrics[("vmreclaim_vm_guest_stats_stale", str(vm.qmp_socket))] == 1.0
        assert metrics[("vmreclaim_vm_guest_stats_age_seconds", str(vm.qmp_socket))] > 3.0
        # The guest runs again: fresh figures, and the law resumes.
        vm.qmp.execute("cont")
        assert wait_until(lambda: entry(daemon, vm)["guest"]["stale"] is False, 15)


def vmreclaim_metrics(port: int) -> dict[tuple[str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (sample.name, sample.labels.get("address", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_sigterm_gives_every_squeezed_balloon_back_within_2_s(
    vm: VirtualMachine, hung: Path, tmp_path: Path
) -> None:
    with start_daemon(vm, hung, tmp_path, MINIMUM) as (daemon, _):
        assert wait_until(lambda: squeezed_to_minimum(daemon, vm), 60), daemon.log_text()
        code, seconds = daemon.stop(signal.SIGTERM)
        assert code == 0, daemon.log_text()
        assert seconds < 2.0, daemon.log_text()
        assert "1 of 1 balloon(s) given back" in daemon.log_text()
        # The guest gives the pages back as fast as it deflates; the target was set at stop.
        assert wait_until(lambda: actual(vm) == RAM, 15), actual(vm)


def test_keep_balloons_leaves_them_squeezed(vm: VirtualMachine, hung: Path, tmp_path: Path) -> None:
    with start_daemon(vm, hung, tmp_path, MINIMUM, "--keep-balloons") as (daemon, _):
        assert wait_until(lambda: squeezed_to_minimum(daemon, vm), 60), daemon.log_text()
        code, seconds = daemon.stop(signal.SIGTERM)
        assert (code, seconds < 2.0) == (0, True), daemon.log_text()
        assert "left as they are (keep_balloons)" in daemon.log_text()
        assert not wait_until(lambda: actual(vm) > MINIMUM + 16 * MIB, 5)
