"""The agent's reports to the host: one line per tick on a virtio-serial port, never blocking;
and the host's requests to release cold cache, read from the same port without waiting.

The host adds the port (`vmreclaim host launch-options`); a guest without it reports nothing
and runs as before. The port is /dev/virtio-ports/PORT_NAME where udev made that link, else the
/dev/vportNpM whose /sys/class/virtio-ports/vportNpM/name is PORT_NAME (guests without udev).

A virtio-serial write blocks while no one holds the host's end (virtio_console.c:
wait_port_writable() waits for host_connected), and so does one the host does not read. The
port is therefore opened O_NONBLOCK: such a write fails with EAGAIN, and that report is dropped
(its sequence number is skipped, so the host sees the gap). The tick never waits on the host.
The kernel lets one process at a time open a port (EBUSY otherwise); the agent keeps it open,
and opens it again at a later tick if that fails or the port goes away (ENODEV: unplugged).

Reading: the port is opened for reading and writing with the same O_NONBLOCK, and each tick
reads at most MAX_READ_BYTES of what the host sent (EAGAIN: nothing; 0: no host on the other
end, port_fops_read() in virtio_console.c). The host's lines go through the same LineSplitter
and parser as the host's own reading of the guest, and only the latest valid request of a tick
is kept: the host has at most one out per VM, and a newer one supersedes an older. Bytes that
arrive while no process holds the port are discarded by the guest kernel (in_intr()), so a
request never waits for an agent that starts later. A FIFO (`--channel` pointing at one, and
the tests' stand-in) is one-way: the agent only writes to it.

Cloud Hypervisor and Firecracker have no virtio-serial; their guest channel is virtio-vsock
(virtio device id 19, VIRTIO_ID_VSOCK, which `find_vsock` looks for under /sys/bus/virtio).
There the agent connects an AF_VSOCK stream to the host, CID 2 (VMADDR_CID_HOST), port
VSOCK_PORT, and the VMM carries it to the unix socket `<uds_path>_VSOCK_PORT` where `host run`
listens (their docs/vsock.md, "guest-initiated connections"; without a listener the VMM resets
the connection). The socket is non-blocking like the port: connect() returns EINPROGRESS and
the tick does not wait for it (a report sent before it completes is dropped); a write the host
does not take fails with EAGAIN and is dropped; a refused or reset connection, or the host
closing it (a read of 0 bytes), closes the socket and a later tick connects again. The same
lines go both ways. The socket is made by a function the caller may replace: these machines
have no /dev/vhost-vsock, so the tests connect an AF_UNIX stream instead, to a listener at the
path the host would listen on; AF_VSOCK itself is not exercised by them.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vmreclaim import __version__
from vmreclaim.agent_protocol import (
    MAX_MESSAGE_BYTES,
    PORT_NAME,
    VSOCK_PORT,
    AgentReport,
    BadMessage,
    LineSplitter,
    ReleaseAnswer,
    ReleaseRequest,
    encode_answer,
    encode_report,
    parse_request,
)
from vmreclaim.guest.release import cold_bytes

if TYPE_CHECKING:
    from vmreclaim.guest.daemon import TickReport

log = logging.getLogger(__name__)

MAX_READ_BYTES = 4 * MAX_MESSAGE_BYTES
"""What one tick reads from the host at most: a request takes about 90 bytes."""

VIRTIO_ID_VSOCK = 19
"""The virtio device id of a vsock device (include/uapi/linux/virtio_ids.h), which sysfs shows
as /sys/bus/virtio/devices/virtioN/device ("0x0013")."""
VMADDR_CID_HOST = 2
"""The host's address on vsock (linux/vm_sockets.h; socket.VMADDR_CID_HOST)."""


def vsock_socket() -> socket.socket:
    """A vsock stream socket (Linux only; socket.AF_VSOCK since Python 3.7)."""
    return socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)


@dataclass(frozen=True)
class Vsock:
    """Where the agent connects when its channel is vsock: `port` of the host."""

    port: int = VSOCK_PORT
    make_socket: Callable[[], socket.socket] = vsock_socket
    """Makes the unconnected socket; tests give an AF_UNIX one."""
    address: str | tuple[str, int] | None = None
    """What the socket connects to; None: (VMADDR_CID_HOST, port). Tests give a unix path, or
    a TCP address to see connect() complete after EINPROGRESS as it does on vsock."""

    @property
    def target(self) -> str | tuple[str, int] | tuple[int, int]:
        return (VMADDR_CID_HOST, self.port) if self.address is None else self.address

    def __str__(self) -> str:
        return f"vsock port {self.port} of the host"


