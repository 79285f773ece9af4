"""The host end of the guest agents' channels: read each agent's reports, keep the latest.

Each VM's virtio-serial port (agent_protocol.PORT_NAME) is a unix socket on the host, where
QEMU listens (`-chardev socket,server=on,wait=off`, libvirt's `<channel type='unix'>`): the
daemon connects to it and reads. Which socket belongs to which VM: the configuration names
the sockets by globs (`agent = ["/run/vms/*.agent"]`) and a socket goes with the VM whose
address has the same stem, its file name without the suffix: /run/vms/db.agent with the QMP
socket /run/vms/db.qmp (or Cloud Hypervisor's /run/vms/db.sock, libvirt's domain db). When
several sockets share a stem, the one in the VM socket's directory wins; without one there,
the VM gets none.

The guest is untrusted, so reading it costs the daemon a bounded amount whatever the guest
sends: one task per channel reads without blocking anyone else; a line is at most
MAX_MESSAGE_BYTES (a longer one is skipped to its newline, never held); at most
`messages_per_s` lines a second are parsed (the rest are dropped and counted); and past
`bytes_per_s` the task stops reading for a while, so a flood fills the socket's buffers and
QEMU stops taking data from the guest: the backlog stays in the guest. Per channel the daemon
holds one latest report, its counters and asyncio's read buffer (it stops reading the socket
past 2 x READ_CHUNK; one read takes at most 256 KiB).

The other way, the daemon sends requests to release cold cache (asking.py decides when) on the
same socket. A write never waits: while more than MAX_UNSENT_BYTES wait in the socket's buffers
(QEMU stops taking the host's bytes while no process in the guest holds the port), the request
is not sent and fails as one the guest never answered. Answers come in with the reports, under
the same bounds; the link keeps the latest.

Cloud Hypervisor and Firecracker have no virtio-serial: there the agent connects over vsock to
the host's port VSOCK_PORT, and the VMM ("hybrid vsock") carries the connection to the host's
unix socket `<uds_path>_VSOCK_PORT`, where uds_path is the VM's vsock socket
(`--vsock cid=3,socket=PATH`, Firecracker's `PUT /vsock` `uds_path`) and where a process on the
host must listen (their docs/vsock.md, "guest-initiated connections": with no listener the VMM
resets the guest's connection). So for `agent_vsock = ["/run/vms/*.vsock"]` the daemon is the
server: a VsockLink listens beside each VM's vsock socket and pairs by that socket's stem
(/run/vms/db.vsock with the API socket /run/vms/db.sock). A new connection from the guest (an
agent restarted) replaces the old one, up to VSOCK_CONNECT_BURST connections and then one in
10 s: the guest, not the daemon, sets the pace of connections here. Reading, limits and
requests are the AgentLink's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from vmreclaim.agent_protocol import (
    DROP_REASONS,
    MAX_MESSAGE_BYTES,
    RATE_LIMITED,
    TOO_LONG,
    VSOCK_PORT,
    AgentReport,
    BadMessage,
    LineSplitter,
    ReleaseAnswer,
    ReleaseRequest,
    encode_request,
    parse_guest_message,
)
from vmreclaim.host.asking import RESULTS, Outcome
from vmreclaim.host.fleet import discover
from vmreclaim.host.records import AgentStatus, Exchange, VmObservation

log = logging.getLogger(__name__)

READ_CHUNK = 16 << 10
CONNECT_TIMEOUT_S = 2.0
MAX_BACKOFF_S = 30.0
MAX_UNSENT_BYTES = 4 * MAX_MESSAGE_BYTES
"""Requests waiting unsent beyond this mean the guest is not reading: send no more."""
VSOCK_CONNECTS_PER_S = 0.1
VSOCK_CONNECT_BURST = 3
"""Connections a guest may make over vsock: an agent connects once, and again only when it or
the daemon restarts; past this a connection is closed at once (the agent tries again at a
later tick), so a guest connecting in a loop costs no log lines and little work."""


@dataclass(frozen=True)
class ChannelLimits:
    """What one guest may cost the daemon."""

    messages_per_s: float = 5.0
    """Lines parsed per second; an agent sends one per tick (2 s by default)."""
    message_burst: int = 10
    bytes_per_s: float = 64 << 10
    """Bytes read per second before the channel is left unread for a while."""
    byte_burst: int = 64 << 10


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = now

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = max(self._at, now)

    def try_take(self, amount: float, now: float) -> bool:
        """Take `amount` if there is that much; False (nothing taken) otherwise."""
        self._refill(now)
        if self._tokens < amount:
            return False
        self._tokens -= amount
        return True

    def take_owing(self, amount: float, now: float) -> float:
        """Take `amount`, into debt if need be; the seconds until the debt is paid."""
        self._refill(now)
        self._tokens -= amount
        return max(0.0, -self._tokens / self.rate)


class AgentLink:
    """One agent channel: connects to its socket, reads reports until the daemon closes it."""

    def __init__(
        self,
        path: str,
        *,
        limits: ChannelLimits = ChannelLimits(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.connected = False
        self.report: AgentReport | None = None
        self.received_at: float | None = None
        self.reports = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.answer: ReleaseAnswer | None = None
        self.requests = dict.fromkeys(RESULTS, 0)
        self.last_request: Exchange | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._limits = limits
        self._clock = clock
        now = clock()
        self._messages = TokenBucket(limits.messages_per_s, limits.message_burst, now)
        self._bytes = TokenBucket(limits.bytes_per_s, limits.byte_burst, now)
        self._splitter = LineSplitter(MAX_MESSAGE_BYTES)
        self._task: asyncio.Task[None] | None = None
        self._said: set[str] = set()  # drop reasons already logged for this channel
        self._problem: str | None = None

    @property
    def stem(self) -> str:
        return Path(self.path).stem

    @property
    def directory(self) -> str:
        return str(Path(self.path).parent)

    def status(self) -> AgentStatus:
        age = None if self.received_at is None else max(0.0, self._clock() - self.received_at)
        return AgentStatus(
            path=self.path,
            connected=self.connected,
            report=self.report,
            report_age_s=age,
            reports=self.reports,
            dropped=tuple(self.dropped.items()),
            answer=self.answer,
            requests=tuple(self.requests.items()),
            last_request=self.last_request,
        )

    def send(self, request: ReleaseRequest) -> bool:
        """Send a request without waiting; False when it cannot go now (not connected, or the
        guest does not read what was sent before)."""
        writer = self._writer
        if writer is None or not self.connected or writer.is_closing():
            return False
        if writer.transport.get_write_buffer_size() > MAX_UNSENT_BYTES:
            return False
        writer.write(encode_request(request))
        self.last_request = Exchange(
            request.id, request.release_bytes, request.deadline_s, "pending", None, "", None
        )
        return True

    def ended(self, outcome: Outcome) -> None:
        """Count a request that ended and keep it for the view."""
        self.requests[outcome.result] = self.requests.get(outcome.result, 0) + 1
        answer = outcome.answer
        self.last_request = Exchange(
            outcome.id,
            outcome.release_bytes,
            self.last_request.deadline_s
            if self.last_request and self.last_request.id == outcome.id
            else 0.0,
            outcome.result,
            answer.released_bytes if answer else None,
            answer.refused if answer else "",
            outcome.seen_bytes,
        )

    def receive(self, data: bytes) -> None:
        """Take in bytes read from the channel: keep the last valid report, count the rest."""
        now = self._clock()
        lines, too_long = self._splitter.feed(data)
        if too_long:
            self._drop(TOO_LONG, f"a line over {MAX_MESSAGE_BYTES} bytes", too_long)
        for line in lines:
            if not line.strip():
                continue  # the newline an agent sends after a torn write
            if not self._messages.try_take(1, now):
                self._drop(RATE_LIMITED, f"over {self._limits.messages_per_s:g} messages/s")
                continue
            try:
                message = parse_guest_message(line)
            except BadMessage as err:
                self._drop(err.reason, err.detail)
                continue
            if isinstance(message, ReleaseAnswer):
                self.answer = message
                continue
            self.report = message
            self.received_at = now
            self.reports += 1

    def _drop(self, reason: str, detail: str, count: int = 1) -> None:
        self.dropped[reason] += count
        if reason not in self._said:
            self._said.add(reason)
            log.warning(
                "agent channel %s: dropping messages (%s: %s); counted in "
                "vmreclaim_vm_agent_messages_dropped_total, not logged again",
                self.path,
                reason,
                detail,
            )

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        self.connected = False

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(self.path, limit=READ_CHUNK), CONNECT_TIMEOUT_S
                )
            except (OSError, asyncio.TimeoutError) as err:
                failures += 1
                self._trouble(f"cannot connect: {getattr(err, 'strerror', None) or repr(err)}")
                await asyncio.sleep(min(MAX_BACKOFF_S, 2.0 ** (failures - 1)))
                continue
            failures = 0
            await self._session(reader, writer, "the VM closed it")
            await asyncio.sleep(1.0)

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ended: str
    ) -> None:
        """Read one connection until it ends (`ended` says how, when it does by itself)."""
        self._writer = writer
        self.connected = True
        self._problem = None
        log.info("agent channel %s: connected", self.path)
        try:
            await self._read(reader)
            self._trouble(ended)
        except OSError as err:
            self._trouble(f"read failed: {err.strerror or err!r}")
        except Exception:  # a bug here must cost this channel a reconnect, nothing more
            log.exception("agent channel %s: reading failed", self.path)
        finally:
            if self._writer is writer:  # not replaced by a newer connection meanwhile
                self.connected = False
                self._writer = None
            writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            data = await reader.read(READ_CHUNK)
            if not data:
                return
            self.receive(data)
            wait = self._bytes.take_owing(len(data), self._clock())
            if wait > 0:
                # Not reading is the back-pressure: the socket fills, QEMU stops taking the
                # guest's writes, and the guest's flood waits in the guest.
                await asyncio.sleep(wait)

    @property
    def awaited(self) -> bool:
        """No report yet, and nothing has gone wrong: one is worth waiting for."""
        return self.report is None and self._problem is None

    def _trouble(self, problem: str) -> None:
        if problem != self._problem:
            log.warning("agent channel %s: %s", self.path, problem)
        self._problem = problem


class VsockLink(AgentLink):
    """One agent's vsock channel: listens at `<uds_path>_<port>` for the connection the VMM
    makes when the guest connects to the host's `port`, and reads it as an AgentLink does."""

    def __init__(
        self,
        uds_path: str,
        *,
        port: int = VSOCK_PORT,
        limits: ChannelLimits = ChannelLimits(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(f"{uds_path}_{port}", limits=limits, clock=clock)
        self.uds_path = uds_path
        self._reading: asyncio.Task[None] | None = None  # the current connection's session
        self._connects = TokenBucket(VSOCK_CONNECTS_PER_S, VSOCK_CONNECT_BURST, clock())
        self.refused = 0
        """Connections closed at once: the guest connected too often."""

    @property
    def stem(self) -> str:
        return Path(self.uds_path).stem

    @property
    def directory(self) -> str:
        return str(Path(self.uds_path).parent)

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                # A stale socket file at the path (a daemon that died) is removed first by
                # asyncio (create_unix_server), a live one too: so never bind over a socket
                # another process listens on (`host run` while `top --no-daemon` starts).
                if listened_on(self.path):
                    raise OSError(errno.EADDRINUSE, "another process listens there")
                server = await asyncio.start_unix_server(
                    self._accepted, path=self.path, limit=READ_CHUNK, backlog=1
                )
                listening = os.stat(self.path)
            except OSError as err:
                failures += 1
                self._trouble(f"cannot listen: {err.strerror or err!r}")
                await asyncio.sleep(min(MAX_BACKOFF_S, 2.0 ** (failures - 1)))
                continue
            log.info("agent channel %s: listening for the guest of %s", self.path, self.uds_path)
            try:
                # Serving since start_unix_server; not serve_forever(), which on cancellation
                # waits for every open connection to close (Server.wait_closed(), Python
                # 3.12.1+) while the one reading the guest is only cancelled below: a hang.
                await asyncio.get_running_loop().create_future()
            finally:
                server.close()
                reading, self._reading = self._reading, None
                if reading is not None:
                    reading.cancel()
                    await asyncio.wait([reading])
                _remove_socket(self.path, listening)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A connection from the guest; one already open is the agent's from before it
        restarted (or a guest connecting again and again): the newest is read."""
        if not self._connects.try_take(1, self._clock()):
            self.refused += 1
            if self.refused == 1:
                log.warning(
                    "agent channel %s: the guest connects more often than %g times a minute; "
                    "the extra connections are closed, not logged again",
                    self.path,
                    VSOCK_CONNECTS_PER_S * 60,
                )
            writer.close()
            return
        previous, self._reading = self._reading, asyncio.current_task()
        if previous is not None and not previous.done():
            log.info(
                "agent channel %s: the guest connected again; reading the new connection",
                self.path,
            )
            previous.cancel()
            await asyncio.wait([previous])
        self._splitter = LineSplitter(MAX_MESSAGE_BYTES)  # no half line of the old connection
        await self._session(reader, writer, "the guest closed it")


SO_ACCEPTCON = 1 << 16
"""The flag /proc/net/unix shows on a listening socket (__SO_ACCEPTCON, include/linux/net.h;
unix_seq_show() in net/unix/af_unix.c)."""


def listened_on(path: str, net_unix: Path = Path("/proc/net/unix")) -> bool:
    """Whether a unix socket of this network namespace listens at `path`. Read from
    /proc/net/unix rather than by connecting, which the listener would take for its guest."""
    try:
        lines = net_unix.read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split(maxsplit=7)  # Num RefCount Protocol Flags Type St Inode Path
        if len(fields) == 8 and fields[7] == path and int(fields[3], 16) & SO_ACCEPTCON:
            return True
    return False


def _remove_socket(path: str, made: os.stat_result) -> None:
    """Remove the socket file this daemon made at `path`, not one made there since."""
    with contextlib.suppress(OSError):
        now = os.stat(path)
        if (now.st_dev, now.st_ino) == (made.st_dev, made.st_ino):
            os.unlink(path)


def vm_stem(address: str) -> tuple[str, str | None] | None:
    """(stem, directory or None) of a VM's address, to pair it with its agent's socket."""
    if address.startswith("libvirt:"):
        if "#" not in address:
            return None
        return address.rpartition("#")[2], None
    for prefix in ("cloud-hypervisor:", "firecracker:"):
        if address.startswith(prefix):
            address = address[len(prefix) :]
    path = Path(address)
    return path.stem, str(path.parent)


class AgentChannels:
    """Every agent channel the configuration names, each read by its own task."""

    def __init__(
        self,
        patterns: Sequence[str],
        *,
        vsock: Sequence[str] = (),
        limits: ChannelLimits = ChannelLimits(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.patterns = tuple(patterns)
        self.vsock = tuple(vsock)
        """The VMs' vsock sockets (uds_path), or globs: a VsockLink listens beside each."""
        self._limits = limits
        self._clock = clock
        self._links: dict[str, AgentLink] = {}

    def __bool__(self) -> bool:
        return bool(self.patterns or self.vsock)

    @property
    def links(self) -> tuple[AgentLink, ...]:
        return tuple(self._links.values())

    async def refresh(self) -> None:
        """Match the globs again: read new sockets, forget those whose file went away."""
        if not self:
            return
        wanted: dict[str, Callable[[], AgentLink]] = {}
        for path in discover(self.patterns) if self.patterns else ():
            wanted[path] = functools.partial(
                AgentLink, path, limits=self._limits, clock=self._clock
            )
        for uds in discover(self.vsock) if self.vsock else ():
            if uds.endswith(f"_{VSOCK_PORT}"):
                continue  # a listener of ours, matched by a wide glob
            wanted[f"{uds}_{VSOCK_PORT}"] = functools.partial(
                VsockLink, uds, limits=self._limits, clock=self._clock
            )
        gone = [path for path in self._links if path not in wanted]
        for path in gone:
            log.info("agent channel %s is gone: forgetting it", path)
        await asyncio.gather(*(self._links.pop(path).close() for path in gone))
        for path, make in wanted.items():
            if path not in self._links:
                link = make()
                self._links[path] = link
                link.start()

    def link_for(self, address: str) -> AgentLink | None:
        key = vm_stem(address)
        if key is None:
            return None
        stem, directory = key
        candidates = [link for link in self._links.values() if link.stem == stem]
        beside = [link for link in candidates if link.directory == directory]
        if len(beside) == 1:
            return beside[0]
        return candidates[0] if len(candidates) == 1 and not beside else None

    def attach(self, vms: Sequence[VmObservation]) -> tuple[VmObservation, ...]:
        """The observations, each with its agent's channel where it has one."""
        if not self._links:
            return tuple(vms)
        attached = []
        for vm in vms:
            link = self.link_for(vm.sample.address)
            attached.append(vm if link is None else replace(vm, agent=link.status()))
        return tuple(attached)

    def awaited(self, vms: Sequence[VmObservation]) -> bool:
        """Whether some of these VMs' agents may still send their first report."""
        for vm in vms:
            link = self.link_for(vm.sample.address)
            if link is not None and link.awaited:
                return True
        return False

    async def close(self) -> None:
        links, self._links = list(self._links.values()), {}
        with contextlib.suppress(Exception):
            await asyncio.gather(*(link.close() for link in links))
