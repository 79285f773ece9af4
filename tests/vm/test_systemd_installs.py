"""The two installs the docs give, run for real on a lab guest with systemd as PID 1
(MachineConfig.init = "systemd"), from wheels built from this checkout:

- docs/cloud-init-guest.yaml as a new VM's user data, run by Debian's cloud-init (its four
  stages, started as the units they are at boot, with the NoCloud datasource), the pip line
  pointed at the wheel as the snippet says to: the agent lands in /opt/vmreclaim/lib, its unit
  starts and the agent reports to the host;
- the host daemon's unit as its header says (a virtualenv, `pip install 'vmreclaim[host]'`,
  host.toml, the unit copied from the package, `systemctl enable --now`): sandboxed, it still
  finds a QEMU by its command line, talks QMP to it, reads its memory from /proc, serves
  Prometheus metrics, and stops cleanly.

The guest has no network: pip installs from the wheels on its scratch disk, and cloud-init's
package step (apt) fails, as it would in any VM without a mirror. Building the wheels needs PyPI
or pip's cache, hence the network mark.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm.agent_port import agent_messages
from vmreclaim.agent_protocol import AgentReport
from vmreclaim.lab import MachineConfig, VirtualMachine

pytestmark = [pytest.mark.network]

MIB = 1 << 20
PROJECT = Path(__file__).resolve().parents[2]
SNIPPET = PROJECT / "docs/cloud-init-guest.yaml"
SCRATCH = "/mnt/scratch"
# The lab's own settings for cloud-init: read the seed on the guest's disk (NoCloud) and leave
# the network alone (the guest has none).
LAB_CLOUD_CFG = "datasource_list: [NoCloud]\nnetwork: {config: disabled}\n"
# What fails in the lab and nowhere else: apt has neither a mirror nor a package database here,
# and the host's /usr, which the guest runs, has no en_US.UTF-8 locale compiled.
LAB_FAILURES = {"package-update-upgrade-install", "locale"}
CLOUD_INIT_UNITS = (
    "cloud-init-local.service cloud-init.service cloud-config.service cloud-final.service"
)
QEMU_NAME = "labguest"
HOST_TOML = 'interval = 1.0\n\n[host]\nkeep_available = "64M"\n'


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the guest's scratch disk holds: wheels of this checkout and of its host extra, the
    snippet as user data with the pip line pointed at the wheel, and cloud-init's settings."""
    if shutil.which("cloud-init") is None or not Path("/etc/cloud/cloud.cfg").exists():
        pytest.skip("cloud-init is not installed here (scripts/setup installs Debian's)")
    root = tmp_path_factory.mktemp("systemd-installs")
    project = root / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT / name, project)
    shutil.copytree(
        PROJECT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    contents = root / "scratch"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
         "-w", str(contents / "wheels"), f"{project}[host]"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    wheel = next((contents / "wheels").glob("vmreclaim-*.whl"))
    user_data = SNIPPET.read_text()
    pip_line = "--target, /opt/vmreclaim/lib, vmreclaim]"
    assert user_data.count(pip_line) == 1, "the snippet's pip line changed: update this test"
    user_data = user_data.replace(
        pip_line, f"--target, /opt/vmreclaim/lib, {SCRATCH}/wheels/{wheel.name}]"
    )
    seed = contents / "seed"
    seed.mkdir()
    (seed / "user-data").write_text(user_data)
    (seed / "meta-data").write_text(
        f"instance-id: vmreclaim-lab-1\nlocal-hostname: {QEMU_NAME}-host\n"
    )
    shutil.copytree("/etc/cloud", contents / "etc-cloud")  # Debian's, as a cloud image ships it
    (contents / "etc-cloud/cloud.cfg.d/99-vmreclaim-lab.cfg").write_text(LAB_CLOUD_CFG)
    return contents


@pytest.fixture(scope="module")
def vm(guest_image, scratch: Path) -> Iterator[VirtualMachine]:
    config = MachineConfig(
        memory=768 * MIB, cpus=1, init="systemd", agent_port=True, scratch_disk=256 * MIB,
        scratch_contents=scratch, name=QEMU_NAME + "-host",
    )  # fmt: skip
    with VirtualMachine(config, guest_image) as machine:
        machine.run("systemctl is-system-running --wait", timeout=300)
        yield machine


def test_the_cloud_init_snippet_installs_and_starts_the_agent(vm: VirtualMachine) -> None:
    # The lab shares src/vmreclaim at /opt/vmreclaim/lib/vmreclaim: gone, so that what runs is
    # what pip installed there.
    vm.check("umount /opt/vmreclaim/lib/vmreclaim && rmdir /opt/vmreclaim/lib/vmreclaim")
    vm.check(
        f"mkdir -p /etc/cloud /var/lib/cloud/seed/nocloud && cp -a {SCRATCH}/etc-cloud/. "
        f"/etc/cloud/ && cp {SCRATCH}/seed/* /var/lib/cloud/seed/nocloud/"
    )
    with socket.socket(socket.AF_UNIX) as host:
        host.connect(str(vm.agent_socket))
        vm.run(f"systemctl start {CLOUD_INIT_UNITS}", timeout=900)  # fails: LAB_FAILURES
        output = vm.run("cat /var/log/cloud-init-output.log").text
        status = json.loads(vm.run("cloud-init status --format json").text)
        assert status["datasource"] == "nocloud", status
        failed = {error.split("'")[1] for error in status["errors"]}
        assert failed <= LAB_FAILURES, output
        assert "Successfully installed vmreclaim" in output, output
        report = next((m for m in agent_messages(host, 90) if isinstance(m, AgentReport)), None)
    journal = vm.run("journalctl -u vmreclaim-guest --no-pager").text
    assert report is not None, journal
    assert report.policy == "adaptive"
    shown = vm.check(
        "systemctl show vmreclaim-guest -p ActiveState -p UnitFileState -p NRestarts"
    ).text
    assert "ActiveState=active" in shown, shown
    assert "UnitFileState=enabled" in shown, shown  # starts again at the next boot
    assert "NRestarts=0" in shown, shown
    assert vm.run("ls /opt/vmreclaim/lib/vmreclaim-*.dist-info").ok


def _metrics(vm: VirtualMachine) -> dict[str, float]:
    """The daemon's per-VM samples for the paused QEMU, read in the guest at its default port."""
    from prometheus_client.parser import text_string_to_metric_families

    fetch = (
        "python3 -c 'import urllib.request; "
        'print(urllib.request.urlopen("http://127.0.0.1:9848/metrics", timeout=5).read().decode())'
        "'"
    )
    result = vm.run(fetch, timeout=60)
    if not result.ok:
        return {}
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(result.text)
        for sample in family.samples
        if sample.labels.get("vm") == QEMU_NAME
    }


