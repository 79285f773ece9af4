"""QEMU over QMP: one asyncio connection per VM through the official `qemu.qmp` library.

The QEMU process is found from the QMP socket's peer credentials (SO_PEERCRED: the kernel
records the pid of the process that called listen()), so `--qmp SOCKET` is all a user gives.
Its footprint comes from vmreclaim.qemu.footprint; the balloon from `query-balloon`; the guest's
own statistics from the balloon device's `guest-stats` property once
`guest-stats-polling-interval` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qemu.qmp import EventListener, Message

from vmreclaim.errors import QmpCommandError, QmpError, VmUnreachableError
from vmreclaim.host.records import BalloonState, GuestStats, VmSample
from vmreclaim.qemu.footprint import Footprint, ProcessFootprint

if TYPE_CHECKING:
    from qemu.qmp import QMPClient

log = logging.getLogger(__name__)

# QEMU keeps every statistic the guest has not sent at -1, printed as an unsigned 64-bit int.
_UNKNOWN_STAT = (1 << 64) - 1
# Where -device puts devices: with an id= under peripheral, without one under peripheral-anon.
_DEVICE_CONTAINERS = ("/machine/peripheral", "/machine/peripheral-anon")
_BALLOON_TYPES = ("virtio-balloon-pci", "virtio-balloon-ccw", "virtio-balloon-device")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def peer_pid(sock: socket.socket) -> int:
    """The pid of the process at the other end of a connected unix socket."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, _uid, _gid = struct.unpack("3i", creds)
    return int(pid)


def parse_guest_stats(value: Any) -> GuestStats | None:
    """The `guest-stats` property; None when it is not the expected shape."""
    if not isinstance(value, dict) or not isinstance(value.get("stats"), dict):
        return None
    stats: dict[str, Any] = value["stats"]

    def stat(key: str) -> int | None:
        number = stats.get(key)
        if not isinstance(number, int) or number < 0 or number == _UNKNOWN_STAT:
            return None
        return number

    updated = value.get("last-update")
    return GuestStats(
        updated_at=float(updated) if isinstance(updated, (int, float)) else 0.0,
        total_bytes=stat("stat-total-memory"),
        free_bytes=stat("stat-free-memory"),
        available_bytes=stat("stat-available-memory"),
        cache_bytes=stat("stat-disk-caches"),
        major_faults=stat("stat-major-faults"),
        minor_faults=stat("stat-minor-faults"),
    )


def find_balloon(listings: dict[str, list[dict[str, Any]]]) -> str | None:
    """The QOM path of the balloon device, from `qom-list` of each device container."""
    for container, children in listings.items():
        for child in children:
            kind = str(child.get("type", ""))
            if kind.startswith("child<") and kind[6:-1] in _BALLOON_TYPES:
                return f"{container}/{child['name']}"
    return None


class BalloonWatcher(EventListener):
    """Keeps the balloon's latest `actual` from QEMU's BALLOON_CHANGE events, so a poll needs no
    `query-balloon` (half the QMP traffic of a cycle). QEMU rate-limits the event to one a
    second and always delivers the last value. Unlike the base class it keeps no history and no
    queue: a daemon's listener must not grow for ever."""

    def __init__(self, actual_bytes: int) -> None:
        super().__init__(("BALLOON_CHANGE",))
        self.actual_bytes = actual_bytes

    async def put(self, event: Message) -> None:
        if self.accept(event):
            data = event.get("data")
            if isinstance(data, dict) and isinstance(data.get("actual"), int):
                self.actual_bytes = data["actual"]


