"""Discovery: QEMU's option syntax parsed as QEMU parses it, and paused QEMUs started each way a
monitor can be given (-qmp unix:, -chardev with -mon, -qmp chardev:, a relative path, a
manager's socket folder) found by `top` and `host run` with no VM named; those that cannot be
used (monitor held by another client, no balloon, a client socket, permissions) listed with
the reason.

The /proc these tests hand to discovery holds only their own QEMUs (symlinks to the real
/proc/PID: the kernel's own cmdline text), so other QEMUs on this machine are never probed."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vmreclaim.errors import MissingDependencyError
from vmreclaim.host.discovery import (
    Discovery,
    Found,
    QmpMonitor,
    connect_problem,
    qemu_name,
    qmp_monitors,
    split_options,
)
from vmreclaim.lab.qemu_command import find_qemu

from .daemon_process import SRC, host_daemon, vmreclaim, wait_until
from .qemu_variants import paused_qemu

# -- QEMU's syntax ----------------------------------------------------------------------------


def test_a_doubled_comma_is_a_comma_in_the_value() -> None:
    assert split_options("socket,id=m,path=/run/a,,b.qmp,server=on") == [
        (None, "socket"),
        ("id", "m"),
        ("path", "/run/a,b.qmp"),
        ("server", "on"),
    ]
    assert split_options("unix:/x,,,,y,server") == [(None, "unix:/x,,y"), (None, "server")]


def test_every_way_to_give_a_qmp_monitor_is_read() -> None:
    argv = [
        "qemu-system-x86_64",
        "-qmp", "unix:/run/a.qmp,server,nowait",
        "-chardev", "socket,id=mon0,path=/run/b,,1.qmp,server=on,wait=off",
        "-mon", "chardev=mon0,mode=control,pretty=on",
        "-chardev", "socket,id=qmp1,path=/run/c.qmp,server=on,wait=off",
        "--qmp", "chardev:qmp1",
        "-chardev", "socket,id=hmp,path=/run/hmp.sock,server=on,wait=off",
        "-mon", "hmp",  # readline: a human monitor, not QMP
        "-monitor", "unix:/run/hmp2.sock,server=on,wait=off",
    ]  # fmt: skip
    assert qmp_monitors(argv) == (
        QmpMonitor("-qmp", "/run/a.qmp"),
        QmpMonitor("-chardev/-mon", "/run/b,1.qmp"),
        QmpMonitor("-qmp chardev:", "/run/c.qmp"),
    )


def test_monitors_that_cannot_be_reached_say_why() -> None:
    argv = [
        "kvm",
        "-qmp", "unix:/run/client.qmp",  # no server: QEMU connects out
        "-qmp", "tcp:127.0.0.1:4444,server=on,wait=off",
        "-qmp", "stdio",
        "-chardev", "socket,id=charmonitor,fd=23,server=on,wait=off",
        "-mon", "chardev=charmonitor,id=monitor,mode=control",
        "-qmp", "chardev:nosuch",
    ]  # fmt: skip
    problems = [(monitor.path, monitor.problem) for monitor in qmp_monitors(argv)]
    assert problems == [
        ("/run/client.qmp", "a client socket: QEMU connects out to it"),
        (None, "a TCP socket: vmreclaim speaks QMP on unix sockets"),
        (None, "-qmp stdio: not a unix socket"),
        (None, "a file descriptor QEMU inherited, not a path"),
        (None, "no -chardev with id=nosuch"),
    ]


def test_a_proxmox_command_line_gives_its_monitor_and_not_the_event_socket() -> None:
    # As qemu-server builds it: the QMP socket is a server, qmeventd's a client.
    argv = [
        "/usr/bin/kvm", "-id", "100", "-name", "web,debug-threads=on",
        "-chardev", "socket,id=qmp,path=/var/run/qemu-server/100.qmp,server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        "-chardev", "socket,id=qmp-event,path=/var/run/qmeventd.sock,reconnect=5",
        "-mon", "chardev=qmp-event,mode=control",
    ]  # fmt: skip
    monitors = qmp_monitors(argv)
    assert [(m.path, m.problem is None) for m in monitors] == [
        ("/var/run/qemu-server/100.qmp", True),
        ("/var/run/qmeventd.sock", False),
    ]
    assert qemu_name(argv) == "web"
    assert qemu_name(["qemu", "-name", "guest=db,,1,process=x"]) == "db,1"


def test_a_socket_the_user_may_not_open_is_a_permissions_problem(tmp_path: Path) -> None:
    path = tmp_path / "vm.qmp"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        os.chmod(path, 0o700)
        problem = connect_problem(str(path), PermissionError(errno.EACCES, "Permission denied"))
    assert problem.startswith(f"permission denied (owner {os.getuid()}:{os.getgid()}, mode 700)")
    gone = connect_problem(str(path), FileNotFoundError(errno.ENOENT, "No such file"))
    assert "not there" in gone
    refused = connect_problem(str(path), ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    assert "nobody listens" in refused


# -- real QEMUs, started every way --------------------------------------------------------------


@dataclass
class Host:
    """Paused QEMUs, a /proc holding only them, and the sockets they serve."""

    proc: Path
    folder: Path
    sockets: dict[str, Path]
    pids: dict[str, int]

    def discovery(self) -> Discovery:
        return Discovery(
            self.proc,
            folders=[("Proxmox VE", str(self.folder / "*.qmp"))],
            libvirt_sockets=[("qemu:///system", [str(self.proc / "no-libvirt-sock")])],
        )


def fake_proc(directory: Path, pids: list[int]) -> Path:
    """A /proc with these processes (symlinks to the real entries) and the host's memory."""
    directory.mkdir()
    for pid in pids:
        (directory / str(pid)).symlink_to(f"/proc/{pid}")
    for name in ("meminfo", "pressure"):
        (directory / name).symlink_to(f"/proc/{name}")
    return directory