def parse_vsock(text: str) -> Vsock | None:
    """The vsock channel `text` names ("vsock", or "vsock:PORT"); None when it names none
    (then it is a device path). Raises ValueError for a bad port."""
    kind, colon, port = text.partition(":")
    if kind != "vsock":
        return None
    if not colon:
        return Vsock()
    number = int(port) if port.isdigit() else -1
    if not 0 < number < 0xFFFFFFFF:  # VMADDR_PORT_ANY (-1 as u32) means any port
        raise ValueError(f"{port!r} is not a vsock port (1 to {0xFFFFFFFF - 1})")
    return Vsock(number)


def find_vsock(root: Path) -> bool:
    """Whether the guest has a virtio-vsock device (as Cloud Hypervisor and Firecracker add)."""
    try:
        devices = sorted((root / "sys" / "bus" / "virtio" / "devices").iterdir())
    except OSError:
        return False
    for device in devices:
        try:
            if int((device / "device").read_text().strip(), 16) == VIRTIO_ID_VSOCK:
                return True
        except (OSError, ValueError):
            continue
    return False


def find_port(root: Path, name: str = PORT_NAME) -> Path | None:
    """The character device of the virtio-serial port called `name`, or None."""
    linked = root / "dev" / "virtio-ports" / name
    if linked.exists():
        return linked
    try:
        ports = sorted((root / "sys" / "class" / "virtio-ports").iterdir())
    except OSError:
        return None
    for port in ports:
        try:
            if (port / "name").read_text().strip() == name:
                device = root / "dev" / port.name
                return device if device.exists() else None
        except OSError:
            continue
    return None


def _last_action(report: TickReport) -> str | None:
    """The action this tick took, by textfile's names (the last in the daemon's order)."""
    decision = report.decision
    taken = None
    if report.dropped is not None and report.dropped.files > 0:
        taken = "drop_behind"
    if report.split is not None:
        taken = "split_huge_pages"
    if report.reclaim is not None:
        taken = "drop_caches" if decision.drop_caches else "reclaim"
    if report.compaction is not None:
        taken = "compact"
    return taken


