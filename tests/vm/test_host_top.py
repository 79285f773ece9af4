"""`vmreclaim top --once --json` against two real guests, one with free page reporting."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vmreclaim.lab import MachineConfig, VirtualMachine
from vmreclaim.qemu.footprint import parse_status_rss

MIB = 1 << 20


@pytest.fixture(scope="module")
def vms(guest_image) -> Iterator[tuple[VirtualMachine, VirtualMachine]]:
    with (
        VirtualMachine(MachineConfig(memory=512 * MIB, cpus=1), guest_image) as reporting,
        VirtualMachine(
            MachineConfig(memory=768 * MIB, cpus=1, free_page_reporting=False), guest_image
        ) as silent,
    ):
        yield reporting, silent


@pytest.fixture(scope="module")
def snapshot(vms: tuple[VirtualMachine, VirtualMachine]) -> dict[str, dict[str, Any]]:
    argv = [sys.executable, "-m", "vmreclaim", "top", "--once", "--json", "--wait", "10"]
    argv += ["--no-daemon"]  # this guest's monitor, not a daemon's view of it
    for vm in vms:
        argv += ["--qmp", str(vm.qmp_socket)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rss = {vm.pid: parse_status_rss(Path(f"/proc/{vm.pid}/status").read_text()) for vm in vms}
    entries = {entry["address"]: entry for entry in json.loads(done.stdout)["vms"]}
    for entry in entries.values():
        entry["vmrss_after"] = rss[entry["pid"]]
    return entries


def test_each_vm_is_found_by_its_socket_with_its_qemu_pid(vms, snapshot) -> None:
    assert {entry["pid"] for entry in snapshot.values()} == {vm.pid for vm in vms}


def test_footprint_is_within_5_percent_of_the_qemu_vmrss(vms, snapshot) -> None:
    for entry in snapshot.values():
        assert entry["rss_bytes"] == pytest.approx(entry["vmrss_after"], rel=0.05)


def test_balloon_and_reporting_state_are_reported(vms, snapshot) -> None:
    reporting, silent = vms
    on = snapshot[str(reporting.qmp_socket)]
    off = snapshot[str(silent.qmp_socket)]
    assert (on["free_page_reporting"], off["free_page_reporting"]) == (True, False)
    assert on["balloon"]["actual_bytes"] == on["balloon"]["ram_bytes"] == 512 * MIB
    assert off["balloon"]["actual_bytes"] == off["balloon"]["ram_bytes"] == 768 * MIB


def test_guest_statistics_arrive_through_the_balloon(snapshot) -> None:
    for entry in snapshot.values():
        guest = entry["guest"]
        assert guest is not None
        assert 0 < guest["available_bytes"] <= entry["balloon"]["ram_bytes"]
        assert guest["used_bytes"] is not None
