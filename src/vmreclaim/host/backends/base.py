"""What the host side needs from a hypervisor, and the one base every backend builds on.

`VmBackend` is the protocol the fleet sees: one connection per VM, polled and steered. It is
asyncio because a daemon polls hundreds of VMs once a second from one thread. The address is a
string so that each hypervisor can name a VM its own way (socket path, libvirt URI and domain).

`Backend` owns what every hypervisor shares: the VM's name, process, RAM, balloon and
reporting flag; the footprint sampler of its process; the record a poll returns; the mapping
of the virtio-balloon statistics to `GuestStats`; and the time bound on each call. A subclass
implements only what differs:

  address          (property) how the fleet names this VM
  _connect()       reach the VM and fill `pid`, `_ram_bytes`, `_has_balloon`, `_reporting`
  _read_balloon()  the balloon and the guest's statistics now; also the liveness check
  _set_balloon()   ask the balloon to leave the guest some bytes
  close()          may be overridden to release a connection; must never raise

and calls the hypervisor through `_bounded` (an awaitable) or `_in_thread` (a blocking
function) so that no call outlives `timeout`. The public `connect`, `sample` and
`set_balloon_target` are the base's.
"""

from __future__ import annotations

import abc
import asyncio
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from vmreclaim.errors import HostError, VmHungError
from vmreclaim.host.backends.process import (
    EXACT_FOOTPRINT_EVERY,
    FootprintSampler,
    sample_footprint,
)
from vmreclaim.host.backends.threads import BlockingCalls
from vmreclaim.host.records import BalloonState, GuestStats, VmSample

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0
"""Seconds a hypervisor has to answer one call when the caller does not say (tests, tools);
the daemon and `top` derive theirs from the polling interval (config.default_timeout)."""


if sys.version_info >= (3, 11):

    async def within(seconds: float, call: Awaitable[T]) -> T:
        """`call`, cancelled and turned into asyncio.TimeoutError once `seconds` have passed.
        asyncio.timeout runs it in the calling task; wait_for (3.11) wraps every call in a task
        of its own and a timer, which with hundreds of VMs polled once a second was measured
        at a fifth of the CPU time of a poll that makes no QMP call."""
        async with asyncio.timeout(seconds):
            return await call

else:

    async def within(seconds: float, call: Awaitable[T]) -> T:
        """`call`, cancelled and turned into asyncio.TimeoutError once `seconds` have passed."""
        return await asyncio.wait_for(call, seconds)


class VmBackend(Protocol):
    """One VM. Methods raise `VmUnreachableError` when the VM cannot be reached or went away
    (`VmHungError` when it did not answer in time), `QmpError`/`HostError` for other failures;
    after an error the caller closes it and may open a new one later."""

    @property
    def address(self) -> str: ...

    @property
    def name(self) -> str:
        """The VM's name (its own, or derived from the address) once connected."""
        ...

    async def connect(self) -> None:
        """Reach the VM, learn what does not change (process, RAM size, balloon device) and
        turn on the guest's statistics."""
        ...

    async def sample(self) -> VmSample: ...

    async def set_balloon_target(self, guest_bytes: int) -> None:
        """Ask the balloon to leave the guest `guest_bytes` of RAM."""
        ...

    async def close(self) -> None:
        """Release the connection; never raises."""
        ...


BackendFactory = Callable[[str], VmBackend]
"""Makes an unconnected backend for an address."""


@dataclass(frozen=True)
class StatKeys:
    """How one hypervisor names the virtio-balloon statistics (VIRTIO_BALLOON_S_* in the
    guest's driver), and in what unit it gives the amounts."""

    total: str
    free: str
    available: str
    cache: str
    major_faults: str
    minor_faults: str
    amount_unit: int = 1
    """Bytes per unit of the four amounts (libvirt: KiB); fault counts are not scaled."""
    unknown: int | None = None
    """The value that means "the guest never sent it" (QEMU: -1 as an unsigned 64-bit)."""