class HostReporter:
    """Writes a report to the port (or vsock) after every tick; drops what cannot be written at
    once."""

    def __init__(
        self,
        channel: Path | Vsock,
        policy: str,
        interval_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.channel = channel
        self.policy = policy
        self.interval_s = interval_s
        self.sent = 0
        self.dropped = 0
        self._clock = clock
        self._fd: int | None = None
        self._socket: socket.socket | None = None  # the vsock connection, when it is one
        self._connecting = False  # connect() is under way on _socket
        self._seq = 0
        self._last_action: tuple[str, float] | None = None
        self._torn = False  # a short write left half a line: start the next with a newline
        self._readable = False  # opened for reading too (a port, not a FIFO)
        self._splitter = LineSplitter(MAX_MESSAGE_BYTES)
        self.bad_requests = 0
        self._problem: str | None = None  # what is wrong now, logged once until it changes

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        elif self._fd is not None:
            os.close(self._fd)
        self._fd = None
        self._connecting = False

    def __enter__(self) -> HostReporter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def report(self, tick: TickReport, floor_bytes: int | None) -> AgentReport:
        """The report of `tick`, numbered; the agent's last action remembered."""
        now = self._clock()
        action = _last_action(tick)
        if action is not None:
            self._last_action = (action, now)
        obs = tick.after or tick.before
        refaults = obs.vmstat.workingset_refault_file
        cache = obs.reclaimable_cache_bytes
        self._seq += 1
        return AgentReport(
            seq=self._seq,
            version=__version__,
            policy=self.policy,
            interval_s=self.interval_s,
            reclaimable_bytes=cold_bytes(obs.memory, floor_bytes),
            cache_bytes=cache,
            floor_bytes=floor_bytes,
            refaulted_bytes=None if refaults is None else refaults * obs.page_size,
            last_action=self._last_action[0] if self._last_action else "none",
            last_action_age_s=round(now - self._last_action[1], 3) if self._last_action else None,
        )

    def tick(self, tick: TickReport, floor_bytes: int | None) -> bool:
        """Send this tick's report; True when it was written whole."""
        line = encode_report(self.report(tick, floor_bytes))
        if self._torn:
            line = b"\n" + line
        return self.send(line)

    def answer(self, answer: ReleaseAnswer) -> bool:
        """Send the answer to a request; True when it was written whole."""
        line = encode_answer(answer)
        if self._torn:
            line = b"\n" + line
        return self.send(line)

    def poll_request(self) -> ReleaseRequest | None:
        """The latest valid request the host sent since the last call, or None; never waits."""
        if not self._ready():
            return None
        latest = None
        budget = MAX_READ_BYTES
        while self._readable and self._fd is not None and budget > 0:
            try:
                data = os.read(self._fd, budget)
            except BlockingIOError:
                break
            except OSError as err:
                self.close()
                self._trouble(f"cannot read the host channel {self.channel}: {err.strerror}")
                break
            if not data:
                if self._socket is not None:  # the host closed the connection
                    self.close()
                    self._trouble(f"the host closed the host channel {self.channel}")
                break  # a port: no host on the other end
            budget -= len(data)
            lines, too_long = self._splitter.feed(data)
            self.bad_requests += too_long
            for line in lines:
                if not line.strip():
                    continue
                try:
                    latest = parse_request(line)
                except BadMessage as err:
                    self.bad_requests += 1
                    log.debug("host channel %s: not a request (%s)", self.channel, err)
        return latest

    def send(self, line: bytes) -> bool:
        if not self._ready():
            self.dropped += 1
            return False
        assert self._fd is not None
        try:
            written = os.write(self._fd, line)
        except BlockingIOError:
            self.dropped += 1
            self._trouble(
                "the host does not read the channel (not connected?): reports are dropped "
                "until it does",
                logging.INFO,
            )
            return False
        except OSError as err:
            self.dropped += 1
            self.close()
            self._trouble(f"cannot write to the host channel {self.channel}: {err.strerror}")
            return False
        self._torn = written < len(line)
        if self._torn:
            self.dropped += 1
            return False
        self.sent += 1
        if self._problem is not None:
            log.info("host channel %s: reports reach the host again", self.channel)
            self._problem = None
        return True

    def _ready(self) -> bool:
        """Whether the channel is open (and connected) now; opens or connects it if not."""
        if self._fd is None:
            return self._connect() if isinstance(self.channel, Vsock) else self._open(self.channel)
        if self._connecting:
            return self._connected()
        return True

    def _open(self, path: Path) -> bool:
        try:
            # A FIFO opened for reading too would never fail without a reader, and would read
            # back the agent's own reports.
            self._readable = not stat.S_ISFIFO(os.stat(path).st_mode)
            mode = os.O_RDWR if self._readable else os.O_WRONLY
            self._fd = os.open(path, mode | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError as err:
            hint = " (another process holds the port)" if err.errno == errno.EBUSY else ""
            self._trouble(f"cannot open the host channel {path}: {err.strerror}{hint}")
            return False
        return True

    def _connect(self) -> bool:
        """Start connecting to the host on vsock; True when that completed at once."""
        assert isinstance(self.channel, Vsock)
        try:
            sock = self.channel.make_socket()
        except OSError as err:
            self._trouble(f"cannot make a socket for the host channel {self.channel}: {err}")
            return False
        sock.setblocking(False)
        code = sock.connect_ex(self.channel.target)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self._refused(code)
            return False
        self._socket, self._fd, self._readable = sock, sock.fileno(), True
        self._connecting = code != 0
        # A new stream: nothing of the old one's half lines either way.
        self._splitter = LineSplitter(MAX_MESSAGE_BYTES)
        self._torn = False
        return not self._connecting

    def _connected(self) -> bool:
        """Whether a connect() under way has completed, without waiting for it."""
        assert self._socket is not None
        _, writable, _ = select.select([], [self._socket], [], 0)
        if not writable:
            return False
        code = self._socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self.close()
            self._refused(code)
            return False
        self._connecting = False
        return True

    def _refused(self, code: int) -> None:
        self._trouble(
            f"cannot connect to the host channel {self.channel}: {os.strerror(code)} (no "
            "`vmreclaim host run` listening for this VM?); trying again at later ticks"
        )

    def _trouble(self, problem: str, level: int = logging.WARNING) -> None:
        if problem != self._problem:
            log.log(level, "%s", problem)
        self._problem = problem
