"""Blocking hypervisor calls (libvirt-python, HTTP on a unix socket) on threads, each bounded.

A thread blocked in a C library or on a socket cannot be cancelled. So a call that outlives
its bound is abandoned, not stopped: the caller gets `VmHungError` at once, and its VM (the
call's `key`) is *stuck* until the thread comes back. Further calls for a stuck VM fail at
once as hung instead of each taking one more thread, so stuck threads never number more than
stuck VMs; the VM's calls resume when its thread returns. Threads that are not stuck are
reused, at most `max_threads` of them.

The threads are daemons: a stuck one never delays the process's exit. (asyncio.to_thread's
executor joins its threads when asyncio.run ends, so one stuck libvirt call would hang
`vmreclaim top` for good.)
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from vmreclaim.errors import VmHungError

T = TypeVar("T")


@dataclass(eq=False)
class _Call:
    key: str
    function: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    started_at: float | None = None
    abandoned: bool = False
    cancelled: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class BlockingCalls:
    """A pool of daemon threads for blocking calls; see the module docstring."""

    def __init__(self, *, max_threads: int = 32, clock: Callable[[], float] = time.monotonic):
        self._max_threads = max_threads
        self._clock = clock
        self._queue: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._stuck: dict[str, _Call] = {}

    @property
    def threads(self) -> int:
        """Threads started and not ended (idle, busy and stuck)."""
        with self._lock:
            return self._threads

    def stuck(self) -> list[str]:
        """The keys whose last call was abandoned and is still running."""
        with self._lock:
            return sorted(self._stuck)

    async def run(
        self,
        key: str,
        function: Callable[[], T],
        *,
        timeout: float,
        what: str,
        label: str | None = None,
    ) -> T:
        """`function()` on a thread, or VmHungError once `timeout` has passed. `key` is the
        VM (its address); `label: ... what (key)` is the error's message."""
        label = label or key
        with self._lock:
            stuck = self._stuck.get(key)
        if stuck is not None:
            since = self._clock() - (stuck.started_at or self._clock())
            raise VmHungError(
                f"{label}: no answer within {timeout:.1f} s: its last call is still "
                f"unanswered after {since:.1f} s, so {what} waits ({key})",
                timeout,
                hint="the hypervisor is stuck on this VM; it is asked again once that call ends",
            )
        loop = asyncio.get_running_loop()
        call = _Call(key, function, loop, loop.create_future())
        self._submit(call)
        try:
            result: T = await asyncio.wait_for(asyncio.shield(call.future), timeout)
            return result
        except asyncio.TimeoutError as err:
            self._abandon(call)
            raise VmHungError(
                f"{label}: no answer within {timeout:.1f} s to {what} ({key})",
                timeout,
                hint="the hypervisor is stopped, stuck or overloaded; if it is only slow, "
                "raise the timeout",
            ) from err
        except asyncio.CancelledError:
            self._abandon(call)
            raise

    def _submit(self, call: _Call) -> None:
        with self._lock:
            start = self._idle == 0 and self._threads - len(self._stuck) < self._max_threads
            if start:
                self._threads += 1
        if start:
            threading.Thread(target=self._serve, name="vmreclaim-call", daemon=True).start()
        self._queue.put(call)

    def _abandon(self, call: _Call) -> None:
        """The caller stopped waiting: a queued call is dropped, a running one marks its VM
        stuck until it returns, and a thread takes its place."""
        with self._lock:
            if call.done.is_set():
                return
            if call.started_at is None:
                call.cancelled = True
                return
            call.abandoned = True
            self._stuck[call.key] = call
            replace = self._idle == 0 and self._threads - len(self._stuck) < self._max_threads
            if replace:
                self._threads += 1
        if replace:
            threading.Thread(target=self._serve, name="vmreclaim-call", daemon=True).start()

    def _serve(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            call = self._queue.get()
            with self._lock:
                self._idle -= 1
                if call.cancelled:
                    continue
                call.started_at = self._clock()
            outcome: tuple[bool, Any]
            try:
                outcome = (True, call.function())
            except BaseException as err:  # delivered to the caller, which re-raises it
                outcome = (False, err)
            with self._lock:
                call.done.set()
                if call.abandoned and self._stuck.get(call.key) is call:
                    del self._stuck[call.key]
                surplus = self._threads - len(self._stuck) > self._max_threads
                if surplus:
                    self._threads -= 1
            # RuntimeError: the event loop is closed, nobody waits any more.
            with contextlib.suppress(RuntimeError):
                call.loop.call_soon_threadsafe(_deliver, call.future, outcome)
            if surplus:
                return  # a stuck thread came back while its replacement serves


def _deliver(future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if future.done():
        return
    succeeded, value = outcome
    if succeeded:
        future.set_result(value)
    else:
        future.set_exception(value)