def test_the_host_unit_watches_a_qemu_from_inside_its_sandbox(vm: VirtualMachine) -> None:
    venv = "/opt/vmreclaim/venv"
    # The lab's command channel runs with PYTHONPATH=/opt/vmreclaim/lib, where pip would find
    # the agent cloud-init installed and skip vmreclaim: an administrator's shell has none.
    vm.check(
        f"unset PYTHONPATH; python3 -m venv {venv} && {venv}/bin/pip install -q "
        f"--disable-pip-version-check --no-index --find-links {SCRATCH}/wheels 'vmreclaim[host]'",
        timeout=900,
    )
    # A paused QEMU of the guest's own, found by its command line like any other.
    vm.check(
        f"systemd-run --unit=lab-qemu qemu-system-x86_64 -S -name {QEMU_NAME} -m 128 "
        "-nodefaults -no-user-config -display none "
        "-device virtio-balloon-pci,id=balloon0,free-page-reporting=on "
        f"-qmp unix:/run/{QEMU_NAME}.qmp,server=on,wait=off"
    )
    vm.check(f"mkdir -p /etc/vmreclaim && printf '{HOST_TOML}' > /etc/vmreclaim/host.toml")
    vm.check(
        f"unset PYTHONPATH; {venv}/bin/vmreclaim host run --config /etc/vmreclaim/host.toml "
        "--check",
        120,
    )
    vm.check(
        f"cp {venv}/lib/python3*/site-packages/vmreclaim/host/vmreclaim-host.service "
        "/etc/systemd/system/ && systemctl daemon-reload && systemctl enable --now vmreclaim-host",
        timeout=120,
    )
    samples: dict[str, float] = {}
    for _ in range(30):
        samples = _metrics(vm)
        if "vmreclaim_vm_rss_bytes" in samples:
            break
        vm.run("sleep 3")
    journal = vm.run("journalctl -u vmreclaim-host --no-pager").text
    assert samples.get("vmreclaim_vm_ram_bytes") == 128 * MIB, journal  # QMP, over the socket
    assert samples.get("vmreclaim_vm_free_page_reporting") == 1, journal
    assert samples.get("vmreclaim_vm_rss_bytes", 0) > 0, journal  # its smaps, CAP_SYS_PTRACE
    assert "Traceback" not in journal, journal
    vm.check("systemctl stop vmreclaim-host", timeout=60)
    shown = vm.check("systemctl show vmreclaim-host -p ActiveState -p ExecMainStatus -p NRestarts")
    assert "ActiveState=inactive" in shown.text, shown.text
    assert "ExecMainStatus=0" in shown.text, shown.text
    assert "NRestarts=0" in shown.text, shown.text
