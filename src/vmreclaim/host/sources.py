"""Where VMs come from: QMP sockets, libvirt URIs, Cloud Hypervisor and Firecracker API sockets.

`VmSources` turns what the user named into addresses at every poll (globs matched again, the
domains of each libvirt URI listed again) and makes the backend for an address. Addresses say
their kind: a QMP socket is its plain path (as before), the others carry a prefix:

    /run/vms/db.qmp                      QEMU over QMP
    libvirt:qemu:///system#db            a libvirt domain
    cloud-hypervisor:/run/ch/db.sock     Cloud Hypervisor's API socket
    firecracker:/run/fc/db.sock          Firecracker's API socket

A libvirt URI that cannot be listed appears as the bare `libvirt:URI`, whose backend fails to
connect with the reason, so it shows among the unreachable VMs like a dead socket does.

With nothing named, a `Discovery` (discovery.py) finds the host's VMs instead, and what it
found but cannot use is kept in `not_watched`, each with the reason, rather than shown as
unreachable: nobody asked for those.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vmreclaim.errors import HostError, VmreclaimError
from vmreclaim.host.backends.base import DEFAULT_TIMEOUT, VmBackend
from vmreclaim.host.backends.threads import BlockingCalls
from vmreclaim.host.discovery import Discovery, Found
from vmreclaim.host.fleet import discover
from vmreclaim.host.records import VmSample

if TYPE_CHECKING:
    from vmreclaim.host.backends.libvirt import LibvirtHub

CLOUD_HYPERVISOR = "cloud-hypervisor:"
_GLOB_CHARS = frozenset("*?[")
FIRECRACKER = "firecracker:"


@dataclass(frozen=True)
class SourceList:
    """What the user named, by kind: sockets and globs, and libvirt URIs."""

    qmp: tuple[str, ...] = ()
    libvirt: tuple[str, ...] = ()
    cloud_hypervisor: tuple[str, ...] = ()
    firecracker: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.qmp or self.libvirt or self.cloud_hypervisor or self.firecracker)

    def covers(self, address: str) -> bool:
        """Whether a VM's address (as VmSources names it) is one of these sources."""
        if address.startswith("libvirt:"):
            return any(
                address == f"libvirt:{uri}" or address.startswith(f"libvirt:{uri}#")
                for uri in self.libvirt
            )
        for prefix, patterns in (
            (CLOUD_HYPERVISOR, self.cloud_hypervisor),
            (FIRECRACKER, self.firecracker),
        ):
            if address.startswith(prefix):
                path = address.removeprefix(prefix)
                return any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns)
        return any(fnmatch.fnmatchcase(address, pattern) for pattern in self.qmp)

    def literal_addresses(self) -> list[str]:
        """The addresses named without a glob (libvirt URIs stand for many VMs: none)."""
        return [
            prefix + path
            for prefix, paths in (
                ("", self.qmp),
                (CLOUD_HYPERVISOR, self.cloud_hypervisor),
                (FIRECRACKER, self.firecracker),
            )
            for path in paths
            if not _GLOB_CHARS & set(path)
        ]


class _Failed:
    """The backend of a libvirt URI that could not be listed: it fails with the reason."""

    def __init__(self, address: str, error: HostError) -> None:
        self._address = address
        self._error = error

    @property
    def address(self) -> str:
        return self._address

    @property
    def name(self) -> str:
        return self._address

    async def connect(self) -> None:
        raise self._error

    async def sample(self) -> VmSample:
        raise self._error

    async def set_balloon_target(self, guest_bytes: int) -> None:
        raise self._error

    async def close(self) -> None:
        """Nothing to release."""


