"""What the agent gives when the host asks it to release cold cache (agent_protocol's request).
Pure: the agent's loop reads the request, plans here, and acts through its reclaim action.

The host can only ask. The agent gives its cold cache (`cold_bytes`, what it reports as
reclaimable): reclaimable cache above the policy's floor, and no more than the inactive file
list holds beyond what the kernel keeps inactive against the active one. memory.reclaim takes
the inactive list first, but below that mark the kernel refills it from the active list, the
hot set's pages among them, and takes those (inactive_is_low() in mm/vmscan.c; the adaptive
policy's step 4 stops there too). So a guest whose cache is all hot offers nothing and keeps it,
and one holding files written once offers them. Never more than asked. It refuses, saying why in
one word, when

- memory_pressure: its policy holds back after memory pressure, or PSI shows tasks stalling on
  memory now: the guest needs its cache, and taking more would make it refault;
- within_floor: less than MIN_RELEASE_BYTES of cold cache lies above the floor (all hot, or
  within it);
- cannot_reclaim: the kernel offers no bounded reclaim (no memory.reclaim, or swap on without
  a way to keep reclaim off anonymous memory): the only way left drops all clean cache, hot set
  included, which the agent does for its own policy only when idle;
- no_figures: /proc/meminfo could not be read.

What was released comes back to the host through free page reporting, as for the agent's own
reclaims.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmreclaim.agent_protocol import ReleaseRequest
from vmreclaim.guest.actions import plan_reclaim
from vmreclaim.guest.observe import Observation
from vmreclaim.guest.observe.memory import MemInfo
from vmreclaim.guest.oneshot import DEFAULT_KEEP_BYTES
from vmreclaim.guest.policies.adaptive import inactive_kept_by_kernel
from vmreclaim.units import format_size as fmt

MIN_RELEASE_BYTES = 16 << 20
"""Smaller releases are not worth a reclaim (the adaptive policy's least step)."""
PRESSURE_AVG10 = 1.0
"""PSI memory `some` avg10 (%) above which the guest is short of memory now: 100 ms of stall a
second on average, six times the adaptive policy's target (senpai's 10 ms per 6 s)."""

MEMORY_PRESSURE = "memory_pressure"
WITHIN_FLOOR = "within_floor"
CANNOT_RECLAIM = "cannot_reclaim"
NO_FIGURES = "no_figures"
RECLAIM_FAILED = "reclaim_failed"


@dataclass(frozen=True)
class ReleasePlan:
    """`reclaim_bytes` to reclaim for the request, or why not (`refused`, one word) and in
    words for the log (`why`)."""

    reclaim_bytes: int
    refused: str
    why: str


def cold_bytes(memory: MemInfo, floor_bytes: int | None) -> int | None:
    """What the guest can give without taking its hot set: reclaimable cache above the floor
    (WSL2's 128 MiB for a policy without one), at most the inactive file list beyond what the
    kernel keeps inactive against the active list. None without the figures."""
    cache, inactive = memory.reclaimable_cache_bytes, memory.inactive_file_bytes
    if cache is None or inactive is None:
        return None
    floor = DEFAULT_KEEP_BYTES if floor_bytes is None else floor_bytes
    kept = inactive_kept_by_kernel(inactive, memory.active_file_bytes or 0)
    return max(0, min(cache - floor, inactive - kept))


def plan_release(
    request: ReleaseRequest, obs: Observation, floor_bytes: int | None, holding_back: str | None
) -> ReleasePlan:
    """What to give for `request`, given the tick's observation, the policy's floor (None: the
    policy has none, WSL2's 128 MiB stands in) and why the policy holds back now, if it does."""
    cache = obs.reclaimable_cache_bytes
    if cache is None:
        return ReleasePlan(0, NO_FIGURES, "could not read the reclaimable cache")
    pressed = holding_back or _pressure(obs)
    if pressed is not None:
        return ReleasePlan(0, MEMORY_PRESSURE, pressed)
    floor = DEFAULT_KEEP_BYTES if floor_bytes is None else floor_bytes
    cold = cold_bytes(obs.memory, floor)
    short = _too_little(cache, floor, cold)
    if short is not None or cold is None:
        return ReleasePlan(0, WITHIN_FLOOR, short or "no figures for the file lists")
    plan = plan_reclaim(obs.reclaim, obs.memory.swap_active)
    if plan.method != "memory.reclaim":
        return ReleasePlan(0, CANNOT_RECLAIM, f"no bounded reclaim: {plan.reason}")
    amount = min(request.release_bytes, cold)
    amount -= amount % obs.page_size
    if amount <= 0:
        return ReleasePlan(0, WITHIN_FLOOR, "nothing asked")
    return ReleasePlan(amount, "", f"{fmt(cold)} cold cache above the {fmt(floor)} floor")


def _too_little(cache: int, floor: int, cold: int | None) -> str | None:
    """Why there is not enough cold cache to give, or None when there is."""
    if cache - floor < MIN_RELEASE_BYTES:
        return f"{fmt(cache)} reclaimable is within the {fmt(floor)} floor"
    if cold is None or cold < MIN_RELEASE_BYTES:
        return (
            f"{fmt(cold or 0)} of the {fmt(cache - floor)} above the {fmt(floor)} floor is "
            "cold; the rest is on the active list (the hot set)"
        )
    return None


def _pressure(obs: Observation) -> str | None:
    pressure = obs.memory_pressure
    if pressure is not None and pressure.some.avg10 > PRESSURE_AVG10:
        return f"memory pressure: PSI some avg10 {pressure.some.avg10:.2f} %"
    return None
