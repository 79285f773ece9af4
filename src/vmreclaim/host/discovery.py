"""Finding the VMs on this host that nobody named, for `top` and `host run` without VM options.

Three places say where a VM's monitor is:
1. QEMU's command line (/proc/PID/cmdline of every process named qemu-system-* or kvm): the QMP
   monitors it was given, as `-qmp unix:PATH,server=on`, as `-chardev socket,id=X,path=PATH,
   server=on` with `-mon chardev=X,mode=control`, or as `-qmp chardev:X` naming that chardev.
2. The socket folders of VM managers that make one socket per VM (MANAGER_FOLDERS), for QEMUs
   whose command line this process cannot read (another PID namespace, hidepid).
3. libvirt's local URIs whose daemon socket exists (LIBVIRT_SOCKETS): listed through libvirt,
   which holds its QEMUs' monitors. A socket that does not exist is not connected to, because
   connecting to qemu:///session would start a session daemon.

Each monitor found is tried once (`probe`): connect, read the QMP greeting, ask for the balloon.
One that cannot be used is kept with the reason (a monitor serves one client, so one that sends
no greeting is held by another; permissions; no balloon device), and tried again after
RETRY_AFTER_S. One that can is handed to the fleet and not tried again while its process
lives: the fleet then holds it, and a second client would only see it as held.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import glob
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MANAGER_FOLDERS: tuple[tuple[str, str], ...] = (
    # Proxmox VE: qemu-server's PVE/QemuServer/Helpers.pm, qmp_socket():
    # /var/run/qemu-server/<vmid>.qmp (<vmid>.qga beside it is the guest agent's, not QMP).
    ("Proxmox VE", "/var/run/qemu-server/*.qmp"),
    # Ganeti: lib/hypervisor/hv_kvm, _InstanceQmpMonitor(): <RUN_DIR>/kvm-hypervisor/ctrl/
    # <instance>.qmp, RUN_DIR being /var/run/ganeti.
    ("Ganeti", "/var/run/ganeti/kvm-hypervisor/ctrl/*.qmp"),
)
"""(manager, glob of its QMP sockets)."""

LIBVIRT_SOCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("qemu:///system", ("/run/libvirt/virtqemud-sock", "/run/libvirt/libvirt-sock")),
    (
        "qemu:///session",
        ("$XDG_RUNTIME_DIR/libvirt/virtqemud-sock", "$XDG_RUNTIME_DIR/libvirt/libvirt-sock"),
    ),
)
"""Each local URI and the daemon sockets (modular virtqemud, or monolithic libvirtd) whose
presence says a daemon may answer it."""

RETRY_AFTER_S = 30.0
"""A monitor that could not be used is tried again after this long (its holder may let go)."""
RESCAN_EVERY_S = 5.0
"""How often /proc and the folders are read again: a new VM is picked up within this, and a
daemon polling every second does not read every process's cmdline every second."""
QEMU_COMMS = ("qemu-system-", "qemu-kvm", "kvm")
"""Process names of QEMU: upstream's binaries, RHEL's /usr/libexec/qemu-kvm, Debian's old kvm."""
LIBVIRT_MANAGED = "started by libvirt, which holds its monitor"

_TRUE = frozenset({"on", "yes", "true", "y"})
_HELD = "held by another client (a monitor serves one client at a time)"
_TCP = "a TCP socket: vmreclaim speaks QMP on unix sockets"


@dataclass(frozen=True)
class Found:
    """A VM monitor discovery found, and why it is not watched (None: it is)."""

    address: str
    """The QMP socket path (as --qmp takes it), or `libvirt:URI` for a URI that failed."""
    found_by: str
    """What named it: "-qmp", "-chardev/-mon", "-qmp chardev:", a manager's folder, a URI."""
    name: str | None = None
    pid: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class QmpMonitor:
    """A QMP monitor on a QEMU command line: its socket, or why none can be reached."""

    found_by: str
    path: str | None
    problem: str | None = None


@dataclass(frozen=True)
class QemuProcess:
    pid: int
    name: str | None
    monitors: tuple[QmpMonitor, ...]
    libvirt: bool
    """Started by libvirt (its files are named on the command line)."""


