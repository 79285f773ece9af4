"""libvirt domains through libvirt-python (the optional `libvirt` extra), one backend a domain.

A libvirt URI (`qemu:///system`, `qemu+ssh://host/system`) stands for every running domain on
it: `LibvirtHub` keeps one connection a URI (libvirt connections are thread-safe) and lists the
running domains at each poll, so domains that start are picked up and domains that stop are
forgotten. A domain's address is `libvirt:URI#NAME`.

libvirt-python blocks, and a call on a stuck domain or libvirtd blocks for as long as libvirtd
waits (its QEMU job lock gives up after 30 s; a remote URI over a dead network, longer). Every
call therefore runs on the base's bounded threads (threads.py), keyed by the domain (listing
and opening by the URI): a stuck domain is reported hung after the bound and keeps at most one
thread, and a stuck URI blocks only its own domains (one lock a URI, not one for all).

What comes from where:
- RAM: `virDomainGetMaxMemory` (KiB); balloon: `virDomainMemoryStats` `actual` (KiB); guest
  statistics: the same call once `virDomainSetMemoryStatsPeriod` is set (`available` is the
  guest's total, `usable` its available memory, `unused` free, `disk_caches` cache,
  `last_update` the guest's last report in seconds); target: `virDomainSetMemoryFlags` on the
  live domain.
- free page reporting: `<memballoon model='virtio' freePageReporting='on'>` in the live XML
  (libvirt 6.9.0+). libvirt's own docs say reporting has no effect on `virsh dommemstat`: only
  the QEMU process's footprint shows it working, which is why the footprint is read too.
- the QEMU process: libvirt's pid file (`/run/libvirt/qemu/NAME.pid` for qemu:///system,
  `$XDG_RUNTIME_DIR/libvirt/qemu/run/NAME.pid` for qemu:///session), checked against the
  process's command line (`-name guest=NAME,...`). Remote URIs have no local process: their
  footprint is unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from vmreclaim.agent_protocol import PORT_NAME
from vmreclaim.errors import (
    HostError,
    MissingDependencyError,
    UsageError,
    VmHungError,
    VmUnreachableError,
)
from vmreclaim.host.backends.base import DEFAULT_TIMEOUT, Backend, StatKeys, guest_stats_from
from vmreclaim.host.backends.process import EXACT_FOOTPRINT_EVERY
from vmreclaim.host.backends.threads import BlockingCalls
from vmreclaim.host.config import STATS_PERIOD_S
from vmreclaim.host.records import BalloonState, GuestStats

if TYPE_CHECKING:
    import libvirt

log = logging.getLogger(__name__)

KIB = 1024
PREFIX = "libvirt:"
_STAT_KEYS = StatKeys(
    total="available",  # VIR_DOMAIN_MEMORY_STAT_AVAILABLE: the guest's total
    free="unused",
    available="usable",  # VIR_DOMAIN_MEMORY_STAT_USABLE: MemAvailable
    cache="disk_caches",
    major_faults="major_fault",
    minor_faults="minor_fault",
    amount_unit=KIB,
)


class LibvirtError(HostError):
    """A libvirt call failed; `code` is libvirt's error code (virErrorNumber), None when the
    failure was not libvirt's."""

    def __init__(self, message: str, code: int | None, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


def _quiet(_context: object, _error: object) -> None:
    """libvirt's default error handler prints every failed call to stderr; the errors reach
    us as exceptions anyway."""


def import_libvirt() -> Any:
    """The libvirt module, imported on first use so that nothing else needs it."""
    try:
        import libvirt
    except ImportError as err:
        raise MissingDependencyError(
            "libvirt-python is not installed",
            hint="pip install 'vmreclaim[libvirt]' (it builds against libvirt-dev and "
            "pkg-config; scripts/setup installs both)",
        ) from err
    libvirt.registerErrorHandler(_quiet, None)
    return libvirt


def _translate(err: Exception, what: str) -> HostError:
    """One place that turns a libvirtError into the project's errors: a domain or connection
    that went away is unreachable (the fleet reconnects), anything else a LibvirtError."""
    libvirt = import_libvirt()
    if not isinstance(err, libvirt.libvirtError):
        return LibvirtError(f"{what}: {err!r}", None)
    code = err.get_error_code()
    message = f"{what}: {err.get_error_message() or err}"
    gone = {
        libvirt.VIR_ERR_NO_DOMAIN,
        libvirt.VIR_ERR_OPERATION_INVALID,  # "domain is not running"
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_SYSTEM_ERROR,  # the socket to libvirtd broke
        libvirt.VIR_ERR_RPC,
        libvirt.VIR_ERR_INTERNAL_ERROR,
    }
    if code in gone:
        return VmUnreachableError(message)
    return LibvirtError(message, code)


# -- the domain XML (pure) -------------------------------------------------------------------


def stats_period(domain_xml: str) -> int:
    """The balloon's statistics period in seconds (`<memballoon><stats period='N'/>`), 0 when
    statistics are off or the domain has no balloon."""
    period = ET.fromstring(domain_xml).find("./devices/memballoon/stats")
    try:
        return max(0, int(period.get("period", "0"))) if period is not None else 0
    except ValueError:
        return 0


def balloon_reporting(domain_xml: str) -> bool | None:
    """Whether the domain's balloon accepts free page reports: None when it has no virtio
    balloon (`<memballoon model='none'>` or none at all)."""
    balloon = ET.fromstring(domain_xml).find("./devices/memballoon")
    if balloon is None or balloon.get("model") != "virtio":
        return None
    return balloon.get("freePageReporting") == "on"


@dataclass(frozen=True)
class ReportingEdit:
    xml: str
    changed: bool
    notes: tuple[str, ...]
    """What was changed besides the attribute (a balloon added, a model changed)."""


def enable_reporting_xml(
    domain_xml: str, *, deflate_on_oom: bool = True, agent_channel: str | None = None
) -> ReportingEdit:
    """The domain XML with `freePageReporting='on'` on a virtio memballoon (added when there
    is none, its model turned to virtio when it is 'none'), with `autodeflate='on'` too unless
    `deflate_on_oom` is False (as `host launch-options`), and with the guest agent's channel
    at `agent_channel` (a unix socket path) when given and the domain has none."""
    root = ET.fromstring(domain_xml)
    devices = root.find("devices")
    if devices is None:
        devices = ET.SubElement(root, "devices")
    notes = []
    balloon = devices.find("memballoon")
    if balloon is None:
        balloon = ET.SubElement(devices, "memballoon", {"model": "virtio"})
        notes.append("added a virtio memballoon device")
    elif balloon.get("model") != "virtio":
        notes.append(f"changed the memballoon model from {balloon.get('model')!r} to 'virtio'")
        balloon.set("model", "virtio")
    if deflate_on_oom and balloon.get("autodeflate") != "on":
        balloon.set("autodeflate", "on")
        notes.append("set autodeflate='on': the guest takes balloon pages back before an OOM kill")
    if agent_channel is not None and _agent_channel(devices) is None:
        channel = ET.SubElement(devices, "channel", {"type": "unix"})
        ET.SubElement(channel, "source", {"mode": "bind", "path": agent_channel})
        ET.SubElement(channel, "target", {"type": "virtio", "name": PORT_NAME})
        notes.append(f"added the guest agent's channel {PORT_NAME} at {agent_channel}")
    if balloon.get("freePageReporting") == "on" and not notes:
        return ReportingEdit(domain_xml, changed=False, notes=())
    balloon.set("freePageReporting", "on")
    return ReportingEdit(ET.tostring(root, encoding="unicode"), changed=True, notes=tuple(notes))


def _agent_channel(devices: ET.Element) -> ET.Element | None:
    """The domain's virtio channel named PORT_NAME, if it has one (whatever its host end)."""
    for channel in devices.findall("channel"):
        target = channel.find("target")
        if target is not None and target.get("name") == PORT_NAME:
            return channel
    return None


def guest_stats(stats: dict[str, int]) -> GuestStats | None:
    """`virDomainMemoryStats` as a record; None until the guest has reported (no
    `last_update`). Amounts arrive in KiB."""
    if "last_update" not in stats:
        return None
    return guest_stats_from(stats, _STAT_KEYS, float(stats["last_update"]))


# -- addresses and processes -----------------------------------------------------------------


def domain_address(uri: str, name: str) -> str:
    return f"{PREFIX}{uri}#{name}"


def split_address(address: str) -> tuple[str, str | None]:
    """(URI, domain name) of a `libvirt:URI#NAME` address; the name is None for a bare URI."""
    rest = address.removeprefix(PREFIX)
    uri, sep, name = rest.rpartition("#")
    return (uri, name) if sep else (rest, None)


def pid_file(uri: str, name: str) -> Path | None:
    """Where libvirt's QEMU driver writes a domain's pid; None for a remote URI."""
    parts = urlsplit(uri)
    driver, _, transport = parts.scheme.partition("+")
    if driver != "qemu" or parts.hostname or transport not in ("", "unix"):
        return None
    if parts.path == "/session":
        runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
        return Path(runtime) / "libvirt" / "qemu" / "run" / f"{name}.pid"
    return Path("/run/libvirt/qemu") / f"{name}.pid"


def qemu_pid(uri: str, name: str, proc: Path) -> int | None:
    """The domain's QEMU pid, if its pid file names a process that is this domain's QEMU."""
    path = pid_file(uri, name)
    if path is None:
        return None
    try:
        pid = int(path.read_text().strip())
        cmdline = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if any(arg.startswith(f"guest={name},".encode()) for arg in cmdline) else None


# -- connections -----------------------------------------------------------------------------


class LibvirtHub:
    """One libvirt connection a URI, shared by every domain on it; opened on first use and
    again when it dies (libvirtd restarted)."""

    def __init__(
        self, *, calls: BlockingCalls | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.calls = calls or BlockingCalls()
        self.timeout = timeout
        self._connections: dict[str, libvirt.virConnect] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._listed: dict[str, list[str]] = {}

    def _lock(self, uri: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(uri, threading.Lock())

    def connection(self, uri: str) -> libvirt.virConnect:
        """Blocking: call it from a worker thread."""
        libvirt = import_libvirt()
        with self._lock(uri):
            existing = self._connections.get(uri)
            if existing is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    if existing.isAlive():
                        return existing
                with contextlib.suppress(libvirt.libvirtError):
                    existing.close()
                del self._connections[uri]
            try:
                opened = libvirt.open(uri)
            except libvirt.libvirtError as err:
                raise VmUnreachableError(
                    f"cannot connect to libvirt at {uri}: {err.get_error_message() or err}",
                    hint="is libvirtd (or virtqemud) running, and may this user use the URI? "
                    "qemu:///system needs root or the libvirt group",
                ) from err
            self._connections[uri] = opened
            return opened

    def running_domains(self, uri: str) -> list[str]:
        """Blocking: names of the running domains on `uri`."""
        libvirt = import_libvirt()
        try:
            domains = self.connection(uri).listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        except libvirt.libvirtError as err:
            raise _translate(err, f"listing the domains of {uri}") from err
        return sorted(domain.name() for domain in domains)

    async def discover(self, uris: list[str]) -> tuple[list[str], dict[str, HostError]]:
        """Addresses of every running domain on these URIs, and why each URI that could not be
        listed failed. The URIs are listed at once, each within the timeout; a URI that hangs
        keeps the domains it last listed, which then answer, or are reported hung, one by one."""

        async def listing(uri: str) -> list[str]:
            return await self.calls.run(
                PREFIX + uri,
                lambda: self.running_domains(uri),
                timeout=self.timeout,
                what="listing the domains",
            )

        results = await asyncio.gather(*(listing(uri) for uri in uris), return_exceptions=True)
        addresses: list[str] = []
        failures: dict[str, HostError] = {}
        for uri, result in zip(uris, results):
            if isinstance(result, HostError):
                failures[uri] = result
                names = self._listed.get(uri, []) if isinstance(result, VmHungError) else []
            elif isinstance(result, BaseException):
                raise result
            else:
                names = self._listed[uri] = result
            addresses += [domain_address(uri, name) for name in names]
        return addresses, failures

    def close(self) -> None:
        """Close every connection; one that is stuck in a call is left to the process's exit
        (a daemon thread closes them, and is waited for at most the timeout)."""
        closer = threading.Thread(target=self._close_all, name="vmreclaim-libvirt-close")
        closer.daemon = True
        closer.start()
        closer.join(self.timeout)

    def _close_all(self) -> None:
        libvirt = import_libvirt()
        for uri, connection in list(self._connections.items()):
            with self._lock(uri):
                with contextlib.suppress(libvirt.libvirtError):
                    connection.close()
                self._connections.pop(uri, None)


class LibvirtDomainVm(Backend):
    """A `VmBackend` for one running libvirt domain."""

    def __init__(
        self,
        hub: LibvirtHub,
        uri: str,
        name: str,
        *,
        proc: Path = Path("/proc"),
        timeout: float = DEFAULT_TIMEOUT,
        stats_period: int = STATS_PERIOD_S,
        keep_stats_period: bool = False,
        exact_footprint_every: float = EXACT_FOOTPRINT_EVERY,
    ) -> None:
        super().__init__(
            name,
            proc=proc,
            timeout=timeout,
            exact_footprint_every=exact_footprint_every,
            calls=hub.calls,
        )
        self._hub = hub
        self.uri = uri
        self._stats_period = stats_period
        self._keep_stats_period = keep_stats_period
        """Leave a period the domain already has (`<stats period>`; an onlooker such as
        `top`), setting `stats_period` only where statistics are off; else (the daemon) set it."""
        self._domain: libvirt.virDomain | None = None

    @property
    def address(self) -> str:
        return domain_address(self.uri, self._name)

    async def _connect(self) -> None:
        await self._in_thread(self._connect_blocking, "connecting")

    def _connect_blocking(self) -> None:
        libvirt = import_libvirt()
        what = f"domain {self._name} on {self.uri}"
        try:
            domain = self._hub.connection(self.uri).lookupByName(self._name)
            if not domain.isActive():
                raise VmUnreachableError(f"{what} is not running")
            self._ram_bytes = int(domain.maxMemory()) * KIB
            xml = domain.XMLDesc(0)
            self._reporting = balloon_reporting(xml)
        except libvirt.libvirtError as err:
            raise _translate(err, what) from err
        self._has_balloon = self._reporting is not None
        kept = self._keep_stats_period and stats_period(xml) > 0
        if self._has_balloon and not kept:
            try:
                domain.setMemoryStatsPeriod(self._stats_period, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            except libvirt.libvirtError as err:
                log.warning("%s: guest statistics stay off: %s", what, err.get_error_message())
        elif not self._has_balloon:
            log.warning("%s: no virtio memballoon; only the footprint is watched", what)
        self._domain = domain
        self.pid = qemu_pid(self.uri, self._name, self._proc)

    async def _read_balloon(self) -> tuple[BalloonState | None, GuestStats | None]:
        stats = await self._in_thread(self._memory_stats, "memoryStats")
        if not self._has_balloon or self._ram_bytes is None:
            return None, None
        balloon = None
        if "actual" in stats:
            balloon = BalloonState(self._ram_bytes, stats["actual"] * KIB, self._reporting)
        return balloon, guest_stats(stats)

    def _memory_stats(self) -> dict[str, int]:
        libvirt = import_libvirt()
        domain = self._live_domain()
        try:
            # Also the liveness check: a domain that stopped fails here.
            return dict(domain.memoryStats())
        except libvirt.libvirtError as err:
            raise _translate(err, f"memory statistics of {self._name}") from err

    def _live_domain(self) -> libvirt.virDomain:
        if self._domain is None:
            raise VmUnreachableError(f"{self.address}: not connected")
        return self._domain

    async def _set_balloon(self, guest_bytes: int) -> None:
        await self._in_thread(lambda: self._set_memory(guest_bytes), "setMemoryFlags")

    def _set_memory(self, guest_bytes: int) -> None:
        libvirt = import_libvirt()
        try:
            self._live_domain().setMemoryFlags(guest_bytes // KIB, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as err:
            raise _translate(err, f"setting the balloon of {self._name}") from err

    async def close(self) -> None:
        """The connection belongs to the hub; the domain handle is just dropped."""
        self._domain = None


# -- turning reporting on --------------------------------------------------------------------


@dataclass(frozen=True)
class ReportingChange:
    domain: str
    changed: bool
    running: bool
    notes: tuple[str, ...]


def enable_reporting(
    uri: str, name: str, *, deflate_on_oom: bool = True, agent_channel: str | None = None
) -> ReportingChange:
    """Set `freePageReporting='on'` (and the rest of `enable_reporting_xml`) in a domain's
    persistent XML and define it again. A running domain keeps its present devices: the change
    applies from its next start."""
    libvirt = import_libvirt()
    hub = LibvirtHub()
    try:
        connection = hub.connection(uri)
        try:
            domain = connection.lookupByName(name)
        except libvirt.libvirtError as err:
            raise UsageError(
                f"no domain {name!r} at {uri}", hint=f"virsh -c {uri} list --all"
            ) from err
        try:
            if not domain.isPersistent():
                raise UsageError(
                    f"domain {name} is transient: it has no persistent XML to change",
                    hint="put <memballoon model='virtio' freePageReporting='on'/> in the XML it "
                    "is created from (`vmreclaim host launch-options --hypervisor libvirt`)",
                )
            edit = enable_reporting_xml(
                domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE),
                deflate_on_oom=deflate_on_oom,
                agent_channel=agent_channel,
            )
            if edit.changed:
                connection.defineXML(edit.xml)
            running = bool(domain.isActive())
        except libvirt.libvirtError as err:
            raise LibvirtError(
                f"cannot change domain {name}: {err.get_error_message() or err}",
                err.get_error_code(),
            ) from err
        return ReportingChange(name, edit.changed, running, edit.notes)
    finally:
        hub.close()
