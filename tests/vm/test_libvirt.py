"""The libvirt backend against a real libvirtd booting the lab's guest under TCG.

The session starts its own libvirtd when none answers at qemu:///system, and stops it after.
Its configuration lives in a test-owned directory bind-mounted over /etc/libvirt in a private
mount namespace (libvirtd has no option for the QEMU driver's config file), so nothing of the
host's libvirt setup is read or changed. What it takes on Debian 12's libvirt 9.0, as root:

    user = "root", group = "root"   QEMU must read the guest image under ~/.cache (mode 0700)
    dynamic_ownership = 0           nothing to chown back and forth
    security_driver = "none"        no AppArmor/SELinux labelling
    stdio_handler = "file"          QEMU's log without virtlogd
    cgroup_controllers = [ ]        no cgroup setup (no systemd-machined here)

The QEMU driver also needs the system user libvirt-qemu to exist even when QEMU runs as root
(scripts/setup adds it). The domain is transient (createXML) and destroyed on every exit path.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any
from xml.sax.saxutils import quoteattr

import pytest

import vmreclaim
from vmreclaim.host.launch import launch_options
from vmreclaim.lab.channel import CommandChannel
from vmreclaim.lab.qemu_command import COMMAND_PORT, MachineConfig, kernel_command_line
from vmreclaim.qemu.footprint import ProcessFootprint, parse_status_rss
from vmreclaim.qemu.process import set_parent_death_signal

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed (scripts/setup)")

MIB = 1 << 20
GUEST_RAM = 1024 * MIB
ALLOCATED = 512 * MIB
URI = "qemu:///system"
DOMAIN = f"vmreclaim-test-{os.getpid()}"

QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
"""


def _libvirt_answers(uri: str) -> bool:
    try:
        libvirt.open(uri).close()
    except libvirt.libvirtError:
        return False
    return True


@pytest.fixture(scope="module")
def libvirtd(tmp_path_factory) -> Iterator[str]:
    """A libvirt URI that answers: the running daemon's, or one this fixture starts and stops."""
    # Quiet libvirt's default error handler, which prints every failed call to stderr.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    if _libvirt_answers(URI):
        yield URI
        return
    for tool in ("libvirtd", "unshare"):
        if not any((Path(d) / tool).exists() for d in ("/usr/sbin", "/usr/bin", "/sbin")):
            pytest.skip(f"{tool} is not installed (scripts/setup installs libvirt)")
    if os.geteuid() != 0:
        pytest.skip("starting a system libvirtd needs root")
    home = tmp_path_factory.mktemp("libvirtd")
    etc = home / "etc"
    etc.mkdir()
    (etc / "qemu.conf").write_text(QEMU_CONF)
    (etc / "libvirtd.conf").write_text(f'log_outputs = "3:file:{home}/libvirtd.log"\n')
    log = (home / "libvirtd.out").open("wb")
    daemon = subprocess.Popen(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount --bind "$1" /etc/libvirt && exec libvirtd',
            "sh",
            str(etc),
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=functools.partial(set_parent_death_signal, signal.SIGTERM),  # noqa: PLW1509 - prctl must run in the child
    )
    try:
        deadline = time.monotonic() + 30
        while not _libvirt_answers(URI):
            if daemon.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    "libvirtd did not come up:\n"
                    + (home / "libvirtd.out").read_text(errors="replace")[-3000:]
                    + (home / "libvirtd.log").read_text(errors="replace")[-3000:]
                )
            time.sleep(0.2)
        yield URI
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        log.close()


def agent_channel(directory: Path) -> str:
    """The guest agent's <channel> exactly as `host launch-options --hypervisor libvirt` prints
    it, its socket moved from /run/vms to `directory` and named after the domain (host run
    pairs a libvirt domain with the agent socket of the same stem)."""
    channel = launch_options("libvirt", name=DOMAIN).channel
    assert f"/run/vms/{DOMAIN}.agent" in channel, channel
    return channel.replace(f"/run/vms/{DOMAIN}.agent", str(directory / f"{DOMAIN}.agent"))


