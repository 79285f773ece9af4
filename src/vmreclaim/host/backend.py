"""What the host side needs from a hypervisor: one connection per VM, polled and steered.

QEMU over QMP is the first implementation (qemu_backend.py). The protocol is asyncio because a
daemon polls tens of VMs once a second from one thread, and the others fit it as they are:
libvirt (virDomainMemoryStats and virDomainSetMemory, through asyncio.to_thread), Cloud
Hypervisor (`vm.info`, `vm.resize`, HTTP on a unix socket) and Firecracker (`GET/PATCH
/balloon`, `/balloon/statistics`, HTTP on a unix socket). The address is a string so that each
can name a VM its own way (socket path, libvirt URI and domain).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from vmreclaim.host.records import VmSample


class VmBackend(Protocol):
    """One VM. Methods raise `VmUnreachableError` when the VM cannot be reached or went away,
    `QmpError`/`HostError` for other failures; after an error the caller closes it and may
    open a new one later."""

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
