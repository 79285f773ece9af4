"""A blocking QMP connection built on the official `qemu.qmp` library.

`QMPClient` is asyncio; the lab and simple tools want plain calls from any thread. `QmpSession`
runs one client on a private event loop thread and hands calls to it, so it is safe to use from
several threads (the lab samples while a test runs commands).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from vmreclaim.errors import QmpCommandError, QmpError

_T = TypeVar("_T")


class QmpSession:
    """One QMP connection to a QEMU listening on a unix socket."""

    def __init__(
        self, socket_path: Path, *, name: str = "vmreclaim", timeout: float = 10.0
    ) -> None:
        from qemu.qmp import QMPClient

        self.socket_path = socket_path
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"qmp-{socket_path.name}", daemon=True
        )
        self._thread.start()

        async def make() -> QMPClient:
            return QMPClient(name)

        self._client = self._call(make(), timeout)
        try:
            self._call(self._client.connect(str(socket_path)), timeout)
        except BaseException as err:
            self._stop_loop()
            cause = err.exc if hasattr(err, "exc") else err
            raise QmpError(
                f"cannot talk QMP on {socket_path}: {cause}",
                hint="check that QEMU runs with -qmp unix:PATH,server=on,wait=off and that no "
                "other client holds that monitor",
            ) from err

    def _call(self, coroutine: Coroutine[Any, Any, _T], timeout: float) -> _T:
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coroutine, timeout), self._loop)
        return future.result()

    def execute(
        self, command: str, arguments: dict[str, object] | None = None, timeout: float = 10.0
    ) -> Any:
        """Run one QMP command and return its "return" value."""
        from qemu.qmp import ExecuteError, QMPError

        try:
            return self._call(self._client.execute(command, arguments), timeout)
        except ExecuteError as err:
            raise QmpCommandError(command, err.error_class, err.error.error.desc) from err
        except (QMPError, OSError, TimeoutError, asyncio.TimeoutError) as err:
            raise QmpError(
                f"QMP command {command!r} on {self.socket_path} failed: {err!r}"
            ) from err

    def close(self) -> None:
        if self._loop.is_closed():
            return
        # The peer may already be gone; closing must not fail.
        with contextlib.suppress(Exception):
            self._call(self._client.disconnect(), 5.0)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        self._loop.close()

    def __enter__(self) -> QmpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
