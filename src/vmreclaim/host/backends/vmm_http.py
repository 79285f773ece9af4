"""JSON over HTTP/1.1 on a unix socket: how Cloud Hypervisor and Firecracker are driven, and
the balloon statistics both report in the same words.

Both VMMs serve their API on a unix stream socket and speak plain HTTP with JSON bodies, so the
standard library's http.client does it once `connect()` opens an AF_UNIX socket. Calls are
blocking and short; the backends run them on the base's bounded threads (`_in_thread`), with
the socket's own timeout at twice the bound so that a thread comes back soon after. One
connection a call: both servers close idle connections, and a poll a second does not need
keep-alive.
"""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from vmreclaim.errors import HostError, VmUnreachableError
from vmreclaim.host.backends.base import DEFAULT_TIMEOUT, Backend, StatKeys, guest_stats_from
from vmreclaim.host.backends.process import EXACT_FOOTPRINT_EVERY, peer_pid
from vmreclaim.host.backends.threads import BlockingCalls
from vmreclaim.host.records import GuestStats

# Cloud Hypervisor's BalloonStats and Firecracker's BalloonStats use the same keys, in bytes.
_STAT_KEYS = StatKeys(
    total="total_memory",
    free="free_memory",
    available="available_memory",
    cache="disk_caches",
    major_faults="major_faults",
    minor_faults="minor_faults",
)


class VmmApiError(HostError):
    """The VMM answered with an error status; `status` is the HTTP status code and `fault` the
    VMM's own words (Firecracker's `fault_message`, Cloud Hypervisor's plain-text body)."""

    def __init__(self, method: str, path: str, status: int, fault: str) -> None:
        super().__init__(f"{method} {path} answered {status}: {fault or '(no message)'}")
        self.method = method
        self.path = path
        self.status = status
        self.fault = fault


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float) -> None:
        # The host name only fills the Host header; both VMMs ignore it.
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass(frozen=True)
class Response:
    status: int
    body: Any
    """The decoded JSON body; None for an empty body (204)."""


class UnixHttpClient:
    """Blocking JSON calls to an HTTP server on a unix socket."""

    def __init__(self, socket_path: Path | str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout

    def server_pid(self) -> int:
        """The pid of the process serving the socket (the VMM), from SO_PEERCRED."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.socket_path))
            except OSError as err:
                raise self._unreachable(err) from err
            return peer_pid(sock)

    def call(self, method: str, path: str, body: object | None = None) -> Response:
        """One request; raises VmmApiError for a status of 300 or more, VmUnreachableError when
        the socket cannot be reached or the answer is not HTTP with a JSON body."""
        connection = _UnixConnection(str(self.socket_path), self.timeout)
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=payload, headers=headers)
            answer = connection.getresponse()
            raw = answer.read()
        except (OSError, http.client.HTTPException) as err:
            raise self._unreachable(err) from err
        finally:
            connection.close()
        text = raw.decode(errors="replace").strip()
        if answer.status >= 300:
            raise VmmApiError(method, path, answer.status, _fault(text))
        if not text:
            return Response(answer.status, None)
        try:
            return Response(answer.status, json.loads(text))
        except ValueError as err:
            raise VmUnreachableError(
                f"{self.socket_path}: {method} {path} answered with a body that is not JSON: "
                f"{text[:200]!r}"
            ) from err

    def _unreachable(self, err: Exception) -> VmUnreachableError:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else repr(err)
        return VmUnreachableError(
            f"cannot talk to the VMM API socket {self.socket_path}: {reason}",
            hint="is the VM running, and is this its API socket (--api-socket for Cloud "
            "Hypervisor, --api-sock for Firecracker)?",
        )


def _fault(text: str) -> str:
    """Firecracker sends {"fault_message": ...}; Cloud Hypervisor plain text."""
    try:
        decoded = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(decoded, dict) and isinstance(decoded.get("fault_message"), str):
        return str(decoded["fault_message"])
    return text[:500]


def guest_stats(stats: Any, updated_at: float | None) -> GuestStats | None:
    """The virtio-balloon statistics as both VMMs name them. A statistic the guest never sent
    is missing from the JSON and becomes None."""
    if not isinstance(stats, dict):
        return None
    return guest_stats_from(stats, _STAT_KEYS, updated_at)


class HttpVmm(Backend):
    """What the backends of VMMs with a REST API on a unix socket share besides the base: the
    client, the address, and the VMM's process from the socket's peer credentials."""

    scheme: ClassVar[str]
    """The address prefix, e.g. "firecracker"."""
    api_prefix: ClassVar[str] = ""

    def __init__(
        self,
        socket_path: Path | str,
        *,
        proc: Path = Path("/proc"),
        timeout: float = DEFAULT_TIMEOUT,
        exact_footprint_every: float = EXACT_FOOTPRINT_EVERY,
        calls: BlockingCalls | None = None,
    ) -> None:
        super().__init__(
            Path(socket_path).stem,
            proc=proc,
            timeout=timeout,
            exact_footprint_every=exact_footprint_every,
            calls=calls,
        )
        # Twice the bound: the bound, not the socket, says the VMM hung, and the thread that
        # waited on the socket still comes back soon after.
        self._client = UnixHttpClient(socket_path, timeout=2 * timeout)

    @property
    def address(self) -> str:
        return f"{self.scheme}:{self._client.socket_path}"

    async def _call(self, method: str, path: str, body: object | None = None) -> Response:
        path = self.api_prefix + path
        return await self._in_thread(
            lambda: self._client.call(method, path, body), f"{method} {path}"
        )

    async def _server_pid(self) -> int:
        return await self._in_thread(self._client.server_pid, "connecting")