class VmSources:
    """Discovery and backends for a `SourceList`. Owns the libvirt connections and the threads
    of blocking calls, shared by every backend so that a VM stuck in a call gets no second
    thread when it is reconnected: close it."""

    def __init__(
        self,
        sources: SourceList,
        proc: Path = Path("/proc"),
        *,
        timeout: float = DEFAULT_TIMEOUT,
        discovery: Discovery | None = None,
        keep_stats_period: bool = False,
    ) -> None:
        self.sources = sources
        self.keep_stats_period = keep_stats_period
        """Leave each VM's guest statistics period as it is where it is set (`top`, an
        onlooker); the daemon sets its own."""
        self.discovery = discovery
        """Finds the VMs when `sources` names none."""
        self.not_watched: tuple[Found, ...] = ()
        """What discovery found but cannot use, with the reasons (as of the last discover)."""
        self._proc = proc
        self.timeout = timeout
        """Seconds a hypervisor has to answer one call."""
        self._calls = BlockingCalls()
        self._libvirt_failures: dict[str, HostError] = {}
        self._hub: LibvirtHub | None = None

    def _libvirt_hub(self) -> LibvirtHub:
        if self._hub is None:
            from vmreclaim.host.backends.libvirt import LibvirtHub

            self._hub = LibvirtHub(calls=self._calls, timeout=self.timeout)
        return self._hub

    async def discover(self, _sources: Sequence[str] = ()) -> list[str]:
        """Every address to watch now. (The fleet passes its own sources; these are ours.)"""
        if self.discovery is not None:
            return await self._discovered(self.discovery)
        addresses = discover(self.sources.qmp)
        addresses += [CLOUD_HYPERVISOR + path for path in discover(self.sources.cloud_hypervisor)]
        addresses += [FIRECRACKER + path for path in discover(self.sources.firecracker)]
        if self.sources.libvirt:
            found, failures = await self._libvirt_hub().discover(list(self.sources.libvirt))
            self._libvirt_failures = failures
            addresses += found
            addresses += [f"libvirt:{uri}" for uri in failures]
        return addresses

    async def _discovered(self, discovery: Discovery) -> list[str]:
        """The QMP sockets discovery found, and the domains of the local libvirt URIs that
        answer; a URI that does not is not watched, with its reason, and so are the QEMUs
        libvirt started unless some URI answers for them."""
        found = await discovery.scan()
        addresses = list(found.qmp)
        not_watched = list(found.not_watched)
        answered = False
        if found.libvirt:
            failures: dict[str, VmreclaimError]
            try:
                domains, listed = await self._libvirt_hub().discover(list(found.libvirt))
                failures = dict(listed)
            except VmreclaimError as err:  # libvirt-python missing
                domains, failures = [], dict.fromkeys(found.libvirt, err)
            addresses += domains
            answered = len(failures) < len(found.libvirt)
            not_watched += [
                Found(f"libvirt:{uri}", "libvirt's socket", reason=error.message)
                for uri, error in failures.items()
            ]
        if not answered:
            not_watched += found.libvirt_processes
        self.not_watched = tuple(not_watched)
        return addresses

    def backend(self, address: str) -> VmBackend:
        if address.startswith(CLOUD_HYPERVISOR):
            from vmreclaim.host.backends.cloud_hypervisor import CloudHypervisorVm

            return CloudHypervisorVm(
                address.removeprefix(CLOUD_HYPERVISOR),
                proc=self._proc,
                timeout=self.timeout,
                calls=self._calls,
            )
        if address.startswith(FIRECRACKER):
            from vmreclaim.host.backends.firecracker import FirecrackerVm

            return FirecrackerVm(
                address.removeprefix(FIRECRACKER),
                proc=self._proc,
                timeout=self.timeout,
                calls=self._calls,
            )
        if address.startswith("libvirt:"):
            from vmreclaim.host.backends.libvirt import LibvirtDomainVm, split_address

            uri, name = split_address(address)
            if name is None:
                error = self._libvirt_failures.get(uri) or HostError(f"{uri}: not listed yet")
                return _Failed(address, error)
            return LibvirtDomainVm(
                self._libvirt_hub(),
                uri,
                name,
                proc=self._proc,
                timeout=self.timeout,
                keep_stats_period=self.keep_stats_period,
            )
        from vmreclaim.host.backends.qemu import QemuVm

        return QemuVm(
            address,
            proc=self._proc,
            timeout=self.timeout,
            keep_stats_period=self.keep_stats_period,
        )

    def close(self) -> None:
        if self._hub is not None:
            self._hub.close()
            self._hub = None
