"""Many VMs at once: find them, keep a connection to each, poll them all concurrently.

Sources are addresses or globs; globs are matched again at every poll, so VMs that appear are
picked up and VMs whose socket disappears are forgotten. A VM that stops answering (crashed,
restarted, dropped its monitor) is closed and reconnected with exponential back-off, so a dead
socket costs one failed connect every `max_backoff` seconds at most. Connects run as background
tasks, samples concurrently, and every call a backend makes is bounded in time: a hung VM never
delays the others' polls by more than that bound, and is reported hung.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from vmreclaim.errors import VmHungError, VmreclaimError
from vmreclaim.host.backends.base import DEFAULT_TIMEOUT, BackendFactory, VmBackend, within
from vmreclaim.host.history import VmHistory, track
from vmreclaim.host.records import VmObservation, VmSample

log = logging.getLogger(__name__)

_GLOB_CHARS = frozenset("*?[")

Discoverer = Callable[[Sequence[str]], Awaitable[list[str]]]
"""Turns the sources into the addresses to watch now, for sources that are not plain sockets
and globs (libvirt URIs list their domains); see sources.VmSources."""


def discover(sources: Sequence[str]) -> list[str]:
    """Literal addresses as given (a missing one is reported, not dropped), globs expanded."""
    found: dict[str, None] = {}
    for source in sources:
        if _GLOB_CHARS & set(source):
            found.update(dict.fromkeys(sorted(glob.glob(source))))
        else:
            found[source] = None
    return list(found)


@dataclass
class _Slot:
    """Mutable bookkeeping of one address, private to the fleet."""

    address: str
    backend: VmBackend | None = None
    connecting: asyncio.Task[VmBackend] | None = None
    history: VmHistory | None = None
    failures: int = 0
    retry_at: float = 0.0
    error: str | None = None
    exception: BaseException | None = None


@dataclass(frozen=True)
class VmFailure:
    """A VM that did not answer this poll, and why."""

    address: str
    error: str
    hung: bool = False
    """It did not answer within its time bound (as opposed to refusing or being gone)."""
    connecting: bool = False
    """Its first connection is still being made: it has not failed, it has not answered yet."""


@dataclass(frozen=True)
class FleetPoll:
    """One poll: the VMs that answered, and why each of the others did not."""

    vms: tuple[VmObservation, ...]
    unreachable: tuple[VmFailure, ...] = field(default=())


class Fleet:
    def __init__(
        self,
        sources: Sequence[str],
        factory: BackendFactory,
        *,
        sample_timeout: float = 2 * DEFAULT_TIMEOUT + 0.5,
        max_backoff: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        discoverer: Discoverer | None = None,
    ) -> None:
        self.sources = tuple(sources)
        self._discoverer = discoverer
        self._factory = factory
        self._sample_timeout = sample_timeout
        """A backstop: each call a backend makes has its own bound, and a sample makes at
        most two calls."""
        self._max_backoff = max_backoff
        self._clock = clock
        self._wall_clock = wall_clock
        self._slots: dict[str, _Slot] = {}

    def failure(self, address: str) -> BaseException | None:
        """Why the VM at `address` is not connected, if it tried and failed."""
        slot = self._slots.get(address)
        return slot.exception if slot and slot.backend is None else None

    def backend(self, address: str) -> VmBackend | None:
        slot = self._slots.get(address)
        return slot.backend if slot else None

    async def connect_all(self) -> None:
        """Start connecting to every source and wait until each attempt ends (for one-shots)."""
        await self._refresh()
        tasks = [slot.connecting for slot in self._slots.values() if slot.connecting]
        await asyncio.gather(*tasks, return_exceptions=True)
        self._collect_connects()

    async def poll(self) -> FleetPoll:
        await self._refresh()
        self._collect_connects()
        connected = [slot for slot in self._slots.values() if slot.backend is not None]
        results = await asyncio.gather(
            *(self._sample(slot.backend) for slot in connected if slot.backend is not None),
            return_exceptions=True,
        )
        observations = []
        lost = []
        now = self._wall_clock()
        for slot, result in zip(connected, results):
            if isinstance(result, BaseException):
                lost.append(self._lost(slot, result))
                continue
            slot.history, observation = track(slot.history, result, now)
            observations.append(observation)
        await asyncio.gather(*lost)  # closing one hung VM must not wait for another's
        unreachable = tuple(
            VmFailure(
                slot.address,
                slot.error or "connecting",
                isinstance(slot.exception, VmHungError),
                connecting=slot.error is None,
            )
            for slot in self._slots.values()
            if slot.backend is None
        )
        return FleetPoll(tuple(observations), unreachable)

    async def _sample(self, backend: VmBackend) -> VmSample:
        try:
            return await within(self._sample_timeout, backend.sample())
        except asyncio.TimeoutError as err:  # not the built-in TimeoutError before 3.11
            raise VmHungError(
                f"{backend.name}: no answer within {self._sample_timeout:.1f} s to a poll "
                f"({backend.address})",
                self._sample_timeout,
            ) from err

    async def _refresh(self) -> None:
        """Match the sources again: forget what vanished, start connects that are due."""
        if self._discoverer is not None:
            addresses = await self._discoverer(self.sources)
        else:
            addresses = discover(self.sources)
        gone = [address for address in self._slots if address not in addresses]
        for address in gone:
            log.info("%s is gone: forgetting it", address)
        await asyncio.gather(*(self._forget(self._slots.pop(address)) for address in gone))
        now = self._clock()
        for address in addresses:
            slot = self._slots.setdefault(address, _Slot(address))
            if slot.backend is None and slot.connecting is None and now >= slot.retry_at:
                slot.connecting = asyncio.create_task(self._connect(address))

    async def _connect(self, address: str) -> VmBackend:
        backend = self._factory(address)
        try:
            await backend.connect()
        except BaseException:
            await backend.close()
            raise
        return backend

    def _collect_connects(self) -> None:
        for slot in self._slots.values():
            task = slot.connecting
            if task is None or not task.done():
                continue
            slot.connecting = None
            error = task.exception() if not task.cancelled() else asyncio.CancelledError()
            if error is None:
                slot.backend = task.result()
                slot.failures = 0
                slot.error = None
                slot.exception = None
                log.info("watching %s (%s)", slot.backend.name, slot.address)
            else:
                self._back_off(slot, error)

    def _back_off(self, slot: _Slot, error: BaseException) -> None:
        message = error.message if isinstance(error, VmreclaimError) else repr(error)
        if slot.failures == 0 or message != slot.error:
            log.warning("%s", message)
        slot.failures += 1
        slot.error = message
        slot.exception = error
        delay = min(self._max_backoff, 2.0 ** (slot.failures - 1))
        slot.retry_at = self._clock() + delay
        log.debug("%s: next connect in %.0f s", slot.address, delay)

    async def _lost(self, slot: _Slot, error: BaseException) -> None:
        backend = slot.backend
        name = backend.name if backend else slot.address
        reason = error.message if isinstance(error, VmreclaimError) else repr(error)
        log.warning("lost VM %s (%s): %s; reconnecting with back-off", name, slot.address, reason)
        slot.backend = None
        slot.history = None
        if backend is not None:
            await backend.close()
        # A restarting VM makes a new socket within a second or two: try again soon.
        slot.failures = 1
        slot.error = reason
        slot.exception = error
        slot.retry_at = self._clock() + 1.0

    async def _forget(self, slot: _Slot) -> None:
        task, slot.connecting = slot.connecting, None
        if task is not None:
            task.cancel()
            # asyncio.wait, unlike awaiting the task, neither raises its error nor swallows a
            # cancellation of ours: Ctrl-C, SIGTERM and a cancelled caller go on up.
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is not None:
                log.debug("%s: connect ended with %r", slot.address, task.exception())
        if slot.backend is not None:
            await slot.backend.close()

    async def close(self) -> None:
        slots, self._slots = list(self._slots.values()), {}
        await asyncio.gather(*(self._forget(slot) for slot in slots))
