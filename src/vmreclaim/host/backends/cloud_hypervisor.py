"""Cloud Hypervisor over its REST API on the unix socket given by `--api-socket`.

Follows the project's OpenAPI document, vmm/src/api/openapi/cloud-hypervisor.yaml (openapi 3.0.1,
"Cloud Hypervisor API" version 0.3.0, as of upstream commit 00f68228812d): all paths are under
/api/v1 and amounts are bytes.

- `GET /vmm.ping` -> VmmPingResponse {version, pid (newer releases)}: the VMM's pid, else the
  socket's peer credentials.
- `GET /vm.info` -> VmInfo {config: VmConfig {memory: MemoryConfig {size, hotplugged_size,
  zones}, balloon: BalloonConfig {size, deflate_on_oom, free_page_reporting}}, state,
  memory_actual_size}: the RAM, whether the balloon accepts free page reports (BalloonConfig's
  free_page_reporting, fixed at boot) and the guest's present size (memory_actual_size: RAM
  less the balloon).
- `GET /vm.balloon-stats` -> BalloonStatsResponse {balloon_actual, last_update (host ms),
  stats: BalloonStats {total_memory, free_memory, available_memory, disk_caches, major_faults,
  minor_faults, ...}}; 500 while the guest driver has not negotiated statistics. Releases that
  predate it answer 404: then only the balloon is watched. (`/vm.counters` gives devices' I/O
  counters only, no memory figure, so it is not used.)
- `PUT /vm.resize` with VmResize {desired_balloon: bytes}: the balloon size, so the guest keeps
  RAM minus that.

Verified against this document with a local server only (tests/host/test_cloud_hypervisor.py):
no Cloud Hypervisor binary is packaged for the project's machines.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vmreclaim.errors import HostError
from vmreclaim.host.backends.base import DEFAULT_TIMEOUT
from vmreclaim.host.backends.process import EXACT_FOOTPRINT_EVERY
from vmreclaim.host.backends.threads import BlockingCalls
from vmreclaim.host.backends.vmm_http import HttpVmm, VmmApiError, guest_stats
from vmreclaim.host.records import BalloonState, GuestStats

log = logging.getLogger(__name__)

API = "/api/v1"
_NOT_FOUND = 404
_SERVER_ERROR = 500


def ram_bytes(config: dict[str, Any]) -> int | None:
    """A VmConfig's RAM: the base size and what was hot-plugged, with every memory zone's."""
    memory = config.get("memory")
    if not isinstance(memory, dict):
        return None
    total = int(memory.get("size") or 0) + int(memory.get("hotplugged_size") or 0)
    for zone in memory.get("zones") or []:
        if isinstance(zone, dict):
            total += int(zone.get("size") or 0) + int(zone.get("hotplugged_size") or 0)
    return total or None


class CloudHypervisorVm(HttpVmm):
    """A `VmBackend` for one Cloud Hypervisor VMM."""

    scheme = "cloud-hypervisor"
    api_prefix = API

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
            socket_path,
            proc=proc,
            timeout=timeout,
            exact_footprint_every=exact_footprint_every,
            calls=calls,
        )
        self._stats_supported = True

    async def _connect(self) -> None:
        ping = (await self._call("GET", "/vmm.ping")).body
        pid = ping.get("pid") if isinstance(ping, dict) else None
        self.pid = pid if isinstance(pid, int) and pid > 0 else await self._server_pid()
        info = await self._info()
        config = info.get("config") or {}
        self._ram_bytes = ram_bytes(config)
        balloon = config.get("balloon")
        self._has_balloon = isinstance(balloon, dict)
        if isinstance(balloon, dict):
            self._reporting = bool(balloon.get("free_page_reporting", False))
        else:
            log.warning("%s: no balloon device (--balloon); only the footprint is watched", self)

    async def _info(self) -> dict[str, Any]:
        info = (await self._call("GET", "/vm.info")).body
        if not isinstance(info, dict):
            raise HostError(f"{self._name}: GET {API}/vm.info did not return a VmInfo object")
        return info

    async def _balloon_stats(self) -> dict[str, Any] | None:
        if not self._stats_supported:
            return None
        try:
            body = (await self._call("GET", "/vm.balloon-stats")).body
        except VmmApiError as err:
            if err.status == _NOT_FOUND:
                log.info("%s: this Cloud Hypervisor has no /vm.balloon-stats", self._name)
                self._stats_supported = False
                return None
            if err.status == _SERVER_ERROR:
                return None  # the guest driver has not negotiated statistics (yet)
            raise
        return body if isinstance(body, dict) else None

    async def _read_balloon(self) -> tuple[BalloonState | None, GuestStats | None]:
        info = await self._info()  # also the liveness check
        balloon = None
        guest: GuestStats | None = None
        if self._has_balloon and self._ram_bytes is not None:
            stats = await self._balloon_stats()
            actual = info.get("memory_actual_size")
            if not isinstance(actual, int) and stats is not None:
                inflated = stats.get("balloon_actual")
                actual = self._ram_bytes - inflated if isinstance(inflated, int) else None
            if isinstance(actual, int):
                balloon = BalloonState(self._ram_bytes, actual, self._reporting)
            if stats is not None:
                updated_ms = stats.get("last_update")
                updated = updated_ms / 1000 if isinstance(updated_ms, int) else None
                guest = guest_stats(stats.get("stats"), updated)
        return balloon, guest

    async def _set_balloon(self, guest_bytes: int) -> None:
        balloon = self._balloon_size(guest_bytes)
        await self._call("PUT", "/vm.resize", {"desired_balloon": balloon})
