"""The QEMU command line and the choice of accelerator."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmreclaim.errors import UsageError
from vmreclaim.lab import qemu_command
from vmreclaim.lab.qemu_command import (
    MachineConfig,
    RunFiles,
    check_fits_host,
    choose_accelerator,
    qemu_argv,
)


def _argv(config: MachineConfig) -> list[str]:
    return qemu_argv(
        qemu=Path("/usr/bin/qemu-system-x86_64"),
        kernel=Path("/k"),
        initramfs=Path("/i"),
        package_dir=Path("/src/vmreclaim"),
        config=config,
        accel="tcg",
        files=RunFiles(Path("/run/vm")),
    )


def _device(argv: list[str], prefix: str) -> str:
    return next(a for a in argv if a.startswith(prefix))


def test_free_page_reporting_is_on_by_default() -> None:
    balloon = _device(_argv(MachineConfig()), "virtio-balloon-pci")
    assert "free-page-reporting=on" in balloon
    assert "deflate-on-oom=off" in balloon


def test_reporting_and_deflate_on_oom_follow_the_config() -> None:
    balloon = _device(
        _argv(MachineConfig(free_page_reporting=False, deflate_on_oom=True)), "virtio-balloon-pci"
    )
    assert "free-page-reporting=off" in balloon
    assert "deflate-on-oom=on" in balloon


def test_only_usr_and_the_package_are_shared_read_only() -> None:
    shares = [a for a in _argv(MachineConfig()) if a.startswith("local,")]
    assert len(shares) == 2
    assert all("readonly=on" in share for share in shares)
    assert {share.split("path=")[1].split(",")[0] for share in shares} == {"/usr", "/src/vmreclaim"}


def test_memory_cpus_and_kernel_command_line() -> None:
    argv = _argv(
        MachineConfig(memory=1536 << 20, cpus=1, append="page_reporting.page_reporting_order=5")
    )
    assert argv[argv.index("-m") + 1] == "1536M"
    assert argv[argv.index("-smp") + 1] == "1"
    assert argv[argv.index("-append") + 1].endswith("page_reporting.page_reporting_order=5")


def test_scratch_disk_only_when_asked() -> None:
    assert not any("virtio-blk" in a for a in _argv(MachineConfig()))
    assert any("virtio-blk" in a for a in _argv(MachineConfig(scratch_disk=64 << 20)))


def test_instruction_counting_only_when_asked() -> None:
    assert "-icount" not in _argv(MachineConfig())
    argv = _argv(MachineConfig(cpus=1, icount=0))
    assert argv[argv.index("-icount") + 1] == "shift=0,sleep=on"


@pytest.mark.parametrize(
    "config",
    [
        MachineConfig(memory=64 << 20),
        MachineConfig(cpus=0),
        MachineConfig(accel="hvf"),
        MachineConfig(scratch_disk=1 << 20),
        MachineConfig(cpus=1, icount=0, accel="kvm"),
        MachineConfig(cpus=2, icount=0),
        MachineConfig(cpus=1, icount=11),
    ],
)
def test_impossible_configs_are_refused(config: MachineConfig) -> None:
    with pytest.raises(UsageError):
        config.validate()


MEMINFO = """MemTotal:        4025360 kB
MemFree:         3120512 kB
MemAvailable:    3530000 kB
SwapTotal:       1048572 kB
SwapFree:        1048572 kB
"""


def test_a_guest_larger_than_the_hosts_ram_and_swap_is_refused_before_qemu(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(MEMINFO)
    check_fits_host(4 << 30, meminfo)  # 4 GiB < 3.84 GiB of RAM + 1 GiB of swap
    with pytest.raises(UsageError, match=r"cannot fit this host: it has 4\.8 GiB of RAM and swap"):
        check_fits_host(5 << 30, meminfo)


def test_an_unreadable_meminfo_does_not_stop_the_boot(tmp_path: Path) -> None:
    check_fits_host(1 << 40, tmp_path / "absent")
    (tmp_path / "garbled").write_text("MemTotal: many kB\n")
    check_fits_host(1 << 40, tmp_path / "garbled")


def test_auto_probes_once_and_caches_the_verdict(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(qemu_command, "kvm_usable", lambda: True)
    probes = []

    def probe() -> bool:
        probes.append(1)
        return False

    assert choose_accelerator("auto", "key", tmp_path, probe) == "tcg"
    assert choose_accelerator("auto", "key", tmp_path, probe) == "tcg"
    assert len(probes) == 1
    assert choose_accelerator("auto", "other-qemu", tmp_path, lambda: True) == "kvm"


def test_auto_without_dev_kvm_is_tcg_without_probing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(qemu_command, "kvm_usable", lambda: False)
    assert choose_accelerator("auto", "key", tmp_path, lambda: pytest.fail("probed")) == "tcg"


def test_explicit_choice_is_kept(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(qemu_command, "kvm_usable", lambda: True)
    assert choose_accelerator("tcg", "key", tmp_path, lambda: pytest.fail("probed")) == "tcg"


def test_the_agent_port_only_when_asked_its_socket_paired_with_the_qmp_one() -> None:
    assert not [a for a in _argv(MachineConfig()) if "org.vmreclaim.agent.0" in a]
    argv = _argv(MachineConfig(agent_port=True))
    files = RunFiles(Path("/run/vm"))
    assert f"socket,id=agent,path={files.agent_socket},server=on,wait=off" in argv
    port = _device(argv, "virtserialport,bus=serial0.0,chardev=agent")
    assert port.endswith(",name=org.vmreclaim.agent.0")
    assert files.agent_socket.stem == files.qmp_socket.stem
    assert files.agent_socket.parent == files.qmp_socket.parent
