"""The host end of the lab guest's command channel (the guest end is guest-init.sh).

A virtio-serial port carries one command at a time: the script goes out base64-encoded on one
line, and the exit code, stdout and stderr come back framed by their lengths, so the two streams
stay apart and any output size or byte comes through. The guest kills a command at its timeout;
the host gives it a grace period on top before it calls the channel broken.
"""

from __future__ import annotations

import base64
import itertools
import math
import socket
import threading
import time
from dataclasses import dataclass

from vmreclaim.errors import ChannelError, GuestCommandTimeout

# What busybox `timeout -s KILL` leaves as the exit code of a killed command: 128 + SIGKILL.
_KILLED = 137
# Time on top of a command's own timeout for the guest to kill it and send its output back
# (TCG guests are slow; seen here: a 10 MB output takes about a second).
_GRACE_SECONDS = 30.0


@dataclass(frozen=True)
class CommandResult:
    """What a command in the guest did."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def text(self) -> str:
        """stdout as text, for commands that print text."""
        return self.stdout.decode(errors="replace")


class CommandChannel:
    """Runs shell scripts in the guest over a connected stream socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._broken: str | None = None

    def close(self) -> None:
        self._broken = self._broken or "closed"
        self._sock.close()

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self._sock.settimeout(remaining)
        try:
            chunk = self._sock.recv(1 << 20)
        except socket.timeout as err:  # not a TimeoutError before Python 3.10
            raise TimeoutError from err
        if not chunk:
            raise ChannelError("the guest closed the command channel")
        self._buffer += chunk

    def _read_line(self, deadline: float) -> str:
        while b"\n" not in self._buffer:
            self._fill(deadline)
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return line.decode(errors="replace")

    def _read_exactly(self, size: int, deadline: float) -> bytes:
        while len(self._buffer) < size:
            self._fill(deadline)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def wait_ready(self, timeout: float) -> str:
        """Wait for the guest's greeting; returns the guest's kernel release."""
        try:
            line = self._read_line(time.monotonic() + timeout)
        except (TimeoutError, OSError) as err:
            raise ChannelError(f"the guest did not come up within {timeout:.0f} s") from err
        verb, _, release = line.partition(" ")
        if verb != "VMREADY":
            raise ChannelError(f"unexpected greeting from the guest: {line!r}")
        return release

    def run(self, script: str, timeout: float) -> CommandResult:
        """Run `script` with the guest's /bin/sh; raises GuestCommandTimeout past `timeout`."""
        with self._lock:
            if self._broken:
                raise ChannelError(f"the command channel is unusable ({self._broken})")
            request_id = next(self._ids)
            limit = max(1, math.ceil(timeout))
            payload = base64.b64encode(script.encode()).decode()
            started = time.monotonic()
            try:
                self._sock.sendall(f"RUN {request_id} {limit} {payload}\n".encode())
                result = self._receive(request_id, started + limit + _GRACE_SECONDS, started)
            except TimeoutError as err:
                self._broken = "a command did not return"
                raise ChannelError(
                    f"the guest did not answer within {limit + _GRACE_SECONDS:.0f} s"
                ) from err
            except (BrokenPipeError, ConnectionResetError) as err:
                self._broken = "the guest closed it"
                raise ChannelError("the guest closed the command channel") from err
            except OSError as err:
                self._broken = str(err)
                raise ChannelError(f"the command channel failed: {err}") from err
            except ChannelError as err:
                self._broken = err.message
                raise
        if result.exit_code == _KILLED and result.seconds >= limit - 0.5:
            raise GuestCommandTimeout(
                f"the command did not finish within {limit} s and was killed in the guest",
                hint="pass a longer timeout",
            )
        return result

    def _receive(self, request_id: int, deadline: float, started: float) -> CommandResult:
        header = self._read_line(deadline).split()
        if len(header) != 5 or header[0] != "DONE" or header[1] != str(request_id):
            raise ChannelError(f"unexpected answer on the command channel: {header!r}")
        exit_code, out_size, err_size = (int(field) for field in header[2:])
        stdout = self._read_exactly(out_size, deadline)
        stderr = self._read_exactly(err_size, deadline)
        return CommandResult(exit_code, stdout, stderr, time.monotonic() - started)
