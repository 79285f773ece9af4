"""A booted lab guest: its command channel, what it can see of the host, its footprint."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from vmreclaim.errors import GuestCommandTimeout
from vmreclaim.lab import MachineConfig, VirtualMachine

MIB = 1 << 20


@pytest.fixture(scope="module")
def vm(guest_image) -> Iterator[VirtualMachine]:
    with VirtualMachine(MachineConfig(memory=1024 * MIB), guest_image) as machine:
        yield machine


def test_exit_code_stdout_and_stderr_come_back_apart(vm: VirtualMachine) -> None:
    result = vm.run("echo to-stdout; echo to-stderr >&2; exit 7")
    assert (result.exit_code, result.stdout, result.stderr) == (7, b"to-stdout\n", b"to-stderr\n")


def test_large_output_arrives_whole(vm: VirtualMachine) -> None:
    result = vm.run("seq 1 400000")
    expected = "".join(f"{n}\n" for n in range(1, 400001)).encode()
    assert result.ok
    assert result.stdout == expected


def test_a_command_past_its_timeout_is_killed_and_the_guest_stays_usable(
    vm: VirtualMachine,
) -> None:
    with pytest.raises(GuestCommandTimeout):
        vm.run("sleep 60", timeout=2)
    assert vm.run("echo still-here").stdout == b"still-here\n"


def test_the_hosts_python_runs_this_checkouts_code(vm: VirtualMachine) -> None:
    result = vm.run(
        "python3 -c 'import sys, vmreclaim; print(sys.version_info[0], vmreclaim.__version__)'"
    )
    assert result.ok, result.stderr
    import vmreclaim

    assert result.text.split() == ["3", vmreclaim.__version__]


def test_the_guest_loads_the_agents_modules_compiled_not_from_source(vm: VirtualMachine) -> None:
    # python3 -v says "code object from '.../x.pyc'" for a module it loads compiled and
    # "code object from .../x.py" for one it compiles: the guest cannot keep what it compiles.
    result = vm.run("python3 -v -c 'import vmreclaim.guest.cli' 2>&1 | grep 'code object from'")
    assert result.ok, result.text
    loaded = [line for line in result.text.splitlines() if "/vmreclaim/" in line]
    assert len(loaded) >= 10, result.text
    compiled_here = [line for line in loaded if not line.rstrip("'").endswith(".pyc")]
    assert compiled_here == []


def test_the_guest_cannot_see_the_hosts_private_files(vm: VirtualMachine) -> None:
    assert not vm.run("cat /etc/shadow").ok
    assert vm.run("ls -A /root").stdout == b""
    assert not vm.run("ls /home").ok
    assert vm.run("ls /usr/bin/python3").ok


def test_the_shares_are_read_only(vm: VirtualMachine) -> None:
    assert not vm.run("touch /usr/vmreclaim-was-here").ok
    assert not vm.run("touch /opt/vmreclaim/lib/vmreclaim/was-here").ok


def test_free_page_reporting_is_negotiated(vm: VirtualMachine) -> None:
    # Bit 5 of the balloon's negotiated features (device id 0x0005) is VIRTIO_BALLOON_F_REPORTING.
    script = (
        "for d in /sys/bus/virtio/devices/*; do "
        '[ "$(cat $d/device)" = 0x0005 ] && cut -c6 $d/features; done'
    )
    assert vm.run(script).stdout == b"1\n"


def test_footprint_sees_the_guest_ram_inside_the_process(vm: VirtualMachine) -> None:
    sample = vm.footprint()
    assert sample.guest_ram_bytes is not None
    assert 0 < sample.guest_ram_bytes < sample.rss_bytes
    assert sample.guest_ram_bytes <= 1024 * MIB


def test_qmp_answers_for_the_balloon(vm: VirtualMachine) -> None:
    assert vm.qmp.execute("query-balloon") == {"actual": 1024 * MIB}


def test_the_accelerator_used_is_said(vm: VirtualMachine) -> None:
    assert vm.accel in ("kvm", "tcg")
    assert vm.boot_seconds is not None


def test_the_one_file_bundle_runs_the_agent_in_the_guest(vm: VirtualMachine, tmp_path) -> None:
    import base64

    from vmreclaim.guest.bundle import build_bundle

    bundle = tmp_path / "vmreclaim.pyz"
    build_bundle(bundle)
    payload = base64.b64encode(bundle.read_bytes()).decode()
    vm.check(f"base64 -d > /root/vmreclaim.pyz <<'EOF'\n{payload}\nEOF")
    # Without the shared package on the path: only the copied file.
    done = vm.run("env -u PYTHONPATH python3 -S /root/vmreclaim.pyz guest status --json")
    assert done.ok, done.stderr
    status = json.loads(done.stdout)
    assert status["reporting"]["path"] == "virtio-balloon"
    assert status["reporting"]["negotiated"] is True


def test_a_guest_whose_clock_counts_instructions_boots_and_runs(guest_image) -> None:
    # What the agent's CPU cost is measured on (vmreclaim.bench.agent_cost).
    config = MachineConfig(memory=512 * MIB, cpus=1, icount=0)
    with VirtualMachine(config, guest_image) as machine:
        assert machine.accel == "tcg"
        assert machine.check("nproc").text.strip() == "1"