class FootprintSampler:
    """A QEMU's footprint every cycle, at a fraction of smaps' cost.

    /proc/PID/smaps costs the kernel a walk of every mapping (about 8,000 lines and 7 ms of
    CPU for a small paused QEMU here), which polled once a second for 50 VMs is 30 % of a CPU.
    So the exact guest-RAM figure is read every `exact_every` seconds (the first time at once,
    then at a random phase so VMs spread out), and in between the guest RAM moves with the RSS
    from /proc/PID/statm (one short line): whatever the process gains or loses between two
    exact readings is guest RAM, to within QEMU's own small allocations.
    """

    def __init__(
        self,
        pid: int,
        ram_bytes: int | None,
        proc: Path,
        *,
        exact_every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._exact_sampler = ProcessFootprint(pid, ram_bytes, proc)
        self._statm = proc / str(pid) / "statm"
        self._exact_every = exact_every
        self._clock = clock
        self._exact: Footprint | None = None
        self._next_exact = 0.0
        self.exact_at: float | None = None
        """Wall-clock time of the last exact reading."""

    def sample(self) -> Footprint:
        """Raises ProcessLookupError when the process is gone."""
        now = self._clock()
        if self._exact is None or now >= self._next_exact:
            self._exact = self._exact_sampler.sample()
            self.exact_at = self._exact.timestamp
            first = self._next_exact == 0.0
            self._next_exact = now + self._exact_every * (random.random() if first else 1.0)
            return self._exact
        try:
            rss = int(self._statm.read_text().split()[1]) * _PAGE_SIZE
        except FileNotFoundError as err:
            raise ProcessLookupError(f"{self._statm} is gone") from err
        exact = self._exact
        guest = exact.guest_ram_bytes
        if guest is not None:
            guest = min(rss, max(0, guest + rss - exact.rss_bytes))
        return Footprint(time.time(), rss, guest)


class QemuVm:
    """A `VmBackend` for one QEMU listening on a unix QMP socket."""

    def __init__(
        self,
        socket_path: Path | str,
        *,
        pid: int | None = None,
        proc: Path = Path("/proc"),
        timeout: float = 5.0,
        stats_interval: int = 1,
        exact_footprint_every: float = 30.0,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.pid = pid
        self._proc = proc
        self._timeout = timeout
        self._stats_interval = stats_interval
        self._exact_footprint_every = exact_footprint_every
        self._client: QMPClient | None = None
        self._name = self.socket_path.stem
        self._ram_bytes: int | None = None
        self._balloon_path: str | None = None
        self._reporting: bool | None = None
        self._footprint: FootprintSampler | None = None
        self._balloon: BalloonWatcher | None = None

    @property
    def address(self) -> str:
        return str(self.socket_path)

    @property
    def name(self) -> str:
        return self._name

    async def connect(self) -> None:
        from qemu.qmp import QMPClient

        sock = await self._open_socket()
        if self.pid is None:
            self.pid = peer_pid(sock)
        client = QMPClient(f"vmreclaim-host-{self._name}")
        try:
            await asyncio.wait_for(client.connect(sock), self._timeout)
        except (Exception, asyncio.CancelledError) as err:
            sock.close()
            with contextlib.suppress(Exception):
                await client.disconnect()
            cause = getattr(err, "exc", None) or err
            raise QmpError(
                f"{self.socket_path} did not answer as a QMP monitor: {cause!r}",
                hint="point --qmp at a socket made by QEMU's -qmp unix:PATH,server=on,wait=off; "
                "a monitor serves one client at a time, so no other tool may hold it",
            ) from err
        self._client = client
        await self._learn_machine()

    async def _open_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_connect(sock, str(self.socket_path)),
                self._timeout,
            )
        except (OSError, TimeoutError) as err:
            sock.close()
            reason = err.strerror if isinstance(err, OSError) and err.strerror else repr(err)
            raise VmUnreachableError(
                f"cannot connect to QMP socket {self.socket_path}: {reason}",
                hint="is the VM running? QEMU makes the socket with "
                "-qmp unix:PATH,server=on,wait=off",
            ) from err
        return sock

    async def _learn_machine(self) -> None:
        name = await self._execute("query-name")
        if isinstance(name, dict) and name.get("name"):
            self._name = str(name["name"])
        summary = await self._execute("query-memory-size-summary")
        self._ram_bytes = int(summary["base-memory"]) + int(summary.get("plugged-memory", 0))
        listings: dict[str, list[dict[str, Any]]] = {}
        for container in _DEVICE_CONTAINERS:
            with contextlib.suppress(QmpCommandError):
                listings[container] = await self._execute("qom-list", {"path": container})
        self._balloon_path = find_balloon(listings)
        if self._balloon_path is None:
            log.warning("%s: no virtio-balloon device; only the footprint is watched", self._name)
        else:
            assert self._client is not None
            # Listen first, then query: no change can fall between the two.
            watcher = BalloonWatcher(self._ram_bytes)
            self._client.register_listener(watcher)
            watcher.actual_bytes = int((await self._execute("query-balloon"))["actual"])
            self._balloon = watcher
            with contextlib.suppress(QmpCommandError):
                reporting = await self._qom_get("free-page-reporting")
                self._reporting = reporting if isinstance(reporting, bool) else None
            await self._execute(
                "qom-set",
                {
                    "path": self._balloon_path,
                    "property": "guest-stats-polling-interval",
                    "value": self._stats_interval,
                },
            )
        if self.pid is not None:
            self._footprint = FootprintSampler(
                self.pid, self._ram_bytes, self._proc, exact_every=self._exact_footprint_every
            )

    async def _qom_get(self, prop: str) -> Any:
        return await self._execute("qom-get", {"path": self._balloon_path, "property": prop})

    async def _execute(self, command: str, arguments: dict[str, object] | None = None) -> Any:
        from qemu.qmp import ExecuteError, QMPError

        if self._client is None:
            raise VmUnreachableError(f"{self.socket_path}: not connected")
        try:
            return await asyncio.wait_for(self._client.execute(command, arguments), self._timeout)
        except ExecuteError as err:
            raise QmpCommandError(command, err.error_class, err.error.error.desc) from err
        except (QMPError, OSError, EOFError, TimeoutError) as err:
            raise VmUnreachableError(
                f"{self._name}: QMP command {command!r} on {self.socket_path} failed: {err!r}"
            ) from err

    async def sample(self) -> VmSample:
        balloon = None
        guest = None
        if self._balloon is not None and self._ram_bytes is not None:
            balloon = BalloonState(self._ram_bytes, self._balloon.actual_bytes, self._reporting)
            # Also the liveness check: a VM that went away fails here.
            guest = parse_guest_stats(await self._qom_get("guest-stats"))
        return VmSample(
            name=self._name,
            address=self.address,
            pid=self.pid,
            footprint=self._sample_footprint(),
            balloon=balloon,
            guest=guest,
        )

    def _sample_footprint(self) -> Footprint | None:
        if self._footprint is None:
            return None
        try:
            return self._footprint.sample()
        except ProcessLookupError as err:
            raise VmUnreachableError(f"{self._name}: QEMU process {self.pid} is gone") from err
        except PermissionError:
            # Another user's QEMU: QMP works, /proc/PID/smaps does not.
            log.debug("%s: cannot read /proc/%s", self._name, self.pid)
            return None

    async def set_balloon_target(self, guest_bytes: int) -> None:
        await self._execute("balloon", {"value": guest_bytes})

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), self._timeout)