@contextlib.contextmanager
def held(path: Path) -> Iterator[socket.socket]:
    """A client that took the monitor at `path` and keeps it."""
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(path))
        client.settimeout(10)
        assert b'"QMP"' in client.recv(4096)  # the greeting: the monitor is ours now
        yield client


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    try:
        find_qemu()
    except MissingDependencyError as err:
        pytest.skip(err.message)
    directory = tmp_path_factory.mktemp("discovery")
    folder = directory / "qemu-server"
    folder.mkdir()
    s = {
        "qmp": directory / "a,b.qmp",  # a comma in the path: QEMU's ",," escape
        "chardev": directory / "chardev.qmp",
        "qmp-chardev": directory / "qmp-chardev.qmp",
        "relative": directory / "relative.qmp",
        "no-balloon": directory / "no-balloon.qmp",
        "held": directory / "held.qmp",
        "proxmox": folder / "100.qmp",
    }
    server = "server=on,wait=off"
    variants = [
        ("qmp", ["-qmp", f"unix:{str(s['qmp']).replace(',', ',,')},{server}"], True, None),
        ("chardev", ["-chardev", f"socket,id=m0,path={s['chardev']},{server}",
                     "-mon", "chardev=m0,mode=control"], True, None),
        ("qmp-chardev", ["-chardev", f"socket,id=q0,path={s['qmp-chardev']},{server}",
                         "-qmp", "chardev:q0"], True, None),
        ("relative", ["-qmp", f"unix:relative.qmp,{server}"], True, directory),
        ("no-balloon", ["-qmp", f"unix:{s['no-balloon']},{server}"], False, None),
        ("held", ["-qmp", f"unix:{s['held']},{server}"], True, None),
        ("proxmox", ["-qmp", f"unix:{s['proxmox']},{server}"], True, None),
    ]  # fmt: skip
    with contextlib.ExitStack() as owned:
        pids = {}
        for name, monitor, balloon, cwd in variants:
            process = owned.enter_context(
                paused_qemu(name, monitor, s[name], balloon=balloon, cwd=cwd)
            )
            pids[name] = process.pid
        owned.enter_context(held(s["held"]))
        # The Proxmox VM's command line is not readable here (as from another PID namespace):
        # only its folder tells of it.
        visible = [pid for name, pid in pids.items() if name != "proxmox"]
        yield Host(fake_proc(directory / "proc", visible), folder, s, pids)


def by_address(found: tuple[Found, ...]) -> dict[str, Found]:
    return {entry.address: entry for entry in found}


def test_discovery_finds_every_usable_monitor_however_it_was_given(host: Host) -> None:
    found = asyncio.run(host.discovery().scan())
    usable = {str(host.sockets[name]) for name in ("qmp", "chardev", "qmp-chardev", "relative")}
    assert set(found.qmp) == usable | {str(host.sockets["proxmox"])}
    assert found.libvirt == ()


def test_discovery_says_why_it_cannot_use_the_others(host: Host) -> None:
    not_watched = by_address(asyncio.run(host.discovery().scan()).not_watched)
    assert set(not_watched) == {str(host.sockets["held"]), str(host.sockets["no-balloon"])}
    held_vm = not_watched[str(host.sockets["held"])]
    assert held_vm.reason is not None
    assert held_vm.reason.startswith("held by another client")
    assert (held_vm.name, held_vm.pid, held_vm.found_by) == ("held", host.pids["held"], "-qmp")
    no_balloon = not_watched[str(host.sockets["no-balloon"])]
    assert no_balloon.reason is not None
    assert no_balloon.reason.startswith("no balloon device")