def domain_xml(image: Any, command_socket: Path, console: Path) -> str:
    """The lab's guest as a libvirt domain: same kernel, initramfs, command line and devices as
    lab/qemu_command.py, under TCG (type='qemu'), and the guest agent's channel."""
    package_dir = Path(vmreclaim.__file__).resolve().parent
    cmdline = kernel_command_line(MachineConfig())

    def share(path: Path | str, tag: str) -> str:
        return (
            "<filesystem type='mount' accessmode='passthrough'>"
            f"<source dir={quoteattr(str(path))}/><target dir='{tag}'/><readonly/></filesystem>"
        )

    return f"""<domain type='qemu'>
  <name>{DOMAIN}</name>
  <memory unit='MiB'>{GUEST_RAM // MIB}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{image.kernel}</kernel>
    <initrd>{image.initramfs}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <cpu mode='maximum' migratable='off'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <controller type='usb' model='none'/>
    <serial type='file'><source path={quoteattr(str(console))}/><target port='0'/></serial>
    <channel type='unix'>
      <source mode='connect' path={quoteattr(str(command_socket))}/>
      <target type='virtio' name='{COMMAND_PORT}'/>
    </channel>
    {agent_channel(command_socket.parent)}
    {share("/usr", "usr")}
    {share(package_dir, "vmreclaim")}
    <memballoon model='virtio' freePageReporting='on'/>
  </devices>
</domain>"""


