"""QEMU over QMP: one asyncio connection per VM through the official `qemu.qmp` library.

The QEMU process is found from the QMP socket's peer credentials (SO_PEERCRED: the kernel
records the pid of the process that called listen()), so `--qmp SOCKET` is all a user gives.
Its footprint is the base's (process.py); the balloon from `query-balloon` at connect and
BALLOON_CHANGE events after; the guest's own statistics from the balloon device's
`guest-stats` property once `guest-stats-polling-interval` is set.

A QMP round trip through qemu.qmp is most of a poll's CPU time (about 100 us here), so
`guest-stats` is read only when QEMU can hold a newer report than the one we have (see
`_stats_due`); a poll in between answers from the QMP connection's state, the balloon's last
event and the footprint, without a round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qemu.qmp import EventListener, Message, QMPClient, Runstate

from vmreclaim.errors import QmpCommandError, QmpError, VmHungError, VmUnreachableError
from vmreclaim.host.backends.base import DEFAULT_TIMEOUT, Backend, StatKeys, guest_stats_from
from vmreclaim.host.backends.process import EXACT_FOOTPRINT_EVERY, peer_pid
from vmreclaim.host.config import STATS_PERIOD_S
from vmreclaim.host.records import BalloonState, GuestStats

log = logging.getLogger(__name__)

# QEMU keeps every statistic the guest has not sent at -1, printed as an unsigned 64-bit int.
_STAT_KEYS = StatKeys(
    total="stat-total-memory",
    free="stat-free-memory",
    available="stat-available-memory",
    cache="stat-disk-caches",
    major_faults="stat-major-faults",
    minor_faults="stat-minor-faults",
    unknown=(1 << 64) - 1,
)
# Where -device puts devices: with an id= under peripheral, without one under peripheral-anon.
_DEVICE_CONTAINERS = ("/machine/peripheral", "/machine/peripheral-anon")
_BALLOON_TYPES = ("virtio-balloon-pci", "virtio-balloon-ccw", "virtio-balloon-device")
_EARLY_POLL_S = 0.1
"""A poll this much ahead of a due time still counts as on time: polls a period apart jitter by
a few milliseconds, and a read missed that way would wait a whole poll interval more."""


def parse_guest_stats(value: Any) -> GuestStats | None:
    """The `guest-stats` property; None when it is not the expected shape."""
    if not isinstance(value, dict) or not isinstance(value.get("stats"), dict):
        return None
    updated = value.get("last-update")
    updated_at = float(updated) if isinstance(updated, (int, float)) else 0.0
    return guest_stats_from(value["stats"], _STAT_KEYS, updated_at)


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


class QuietClient(QMPClient):
    """qemu.qmp's client, except that its message hooks (`_cb_outbound`, `_cb_inbound`, the
    library's documented filter points) format a message only when debug logging is on. The
    library's own pretty-print every message with json.dumps(indent=2), pure-Python JSON, before
    the logger drops it: measured, that was half our CPU time per poll."""

    def _cb_outbound(self, msg: Message) -> Message:
        if self.logger.isEnabledFor(logging.DEBUG):
            return super()._cb_outbound(msg)
        return msg

    def _cb_inbound(self, msg: Message) -> Message:
        if self.logger.isEnabledFor(logging.DEBUG):
            return super()._cb_inbound(msg)
        return msg


class QemuVm(Backend):
    """A `VmBackend` for one QEMU listening on a unix QMP socket."""

    def __init__(
        self,
        socket_path: Path | str,
        *,
        pid: int | None = None,
        proc: Path = Path("/proc"),
        timeout: float = DEFAULT_TIMEOUT,
        stats_interval: int = STATS_PERIOD_S,
        keep_stats_period: bool = False,
        exact_footprint_every: float = EXACT_FOOTPRINT_EVERY,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.socket_path = Path(socket_path)
        super().__init__(
            self.socket_path.stem,
            proc=proc,
            timeout=timeout,
            exact_footprint_every=exact_footprint_every,
        )
        self.pid = pid
        self._stats_interval = stats_interval
        """Seconds between the guest's reports (QEMU's guest-stats-polling-interval)."""
        self._keep_stats_period = keep_stats_period
        """Leave a period the VM already has (an onlooker such as `top`), setting
        `stats_interval` only where statistics are off; else (the daemon) set it."""
        self._clock = clock
        self._wall_clock = wall_clock
        self._client: QMPClient | None = None
        self._balloon_path: str | None = None
        self._balloon: BalloonWatcher | None = None
        self._guest: GuestStats | None = None
        self._guest_read_at: float | None = None
        """When `guest-stats` was last read (monotonic); None before the first read."""

    @property
    def address(self) -> str:
        return str(self.socket_path)

    async def _connect(self) -> None:
        sock = await self._open_socket()
        if self.pid is None:
            self.pid = peer_pid(sock)
        client = QuietClient(f"vmreclaim-host-{self._name}")
        try:
            await self._bounded(
                client.connect(sock),
                "the QMP greeting",
                hint="a QMP monitor serves one client at a time and keeps the others waiting: "
                "is another tool (vmreclaim host run, virsh) holding it? Otherwise QEMU is "
                "stopped or stuck",
            )
        except BaseException as err:
            sock.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), self.timeout)
            if not isinstance(err, Exception) or isinstance(err, VmHungError):
                raise  # cancellation, Ctrl-C, SIGTERM go on as they are; a hang says so
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
            await self._bounded(
                asyncio.get_running_loop().sock_connect(sock, str(self.socket_path)),
                "connecting",
            )
        except OSError as err:
            sock.close()
            raise VmUnreachableError(
                f"cannot connect to QMP socket {self.socket_path}: {err.strerror or err!r}",
                hint="is the VM running? QEMU makes the socket with "
                "-qmp unix:PATH,server=on,wait=off",
            ) from err
        except BaseException:
            sock.close()
            raise
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
            return
        assert self._client is not None
        # Listen first, then query: no change can fall between the two.
        watcher = BalloonWatcher(self._ram_bytes)
        self._client.register_listener(watcher)
        watcher.actual_bytes = int((await self._execute("query-balloon"))["actual"])
        self._balloon = watcher
        self._has_balloon = True
        with contextlib.suppress(QmpCommandError):
            reporting = await self._qom_get("free-page-reporting")
            self._reporting = reporting if isinstance(reporting, bool) else None
        if self._keep_stats_period:
            with contextlib.suppress(QmpCommandError):
                period = await self._qom_get("guest-stats-polling-interval")
                if isinstance(period, int) and period > 0:
                    self._stats_interval = period
                    return
        await self._execute(
            "qom-set",
            {
                "path": self._balloon_path,
                "property": "guest-stats-polling-interval",
                "value": self._stats_interval,
            },
        )

    async def _qom_get(self, prop: str) -> Any:
        return await self._execute("qom-get", {"path": self._balloon_path, "property": prop})

    async def _execute(self, command: str, arguments: dict[str, object] | None = None) -> Any:
        from qemu.qmp import ExecuteError, QMPError

        if self._client is None:
            raise VmUnreachableError(f"{self.socket_path}: not connected")
        try:
            return await self._bounded(
                self._client.execute(command, arguments), f"QMP command {command!r}"
            )
        except ExecuteError as err:
            raise QmpCommandError(command, err.error_class, err.error.error.desc) from err
        except (QMPError, OSError, EOFError) as err:
            raise VmUnreachableError(
                f"{self._name}: QMP command {command!r} on {self.socket_path} failed: {err!r}"
            ) from err

    async def _read_balloon(self) -> tuple[BalloonState | None, GuestStats | None]:
        if self._balloon is None or self._ram_bytes is None:
            return None, None
        balloon = BalloonState(self._ram_bytes, self._balloon.actual_bytes, self._reporting)
        if self._stats_due():
            # Also the liveness check: a VM that went away or hangs fails here.
            self._guest = parse_guest_stats(await self._qom_get("guest-stats"))
            self._guest_read_at = self._clock()
        elif self._client is None or self._client.runstate != Runstate.RUNNING:
            # qemu.qmp's reader sees the monitor's EOF at once; a hung QEMU is caught at the
            # next read, at most `stats_interval` seconds on.
            raise VmUnreachableError(f"{self._name}: QMP connection to {self.socket_path} lost")
        return balloon, self._guest

    def _stats_due(self) -> bool:
        """Whether QEMU may hold a newer report than ours.

        QEMU asks the guest every `stats_interval` (P) seconds, counted from its last answer,
        and stamps each answer with time() in whole seconds: after a report stamped `u` the
        next cannot come before `u + P`. So `guest-stats` is read
        - at least every P seconds (a guest that never reported, one that stopped, and the
          bound on how long a hung QEMU goes unnoticed);
        - at every poll from `u + P` until the next report has come, for as long as one is
          expected (up to `u + 2P + 1`).
        A report is thus replaced at the first poll after its successor arrives, and is at most
        P + 1 s old plus the guest's answer time when a poll sees it (the stamp drops up to
        1 s): 2 s at P = 1, exactly as when read at every poll, and every poll reads at P = 1
        and a 1 s interval; at P = 2 one poll in two reads, and reports are up to 3 s old.
        """
        if self._guest_read_at is None:
            return True
        period = self._stats_interval - _EARLY_POLL_S
        if self._clock() >= self._guest_read_at + period:
            return True
        stamp = self._guest.updated_at if self._guest is not None else None
        if not stamp:
            return False
        return stamp + period <= self._wall_clock() < stamp + 2 * self._stats_interval + 1

    async def _set_balloon(self, guest_bytes: int) -> None:
        await self._execute("balloon", {"value": guest_bytes})

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), self.timeout)