def split_options(text: str) -> list[tuple[str | None, str]]:
    """QEMU's `key=value,key=value` syntax, where `,,` is a literal comma. An element without
    `=` comes back as (None, element): the option's implied first key, or a bare flag."""
    elements: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == ",":
            if text.startswith(",,", index):
                current.append(",")
                index += 2
                continue
            elements.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    elements.append("".join(current))
    pairs: list[tuple[str | None, str]] = []
    for element in elements:
        key, equals, value = element.partition("=")
        pairs.append((key, value) if equals else (None, element))
    return pairs


def _flag(options: list[tuple[str | None, str]], name: str) -> bool:
    """A boolean QemuOpts option: `name=on` (yes, true, y), or bare `name` (and `noname` off)."""
    value = False
    for key, text in options:
        if key == name:
            value = text.lower() in _TRUE
        elif key is None and text in (name, f"no{name}"):
            value = text == name
    return value


def _value(options: list[tuple[str | None, str]], name: str) -> str | None:
    found = None
    for key, text in options:
        if key == name:
            found = text
    return found


def _options(argv: Sequence[str]) -> list[tuple[str, str]]:
    """(option, value) for each `-opt value` (or `--opt value`) on a command line."""
    pairs = []
    index = 1
    while index < len(argv):
        arg = argv[index]
        if arg.startswith("-") and index + 1 < len(argv):
            pairs.append((arg.lstrip("-"), argv[index + 1]))
        index += 1
    return pairs


def _socket_monitor(found_by: str, options: list[tuple[str | None, str]]) -> QmpMonitor:
    """A monitor on a socket chardev (`-chardev socket,...` or `-qmp unix:...`)."""
    path = _value(options, "path")
    if path is None:
        if _value(options, "fd") is not None:
            return QmpMonitor(found_by, None, "a file descriptor QEMU inherited, not a path")
        return QmpMonitor(found_by, None, _TCP)
    if not _flag(options, "server"):
        return QmpMonitor(found_by, path, "a client socket: QEMU connects out to it")
    return QmpMonitor(found_by, path)


def qmp_monitors(argv: Sequence[str]) -> tuple[QmpMonitor, ...]:
    """Every QMP monitor a QEMU command line sets up, in order."""
    chardevs: dict[str, list[tuple[str | None, str]]] = {}
    for option, value in _options(argv):
        if option == "chardev":
            options = split_options(value)
            identifier = _value(options, "id")
            if identifier is not None:
                chardevs[identifier] = options
    monitors = []
    for option, value in _options(argv):
        if option in ("qmp", "qmp-pretty"):
            monitors.append(_qmp_option(value, chardevs))
        elif option == "mon":
            options = split_options(value)
            identifier = _value(options, "chardev")
            if identifier is None and options[0][0] is None:
                identifier = options[0][1]  # -mon's implied key is chardev
            if _value(options, "mode") == "control" and identifier is not None:
                monitors.append(_chardev_monitor("-chardev/-mon", identifier, chardevs))
    return tuple(monitors)


def _qmp_option(value: str, chardevs: dict[str, list[tuple[str | None, str]]]) -> QmpMonitor:
    """`-qmp chardev:ID`, `-qmp unix:PATH,...` (the legacy syntax, whose implied first key is
    the path), or something vmreclaim cannot reach."""
    if value.startswith("chardev:"):
        return _chardev_monitor("-qmp chardev:", value.removeprefix("chardev:"), chardevs)
    if value.startswith("unix:"):
        options = split_options(value.removeprefix("unix:"))
        if options[0][0] is None:
            options[0] = ("path", options[0][1])
        return _socket_monitor("-qmp", options)
    if value.startswith(("tcp:", "telnet:", "websocket:")):
        return QmpMonitor("-qmp", None, _TCP)
    return QmpMonitor("-qmp", None, f"-qmp {value}: not a unix socket")


def _chardev_monitor(
    found_by: str, identifier: str, chardevs: dict[str, list[tuple[str | None, str]]]
) -> QmpMonitor:
    options = chardevs.get(identifier)
    if options is None:
        return QmpMonitor(found_by, None, f"no -chardev with id={identifier}")
    if options[0] != (None, "socket"):
        return QmpMonitor(found_by, None, f"chardev {identifier} is not a socket")
    return _socket_monitor(found_by, options)


def qemu_name(argv: Sequence[str]) -> str | None:
    """`-name guest=NAME,...` or `-name NAME,...`."""
    for option, value in _options(argv):
        if option == "name":
            options = split_options(value)
            return _value(options, "guest") or (options[0][1] if options[0][0] is None else None)
    return None


