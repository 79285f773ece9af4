"""Firecracker over its REST API on the unix socket given by `--api-sock`.

Follows Firecracker's swagger document, src/firecracker/swagger/firecracker.yaml (swagger 2.0,
API version 1.17.0-dev as of upstream commit 004d935399ba; the Balloon object's
`free_page_reporting` came with Firecracker 1.14). Paths are at the root; the balloon's amounts
are MiB, the guest's statistics bytes.

- `GET /` -> InstanceInfo {id, state, vmm_version, app_name}: the VM's name is its id.
- `GET /machine-config` -> MachineConfiguration {mem_size_mib, ...}: the RAM.
- `GET /balloon` -> Balloon {amount_mib, deflate_on_oom, stats_polling_interval_s,
  free_page_hinting, free_page_reporting}; 400 when no balloon is configured. Reporting and
  statistics are set with `PUT /balloon` before boot and cannot be turned on afterwards.
- `GET /balloon/statistics` -> BalloonStats {target_mib, actual_mib, total_memory,
  free_memory, available_memory, disk_caches, major_faults, minor_faults, ...}; 400 when
  statistics were not enabled before boot. It carries no timestamp, and nothing else in the
  API dates the guest's last report (InstanceInfo's `state` says Paused, not that a running
  guest's driver stopped): the statistics go out undated (`updated_at` None) and the fleet
  dates them by when their figures last changed (history.track).
- `PATCH /balloon` with BalloonUpdate {amount_mib}: the balloon's target, so the guest keeps
  RAM minus that.

The Firecracker process is found from the API socket's peer credentials. Verified against this
document with a local server only (tests/host/test_firecracker.py): no Firecracker binary is
packaged for the project's machines.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vmreclaim.host.backends.base import DEFAULT_TIMEOUT
from vmreclaim.host.backends.process import EXACT_FOOTPRINT_EVERY
from vmreclaim.host.backends.threads import BlockingCalls
from vmreclaim.host.backends.vmm_http import HttpVmm, VmmApiError, guest_stats
from vmreclaim.host.records import BalloonState, GuestStats

log = logging.getLogger(__name__)

MIB = 1 << 20
_BAD_REQUEST = 400


class FirecrackerVm(HttpVmm):
    """A `VmBackend` for one Firecracker microVM."""

    scheme = "firecracker"

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
        self._stats_enabled = False

    async def _connect(self) -> None:
        self.pid = await self._server_pid()
        instance = (await self._call("GET", "/")).body
        if isinstance(instance, dict) and instance.get("id"):
            self._name = str(instance["id"])
        machine = (await self._call("GET", "/machine-config")).body
        if isinstance(machine, dict) and isinstance(machine.get("mem_size_mib"), int):
            self._ram_bytes = machine["mem_size_mib"] * MIB
        balloon = await self._balloon_config()
        self._has_balloon = balloon is not None
        if balloon is None:
            log.warning("%s: no balloon device; only the footprint is watched", self._name)
        else:
            # Absent before 1.14, which had no free page reporting at all.
            self._reporting = bool(balloon.get("free_page_reporting", False))
            self._stats_enabled = bool(balloon.get("stats_polling_interval_s"))
            if not self._stats_enabled:
                log.warning(
                    "%s: balloon statistics are off (stats_polling_interval_s = 0); they can "
                    "only be turned on before boot",
                    self._name,
                )

    async def _balloon_config(self) -> dict[str, Any] | None:
        try:
            body = (await self._call("GET", "/balloon")).body
        except VmmApiError as err:
            if err.status == _BAD_REQUEST:
                return None  # "Balloon device not configured."
            raise
        return body if isinstance(body, dict) else None

    async def _statistics(self) -> dict[str, Any] | None:
        try:
            body = (await self._call("GET", "/balloon/statistics")).body
        except VmmApiError as err:
            if err.status == _BAD_REQUEST:
                self._stats_enabled = False
                return None
            raise
        return body if isinstance(body, dict) else None

    async def _read_balloon(self) -> tuple[BalloonState | None, GuestStats | None]:
        balloon = None
        guest: GuestStats | None = None
        if self._has_balloon and self._ram_bytes is not None:
            if self._stats_enabled:
                stats = await self._statistics()
            else:
                stats = None
            if stats is not None and isinstance(stats.get("actual_mib"), int):
                actual_mib = stats["actual_mib"]
                guest = guest_stats(stats, None)
            else:
                # Also the liveness check when there are no statistics. Without them the
                # balloon's held size is unknown: its target stands in for it.
                config = await self._balloon_config()
                actual_mib = int((config or {}).get("amount_mib", 0))
            balloon = BalloonState(
                self._ram_bytes, self._ram_bytes - actual_mib * MIB, self._reporting
            )
        else:
            await self._call("GET", "/")  # the liveness check
        return balloon, guest

    async def _set_balloon(self, guest_bytes: int) -> None:
        # Round the balloon down: the guest keeps at least what it was given.
        amount_mib = self._balloon_size(guest_bytes) // MIB
        await self._call("PATCH", "/balloon", {"amount_mib": amount_mib})
