"""What the agent gives when the host asks it to release cold cache (agent_protocol's request).
Pure: the agent's loop reads the request, plans here, and acts through its reclaim action.

The host can only ask. The agent gives what its own policy would give in time: reclaimable
cache above the policy's floor, by the bounded reclaim (memory.reclaim, which takes the
inactive list first), never more than asked. It refuses, saying why in one word, when

- memory_pressure: its policy holds back after memory pressure, or PSI shows tasks stalling on
  memory now: the guest needs its cache, and taking more would make it refault;
- within_floor: less than MIN_RELEASE_BYTES lies above the floor;
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
from vmreclaim.guest.oneshot import DEFAULT_KEEP_BYTES
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
    above = cache - floor
    if above < MIN_RELEASE_BYTES:
        return ReleasePlan(
            0, WITHIN_FLOOR, f"{fmt(cache)} reclaimable is within the {fmt(floor)} floor"
        )
    plan = plan_reclaim(obs.reclaim, obs.memory.swap_active)
    if plan.method != "memory.reclaim":
        return ReleasePlan(0, CANNOT_RECLAIM, f"no bounded reclaim: {plan.reason}")
    amount = min(request.release_bytes, above)
    amount -= amount % obs.page_size
    if amount <= 0:
        return ReleasePlan(0, WITHIN_FLOOR, "nothing asked")
    return ReleasePlan(amount, "", f"{fmt(above)} reclaimable above the {fmt(floor)} floor")


def _pressure(obs: Observation) -> str | None:
    pressure = obs.memory_pressure
    if pressure is not None and pressure.some.avg10 > PRESSURE_AVG10:
        return f"memory pressure: PSI some avg10 {pressure.some.avg10:.2f} %"
    return None