def read_qemu_processes(proc: Path) -> list[QemuProcess]:
    """Every QEMU under `proc` whose command line can be read. Relative socket paths are
    resolved against the process's working directory."""
    processes = []
    for entry in sorted(proc.iterdir(), key=lambda path: path.name):
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            if not comm.startswith(QEMU_COMMS):
                continue
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
        except OSError:
            continue  # gone, or not ours to read
        monitors = tuple(_resolved(monitor, entry) for monitor in qmp_monitors(argv))
        libvirt = any("/libvirt/" in arg for arg in argv)
        processes.append(QemuProcess(int(entry.name), qemu_name(argv), monitors, libvirt))
    return processes


def _resolved(monitor: QmpMonitor, process: Path) -> QmpMonitor:
    if monitor.path is None or os.path.isabs(monitor.path):
        return monitor
    try:
        cwd = os.readlink(process / "cwd")
    except OSError:
        return QmpMonitor(monitor.found_by, monitor.path, "a relative path, and QEMU's "
                          "working directory cannot be read")  # fmt: skip
    return QmpMonitor(monitor.found_by, os.path.join(cwd, monitor.path), monitor.problem)


def connect_problem(path: str, err: OSError) -> str:
    """Why connecting to a monitor socket failed, in words an administrator acts on."""
    if err.errno in (errno.EACCES, errno.EPERM):
        try:
            info = os.stat(path)
            owner = f" (owner {info.st_uid}:{info.st_gid}, mode {info.st_mode & 0o777:o})"
        except OSError:
            owner = ""
        return f"permission denied{owner}: run as root or as the VM's user"
    if err.errno == errno.ENOENT:
        return "the socket is not there (removed, or in another mount namespace)"
    if err.errno == errno.ECONNREFUSED:
        return "refuses connections: nobody listens (a socket left behind)"
    return f"cannot connect: {err.strerror or err!r}"


async def _answer(reader: asyncio.StreamReader) -> dict[str, object]:
    """The next QMP message that is not an event."""
    while True:
        line = await reader.readline()
        if not line:
            raise EOFError("the monitor closed the connection")
        message = json.loads(line)
        if isinstance(message, dict) and "event" not in message:
            return message


