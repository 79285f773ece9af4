"""The guest agent's unit under a real systemd as PID 1: a lab guest booted with the host's
systemd (MachineConfig.init = "systemd"), the unit installed as its header says, enabled and
started. Sandboxed as it is, the agent must still report to the host on its virtio-serial port,
read and answer the host's requests there, reclaim (memory.reclaim under ProtectSystem=strict),
watch the scratch disk for drop-behind, and stop cleanly on `systemctl stop`."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.vm.agent_port import agent_messages
from vmreclaim.agent_protocol import AgentReport, ReleaseAnswer, ReleaseRequest, encode_request
from vmreclaim.lab import MachineConfig, VirtualMachine

MIB = 1 << 20
UNIT = "vmreclaim-guest"
INSTALL = (
    "cp /opt/vmreclaim/lib/vmreclaim/guest/vmreclaim-guest.service /etc/systemd/system/ && "
    f"systemctl daemon-reload && systemctl enable --now {UNIT}"
)


@pytest.fixture(scope="module")
def vm(guest_image) -> Iterator[VirtualMachine]:
    config = MachineConfig(
        memory=768 * MIB, cpus=1, init="systemd", agent_port=True, scratch_disk=384 * MIB
    )
    with VirtualMachine(config, guest_image) as machine:
        yield machine


def test_the_guest_runs_systemd_as_pid_1(vm: VirtualMachine) -> None:
    assert vm.check("cat /proc/1/comm").text.strip() == "systemd"
    state = vm.run("systemctl is-system-running --wait", timeout=300).text.strip()
    # "degraded" names units that failed; the lab masks those it cannot run.
    failed = vm.run("systemctl --failed --no-legend --plain").text
    assert state == "running", failed


def test_the_agents_unit_starts_reports_answers_reclaims_and_stops(vm: VirtualMachine) -> None:
    vm.check(f"python3 -m vmreclaim.workloads write-files /mnt/scratch/cold {256 * MIB}", 600)
    with socket.socket(socket.AF_UNIX) as host:
        host.connect(str(vm.agent_socket))
        vm.check(INSTALL, timeout=120)
        report = next((m for m in agent_messages(host, 90) if isinstance(m, AgentReport)), None)
        journal = vm.run(f"journalctl -u {UNIT} --no-pager").text
        assert report is not None, journal
        assert report.policy == "adaptive"
        host.sendall(encode_request(ReleaseRequest(7, 64 * MIB, 20.0)))
        answer = next(
            (m for m in agent_messages(host, 60) if isinstance(m, ReleaseAnswer) and m.id == 7),
            None,
        )
    journal = vm.run(f"journalctl -u {UNIT} --no-pager").text
    assert answer is not None, journal
    assert (answer.refused, answer.released_bytes > 0) == ("", True), journal
    assert "host asked to release 64.0 MiB" in journal, journal
    # Every mount is read-only in the unit's view (ProtectSystem=strict); the scratch disk's
    # filesystem is not, and drop-behind watches it.
    assert "drop-behind is off" not in journal, journal
    assert "drop-behind: watching" in journal, journal
    shown = vm.check(f"systemctl show {UNIT} -p ActiveState -p NRestarts -p User").text
    assert "ActiveState=active" in shown, shown
    assert "NRestarts=0" in shown, shown
    vm.check(f"systemctl stop {UNIT}", timeout=60)
    stopped = vm.check(f"systemctl show {UNIT} -p ActiveState -p ExecMainStatus").text
    assert "ActiveState=inactive" in stopped, stopped
    assert "ExecMainStatus=0" in stopped, stopped