def guest_stats_from(
    stats: Mapping[str, object], keys: StatKeys, updated_at: float | None
) -> GuestStats:
    """The statistics as a record: a value that is missing, negative, not a whole number or
    the hypervisor's "unknown" becomes None, never zero. `updated_at` is None when the
    hypervisor does not say when the guest sent them."""

    def number(key: str) -> int | None:
        value = stats.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return None
        return None if value == keys.unknown else value

    def amount(key: str) -> int | None:
        value = number(key)
        return None if value is None else value * keys.amount_unit

    return GuestStats(
        updated_at=updated_at,
        total_bytes=amount(keys.total),
        free_bytes=amount(keys.free),
        available_bytes=amount(keys.available),
        cache_bytes=amount(keys.cache),
        major_faults=number(keys.major_faults),
        minor_faults=number(keys.minor_faults),
    )


class Backend(abc.ABC):
    """The shared core of a `VmBackend`; see the module docstring for what a subclass does."""

    def __init__(
        self,
        name: str,
        *,
        proc: Path = Path("/proc"),
        timeout: float = DEFAULT_TIMEOUT,
        exact_footprint_every: float = EXACT_FOOTPRINT_EVERY,
        calls: BlockingCalls | None = None,
    ) -> None:
        self._name = name
        self._calls = calls
        """Threads for blocking calls; share one among backends (VmSources does) so that a
        VM whose call is stuck gets no second thread when it is reconnected."""
        self._proc = proc
        self.timeout = timeout
        """Seconds the hypervisor has to answer one call."""
        self._exact_footprint_every = exact_footprint_every
        self.pid: int | None = None
        """The VMM's process on this host; None for a remote VM."""
        self._ram_bytes: int | None = None
        self._has_balloon = False
        self._reporting: bool | None = None
        self._footprint: FootprintSampler | None = None

    @property
    @abc.abstractmethod
    def address(self) -> str: ...

    @property
    def name(self) -> str:
        return self._name

    def __str__(self) -> str:
        return self._name

    async def connect(self) -> None:
        await self._connect()
        if self.pid is not None:
            self._footprint = FootprintSampler(
                self.pid, self._ram_bytes, self._proc, exact_every=self._exact_footprint_every
            )

    async def sample(self) -> VmSample:
        balloon, guest = await self._read_balloon()
        return VmSample(
            name=self._name,
            address=self.address,
            pid=self.pid,
            footprint=sample_footprint(self._footprint, self._name, self.pid),
            balloon=balloon,
            guest=guest,
        )

    async def set_balloon_target(self, guest_bytes: int) -> None:
        if not self._has_balloon or self._ram_bytes is None:
            raise HostError(f"{self._name}: no balloon device to set")
        await self._set_balloon(guest_bytes)

    async def close(self) -> None:  # noqa: B027 - a hook: the REST VMMs hold no connection
        """Release what the backend holds; nothing by default. Never raises."""

    @abc.abstractmethod
    async def _connect(self) -> None: ...

    @abc.abstractmethod
    async def _read_balloon(self) -> tuple[BalloonState | None, GuestStats | None]: ...

    @abc.abstractmethod
    async def _set_balloon(self, guest_bytes: int) -> None: ...

    async def _bounded(self, call: Awaitable[T], what: str, *, hint: str | None = None) -> T:
        """`call`, or VmHungError once `timeout` has passed without an answer. Cancellation
        from outside (Ctrl-C, SIGTERM, the fleet forgetting the VM) passes through as it is."""
        try:
            return await within(self.timeout, call)
        except asyncio.TimeoutError as err:  # not the built-in TimeoutError before 3.11
            raise self._hung(what, hint) from err

    async def _in_thread(self, function: Callable[[], T], what: str) -> T:
        """A blocking call, on a thread, bounded like `_bounded` (threads.py says how)."""
        if self._calls is None:
            self._calls = BlockingCalls()
        return await self._calls.run(
            self.address, function, timeout=self.timeout, what=what, label=self._name
        )

    def _balloon_size(self, guest_bytes: int) -> int:
        """The balloon that leaves the guest `guest_bytes` (for VMMs that take the balloon's
        size rather than the guest's)."""
        assert self._ram_bytes is not None  # set_balloon_target checked
        return max(0, self._ram_bytes - guest_bytes)

    def _hung(self, what: str, hint: str | None = None) -> VmHungError:
        return VmHungError(
            f"{self._name}: no answer within {self.timeout:.1f} s to {what} ({self.address})",
            self.timeout,
            hint=hint
            or "the VMM is stopped, stuck or overloaded; if it is only slow, raise the timeout",
        )