class LibvirtGuest:
    """A transient libvirt domain running the lab guest, destroyed when the block ends."""

    def __init__(self, uri: str, image: Any, directory: Path) -> None:
        self.uri = uri
        self._image = image
        self._directory = directory
        self.connection: Any = None
        self.domain: Any = None
        self.channel: CommandChannel | None = None

    def __enter__(self) -> LibvirtGuest:
        try:
            self._start()
        except BaseException:
            self._destroy()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._destroy()

    @property
    def agent_socket(self) -> Path:
        """The host end of the agent's channel, which libvirt's QEMU listens on."""
        return self._directory / f"{DOMAIN}.agent"

    def _start(self) -> None:
        command_socket = self._directory / "command.sock"
        console = self._directory / "console.log"
        self.connection = libvirt.open(self.uri)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(str(command_socket))
            listener.listen(1)
            listener.settimeout(60)
            self.domain = self.connection.createXML(
                domain_xml(self._image, command_socket, console), 0
            )
            connection, _ = listener.accept()
        connection.settimeout(None)
        self.channel = CommandChannel(connection)
        self.channel.wait_ready(180)

    def _destroy(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.domain is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self.domain.destroy()
            self.domain = None
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    @property
    def pid(self) -> int:
        return int(Path(f"/run/libvirt/qemu/{DOMAIN}.pid").read_text())

    def check(self, script: str, timeout: float = 120) -> str:
        assert self.channel is not None
        result = self.channel.run(script, timeout)
        assert result.ok, (script, result.stderr.decode(errors="replace"))
        return result.text

    def actual_bytes(self) -> int:
        return int(self.domain.memoryStats()["actual"]) * 1024


def domain_qemu_pids() -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if f"guest={DOMAIN},".encode() in (entry / "cmdline").read_bytes():
                    pids.add(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def guest(libvirtd: str, guest_image, tmp_path_factory) -> Iterator[LibvirtGuest]:
    with LibvirtGuest(libvirtd, guest_image, tmp_path_factory.mktemp("domain")) as running:
        yield running
    assert not domain_qemu_pids(), "the domain's QEMU survived its destruction"


def wait_for(predicate: Any, timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def test_top_once_json_sees_the_domain(guest: LibvirtGuest) -> None:
    argv = [sys.executable, "-m", "vmreclaim", "top", "--once", "--json", "--wait", "15"]
    argv += ["--no-daemon"]  # the domain itself, not a daemon's view of it
    done = subprocess.run(
        [*argv, "--libvirt", guest.uri], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    entries = {entry["name"]: entry for entry in json.loads(done.stdout)["vms"]}
    entry = entries[DOMAIN]
    assert entry["address"] == f"libvirt:{guest.uri}#{DOMAIN}"
    assert entry["pid"] == guest.pid
    assert entry["free_page_reporting"] is True
    assert entry["balloon"]["ram_bytes"] == entry["balloon"]["actual_bytes"] == GUEST_RAM
    vmrss = parse_status_rss(Path(f"/proc/{guest.pid}/status").read_text())
    assert entry["rss_bytes"] == pytest.approx(vmrss, rel=0.05)
    assert 0 < entry["guest"]["available_bytes"] <= GUEST_RAM
    assert entry["guest"]["used_bytes"] is not None


def test_the_agent_reports_through_the_printed_channel(guest: LibvirtGuest) -> None:
    # The <channel> from `host launch-options`, in a domain real libvirtd started: the agent
    # finds the port, and `top` pairs its reports with the domain by the socket's stem.
    guest.check(
        "python3 -m vmreclaim guest run --interval 1 >/tmp/agent.log 2>&1 & echo $! >/tmp/agent.pid"
    )
    argv = [sys.executable, "-m", "vmreclaim", "top", "--once", "--json", "--wait", "15"]
    argv += ["--no-daemon", "--libvirt", guest.uri, "--agent", str(guest.agent_socket)]
    report: dict[str, Any] | None = None
    try:
        deadline = time.monotonic() + 120
        while report is None and time.monotonic() < deadline:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            entry = {e["name"]: e for e in json.loads(done.stdout)["vms"]}[DOMAIN]
            report = (entry["agent"] or {}).get("report")
            time.sleep(1)
    finally:
        agent_log = guest.check("kill $(cat /tmp/agent.pid); cat /tmp/agent.log")
    assert report is not None, agent_log
    assert report["policy"] == "adaptive"
    assert "host channel: a report after every tick on /dev/vport" in agent_log, agent_log


def test_freed_guest_memory_leaves_the_domains_qemu(guest: LibvirtGuest) -> None:
    footprint = ProcessFootprint(guest.pid, GUEST_RAM)

    def guest_ram() -> int:
        value = footprint.sample().guest_ram_bytes
        assert value is not None
        return value

    guest.check(
        f"python3 -m vmreclaim.workloads alloc {ALLOCATED // MIB}M --ready /tmp/held "
        "--release /tmp/release --hold 600 >/dev/null 2>&1 &"
    )
    guest.check("while [ ! -e /tmp/held ]; do sleep 0.1; done", timeout=300)
    held = guest_ram()
    guest.check("touch /tmp/release; while pidof python3 >/dev/null; do sleep 0.1; done")
    lowest = held
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and held - lowest < 0.8 * ALLOCATED:
        lowest = min(lowest, guest_ram())
        time.sleep(0.5)
    assert held - lowest >= 0.8 * ALLOCATED, (held, lowest)


def test_the_balloon_moves_through_the_backend(guest: LibvirtGuest) -> None:
    from vmreclaim.host.backends.libvirt import LibvirtDomainVm, LibvirtHub

    hub = LibvirtHub()
    vm = LibvirtDomainVm(hub, guest.uri, DOMAIN)

    async def steer(target: int) -> int:
        await vm.set_balloon_target(target)
        deadline = time.monotonic() + 60
        while True:
            sample = await vm.sample()
            assert sample.balloon is not None
            if sample.balloon.actual_bytes == target or time.monotonic() > deadline:
                return sample.balloon.actual_bytes
            await asyncio.sleep(0.5)

    async def scenario() -> tuple[int, int]:
        await vm.connect()
        try:
            return await steer(768 * MIB), await steer(GUEST_RAM)
        finally:
            await vm.close()

    try:
        shrunk, grown = asyncio.run(scenario())
    finally:
        hub.close()
    assert (shrunk, grown) == (768 * MIB, GUEST_RAM)


def test_host_run_steers_the_domains_balloon(guest: LibvirtGuest, tmp_path: Path) -> None:
    config = tmp_path / "host.toml"
    # A host that is always short of memory: the daemon shrinks the balloon in steps.
    config.write_text(
        f'libvirt = ["{guest.uri}"]\n'
        f'socket = "{tmp_path / "host.sock"}"\n'
        "[metrics]\nport = 0\n"
        '[host]\nkeep_available = "100000G"\n'
        '[vm_defaults]\nminimum = "896M"\n'
    )
    log = tmp_path / "daemon.log"
    with log.open("wb") as output:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "vmreclaim", "host", "run", "--config", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        shrunk = wait_for(lambda: guest.actual_bytes() <= 900 * MIB, timeout=60)
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
    text = log.read_text(errors="replace")
    assert shrunk, text
    assert guest.actual_bytes() >= 896 * MIB, text
    assert f"watching {DOMAIN} (libvirt:{guest.uri}#{DOMAIN})" in text