def test_a_usable_monitor_is_not_probed_again(host: Host) -> None:
    discovery = host.discovery()
    first = asyncio.run(discovery.scan())
    # While the fleet holds a monitor a probe would see it held: the verdict stands instead.
    with held(host.sockets["qmp"]):
        again = asyncio.run(discovery.scan(force=True))
    assert str(host.sockets["qmp"]) in again.qmp
    assert again.qmp == first.qmp


def test_a_socket_without_permission_is_listed_with_the_reason() -> None:
    """The probe, run as nobody (root may open any socket), of a root-owned 0755 socket:
    connecting needs write permission. discovery.py needs only the standard library, so a
    copy of it runs under the system's python3, which nobody may execute."""
    system_python = Path("/usr/bin/python3")
    if os.getuid() != 0 or not system_python.exists():
        pytest.skip("needs root, to run the probe as another user, and /usr/bin/python3")
    # pytest's own directories are root's only: a directory of its own that nobody may enter.
    shared = Path(tempfile.mkdtemp(prefix="vmreclaim-perm-"))
    try:
        shared.chmod(0o755)
        shutil.copy(Path(SRC) / "vmreclaim" / "host" / "discovery.py", shared / "discovery.py")
        path = shared / "vm.qmp"
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(str(path))
            listener.listen(1)
            os.chmod(path, 0o755)
            probe = (
                f"import asyncio, discovery; print(asyncio.run(discovery.probe({str(path)!r}, 1))"
            )
            done = subprocess.run(
                [str(system_python), "-c", probe + ")"],
                capture_output=True,
                text=True,
                timeout=30,
                user=65534,
                cwd=shared,
            )
    finally:
        shutil.rmtree(shared)
    assert done.stdout.startswith("permission denied (owner 0:0, mode 755)"), done.stderr


def test_top_with_no_vm_named_shows_what_it_found(host: Host, tmp_path: Path) -> None:
    config = tmp_path / "top.toml"
    config.write_text(f'proc = "{host.proc}"\n[host]\nkeep_available = "1G"\n')
    done = vmreclaim(
        "top", "--once", "--json", "--no-daemon", "--wait", "0", "--config", str(config)
    )
    assert done.returncode == 0, done.stderr
    snapshot = json.loads(done.stdout)
    watched = {vm["address"]: vm for vm in snapshot["vms"]}
    for name in ("qmp", "chardev", "qmp-chardev", "relative"):
        vm = watched[str(host.sockets[name])]
        assert (vm["name"], vm["pid"]) == (name, host.pids[name])
    not_watched = {entry["address"]: entry for entry in snapshot["not_watched"]}
    assert not_watched[str(host.sockets["held"])]["reason"].startswith("held by another client")
    assert not_watched[str(host.sockets["no-balloon"])]["reason"].startswith("no balloon")
    assert f"not watching held (pid {host.pids['held']}" in done.stderr


def test_a_vm_named_overrides_discovery(host: Host, tmp_path: Path) -> None:
    config = tmp_path / "top.toml"
    config.write_text(f'proc = "{host.proc}"\n[host]\nkeep_available = "1G"\n')
    done = vmreclaim(
        "top", "--once", "--json", "--no-daemon", "--wait", "0", "--config", str(config),
        "--qmp", str(host.sockets["chardev"]),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    snapshot = json.loads(done.stdout)
    assert [vm["address"] for vm in snapshot["vms"]] == [str(host.sockets["chardev"])]
    assert "not_watched" not in snapshot


def test_host_run_with_no_vm_in_its_config_steers_what_it_finds(host: Host, tmp_path: Path) -> None:
    config = tmp_path / "host.toml"
    view = tmp_path / "run" / "host.sock"
    config.write_text(
        f'proc = "{host.proc}"\nsocket = "{view}"\n'
        '[metrics]\nport = 0\n[host]\nkeep_available = "1G"\n'
    )
    with host_daemon(config, view) as daemon:
        for name in ("qmp", "chardev", "qmp-chardev", "relative"):
            address = str(host.sockets[name])
            assert wait_until(lambda: daemon.view_has(address), 30), daemon.log_text()  # noqa: B023
        assert daemon.stop()[0] == 0
    log = daemon.log_text()
    assert "every VM found on the host" in log
    assert f"found {host.sockets['no-balloon']} (-qmp) but cannot use it: no balloon" in log
