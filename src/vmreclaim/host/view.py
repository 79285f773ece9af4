"""The daemon's view on a local unix socket, so that `vmreclaim top` runs beside `host run`.

A QMP monitor serves one client at a time and the daemon holds every one it watches, so `top`
cannot ask the VMs itself while the daemon runs. The daemon therefore publishes what it saw
last: the document `top --once --json` prints (per-VM records, the unreachable ones, the host,
and `time`, when the poll was taken), once a cycle.

The protocol is as small as it gets: a client connects, the daemon writes the document (UTF-8
JSON, at most `MAX_VIEW_BYTES`) and closes; it reads nothing from the client. The socket is the
owner's only (0600, in a 0700 directory): the view names every VM and its process.

Where: `socket` in the configuration, else `default_socket_path()`:
`/run/vmreclaim-host/host.sock` for root (the RuntimeDirectory of vmreclaim-host.service, the
one directory its sandbox lets it write), `$XDG_RUNTIME_DIR/vmreclaim/host.sock` for other
users, `/tmp/vmreclaim-UID/host.sock` without XDG_RUNTIME_DIR.

A daemon that was killed leaves its socket file behind. Connecting to it is refused at once
(ECONNREFUSED: nobody listens), which is how a new daemon and `top` tell it from a live one:
the daemon replaces it, `top` says so and polls the VMs itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import stat
from pathlib import Path
from typing import Any

from vmreclaim.errors import HostError

log = logging.getLogger(__name__)

MAX_VIEW_BYTES = 32 << 20
"""The largest view a client accepts: 500 VMs take about 0.5 MiB."""
SOCKET_NAME = "host.sock"


def default_socket_path() -> Path:
    if os.geteuid() == 0:
        return Path("/run/vmreclaim-host") / SOCKET_NAME
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "vmreclaim" / SOCKET_NAME
    return Path(f"/tmp/vmreclaim-{os.geteuid()}") / SOCKET_NAME


class NoDaemon(HostError):
    """Nothing listens at the socket: there is no socket file, or a stale one."""

    def __init__(self, message: str, *, stale: bool, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.stale = stale


def read_view(path: Path, timeout: float) -> dict[str, Any]:
    """The daemon's latest view. Raises `NoDaemon` when nobody listens at `path`, HostError
    when a daemon does not answer within `timeout` or answers with something else."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        try:
            client.connect(str(path))
            data = _read_bounded(client)
        except FileNotFoundError as err:
            raise NoDaemon(f"no daemon socket at {path}", stale=False) from err
        except ConnectionRefusedError as err:
            raise NoDaemon(
                f"no daemon answers at {path}",
                stale=True,
                hint="the socket was left by a daemon that stopped without cleaning up; the "
                "next `vmreclaim host run` replaces it",
            ) from err
        except socket.timeout as err:  # not the built-in TimeoutError before 3.10
            raise HostError(
                f"the daemon at {path} did not send its view within {timeout:g} s",
                hint="is `vmreclaim host run` stopped (SIGSTOP) or overloaded?",
            ) from err
        except PermissionError as err:
            raise HostError(
                f"cannot read the daemon's view at {path}: permission denied",
                hint="the socket is its owner's only: run top as the user that runs the daemon",
            ) from err
        except OSError as err:
            raise HostError(f"cannot read the daemon's view at {path}: {err.strerror}") from err
    try:
        view = json.loads(data)
    except ValueError as err:
        raise HostError(f"the daemon at {path} sent something that is not JSON: {err}") from err
    if not isinstance(view, dict) or not isinstance(view.get("vms"), list):
        raise HostError(f"the daemon at {path} sent a document without a list of VMs")
    return view


def _read_bounded(client: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = client.recv(1 << 16)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_VIEW_BYTES:
            raise HostError(f"the daemon's view is larger than {MAX_VIEW_BYTES >> 20} MiB")
        chunks.append(chunk)


class ViewServer:
    """Serves the latest published document to every client that connects."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._document = b'{"time": null, "vms": [], "unreachable": []}'
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None

    async def start(self) -> None:
        _own_directory(self.path.parent)
        _claim(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # The directory is its owner's only, so nobody connects between bind and chmod.
            listener.bind(str(self.path))
            os.chmod(self.path, 0o600)
            self._inode = self.path.stat().st_ino
            self._server = await asyncio.start_unix_server(self._serve, sock=listener)
        except OSError as err:
            listener.close()
            raise HostError(
                f"cannot serve the daemon's view at {self.path}: {err.strerror}",
                hint="choose another socket in the configuration (socket = PATH), or "
                'socket = "" to publish none',
            ) from err
        log.info("serving the daemon's view to `vmreclaim top` at %s", self.path)

    def publish(self, view: dict[str, Any]) -> None:
        self._document = json.dumps(view, separators=(",", ":")).encode()

    async def _serve(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(self._document)
            await asyncio.wait_for(writer.drain(), 5.0)  # a client that does not read
        except (OSError, asyncio.TimeoutError) as err:
            log.debug("a view client went away: %r", err)
        finally:
            writer.close()

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 0.2)
        # Remove the socket only if it is still ours (not one a newer daemon made).
        with contextlib.suppress(OSError):
            if self._inode is not None and self.path.stat().st_ino == self._inode:
                self.path.unlink()


def _own_directory(directory: Path) -> None:
    """Make the run directory, or check that the one there is ours alone."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.lstat()
    except OSError as err:
        raise HostError(
            f"cannot make the run directory {directory}: {err.strerror}",
            hint="set socket = PATH in the configuration to a directory you own",
        ) from err
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise HostError(
            f"{directory} is not a directory of this user's",
            hint="remove it, or set socket = PATH in the configuration",
        )
    if info.st_mode & 0o077:
        os.chmod(directory, 0o700)


def _claim(path: Path) -> None:
    """Take the socket's path: refuse while another daemon answers there, replace a stale
    socket (a daemon that was killed)."""
    if not path.exists() and not path.is_symlink():
        return
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise HostError(f"{path} exists and is not a socket", hint="remove it, or choose another")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError as err:
            if err.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise HostError(f"cannot check {path}: {err.strerror}") from err
            log.info("replacing %s, left by a daemon that stopped", path)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
    raise HostError(
        f"another vmreclaim daemon answers at {path}",
        hint="stop it first; two daemons must not steer the same balloons (to run one for "
        "other VMs, give it its own socket = PATH)",
    )