async def probe(path: str, timeout: float) -> str | None:
    """None when the QMP monitor at `path` answers and has a balloon device; otherwise why
    it cannot be used."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        # A unix socket connects at once or not at all: EAGAIN when the listener's queue of
        # waiting clients is full, which a held monitor's fills with (one, in QEMU).
        sock.connect(path)
    except BlockingIOError:
        sock.close()
        return f"{_HELD}, and its queue of waiting clients is full"
    except OSError as err:
        sock.close()
        return connect_problem(path, err)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    try:
        return await _converse(reader, writer, timeout)
    except (OSError, EOFError, ValueError, asyncio.TimeoutError) as err:
        return f"did not answer as a QMP monitor: {err!r}"
    finally:
        writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), timeout)


async def _converse(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
) -> str | None:
    """The greeting, capabilities, then query-balloon: why the monitor cannot be used."""
    try:
        await asyncio.wait_for(_answer(reader), timeout)
    except asyncio.TimeoutError:
        return f"{_HELD}: no QMP greeting within {timeout:g} s"
    answer: dict[str, object] = {}
    for command in ("qmp_capabilities", "query-balloon"):
        writer.write(json.dumps({"execute": command}).encode() + b"\n")
        answer = await asyncio.wait_for(_answer(reader), timeout)
    error = answer.get("error")
    if not isinstance(error, dict):
        return None
    if error.get("class") == "DeviceNotActive":
        return "no balloon device (add -device virtio-balloon-pci,free-page-reporting=on)"
    return f"query-balloon failed: {error.get('desc')}"


@dataclass(frozen=True)
class Candidate:
    """A monitor to try: from a command line (with its process) or a folder."""

    path: str
    found_by: str
    name: str | None = None
    pid: int | None = None


@dataclass(frozen=True)
class _Verdict:
    reason: str | None
    checked_at: float
    identity: tuple[int | None, int]
    """(QEMU pid, the socket's inode): another process or a new socket is tried again."""


@dataclass(frozen=True)
class Discovered:
    qmp: tuple[str, ...]
    """Monitor sockets to watch."""
    libvirt: tuple[str, ...]
    """Local libvirt URIs whose daemon socket exists."""
    not_watched: tuple[Found, ...]
    """Monitors found that cannot be used, each with the reason."""
    libvirt_processes: tuple[Found, ...]
    """QEMUs libvirt started: covered by a libvirt URI that answers, unusable otherwise."""


class Discovery:
    """Finds every VM monitor on the host, and remembers which could be used (see the module
    docstring). `proc`, the folders and the libvirt sockets are settings, so tests point
    them at what they start."""

    def __init__(
        self,
        proc: Path = Path("/proc"),
        *,
        folders: Sequence[tuple[str, str]] = MANAGER_FOLDERS,
        libvirt_sockets: Sequence[tuple[str, Sequence[str]]] = LIBVIRT_SOCKETS,
        timeout: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._proc = proc
        self._folders = tuple(folders)
        self._libvirt_sockets = tuple(libvirt_sockets)
        self.timeout = timeout
        self._clock = clock
        self._verdicts: dict[str, _Verdict] = {}
        self._last: Discovered | None = None
        self._scanned_at = 0.0

    def candidates(self) -> tuple[list[Candidate], list[Found], list[Found]]:
        """Monitors to try; those that cannot be, from the command line alone; and libvirt's."""
        candidates: dict[str, Candidate] = {}
        unusable: list[Found] = []
        managed: list[Found] = []
        for process in read_qemu_processes(self._proc):
            for monitor in process.monitors:
                address = monitor.path or f"pid {process.pid}"
                found = Found(address, monitor.found_by, process.name, process.pid)
                if process.libvirt:
                    managed.append(_with_reason(found, LIBVIRT_MANAGED))
                elif monitor.problem is not None or monitor.path is None:
                    unusable.append(_with_reason(found, monitor.problem))
                else:
                    path = os.path.realpath(monitor.path)
                    candidates.setdefault(
                        path, Candidate(path, monitor.found_by, process.name, process.pid)
                    )
        for manager, pattern in self._folders:
            for path in sorted(glob.glob(pattern)):
                real = os.path.realpath(path)
                candidates.setdefault(real, Candidate(real, f"{manager} ({pattern})"))
        return list(candidates.values()), unusable, managed

    def libvirt_uris(self) -> list[str]:
        return [
            uri
            for uri, sockets in self._libvirt_sockets
            if any(_socket_exists(os.path.expandvars(path)) for path in sockets)
        ]

    async def scan(self, *, force: bool = False) -> Discovered:
        now = self._clock()
        if self._last is not None and not force and now - self._scanned_at < RESCAN_EVERY_S:
            return self._last
        candidates, unusable, managed = self.candidates()
        identities = {candidate.path: _identity(candidate) for candidate in candidates}
        due = [
            candidate
            for candidate in candidates
            if (verdict := self._verdicts.get(candidate.path)) is None
            or verdict.identity != identities[candidate.path]
            or (verdict.reason is not None and now - verdict.checked_at >= RETRY_AFTER_S)
        ]
        reasons = await asyncio.gather(*(probe(c.path, self.timeout) for c in due))
        for candidate, reason in zip(due, reasons):
            self._verdicts[candidate.path] = _Verdict(reason, now, identities[candidate.path])
            if reason is not None:
                log.info("found %s (%s) but cannot use it: %s", candidate.path, candidate.found_by,
                         reason)  # fmt: skip
        self._verdicts = {path: v for path, v in self._verdicts.items() if path in identities}
        usable = []
        for candidate in candidates:
            reason = self._verdicts[candidate.path].reason
            if reason is None:
                usable.append(candidate.path)
            else:
                unusable.append(
                    Found(candidate.path, candidate.found_by, candidate.name, candidate.pid, reason)
                )
        self._last = Discovered(
            tuple(usable), tuple(self.libvirt_uris()), tuple(unusable), tuple(managed)
        )
        self._scanned_at = now
        return self._last


def _with_reason(found: Found, reason: str | None) -> Found:
    return Found(found.address, found.found_by, found.name, found.pid, reason or "unusable")


def _identity(candidate: Candidate) -> tuple[int | None, int]:
    try:
        inode = os.stat(candidate.path).st_ino
    except OSError:
        inode = 0
    return candidate.pid, inode


def _socket_exists(path: str) -> bool:
    with contextlib.suppress(OSError):
        return Path(path).is_socket()
    return False
