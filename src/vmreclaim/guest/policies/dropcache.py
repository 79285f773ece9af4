"""`dropcache`: WSL2's default autoMemoryReclaim mode, re-implemented as a baseline.

Source: microsoft/WSL src/linux/init/util.cpp (2026), field-notes §5: once the guest has been idle
for a full 2-minute window, `echo 3 > /proc/sys/vm/drop_caches` once per idle period, then
compact (WSL2 compacts when idle begins and after each reclaim). Nothing happens while busy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from vmreclaim.guest.observe import Observation
from vmreclaim.guest.policies.base import (
    CPU_PARTS,
    Decision,
    Policy,
    incomplete_reason,
    missing_parts,
    no_action,
)
from vmreclaim.guest.policies.wsl2_idle import (
    IdleState,
    Wsl2IdleConfig,
    advance_idle,
    busy_reason,
    window_complete,
)


@dataclass(frozen=True)
class DropcacheConfig(Wsl2IdleConfig):
    """WSL2's idle detector settings; dropping caches has none of its own."""


@dataclass(frozen=True)
class DropcacheState:
    idle: IdleState = field(default_factory=IdleState)
    dropped: bool = False  # caches were dropped in the current idle period


def decide(
    obs: Observation, config: DropcacheConfig, state: DropcacheState
) -> tuple[Decision, DropcacheState]:
    missing = missing_parts(obs, CPU_PARTS)
    if missing:
        return no_action(incomplete_reason(missing)), state
    tick, idle = advance_idle(obs, state.idle, config)
    if tick.busy:
        # A busy interval ends the idle period: the next one drops again.
        return no_action(busy_reason(tick, config)), DropcacheState(idle, False)
    new_state = dataclasses.replace(state, idle=idle)
    if not tick.sampled:
        return no_action("between 10 s samples"), new_state
    if not window_complete(tick, config):
        return no_action(
            f"idle for {tick.idle_for_s:.0f} s of the {config.idle_window_s:.0f} s window"
        ), new_state
    if state.dropped:
        return no_action("idle: caches already dropped in this idle period"), new_state
    decision = Decision(
        drop_caches=True,
        compact=True,
        reason=f"idle for {tick.idle_for_s:.0f} s: dropping all caches once per idle period "
        "(WSL2 dropcache), then compacting",
    )
    return decision, dataclasses.replace(new_state, dropped=True)


DROPCACHE: Policy[DropcacheConfig, DropcacheState] = Policy(
    name="dropcache",
    summary="WSL2's default: drop all caches once after 2 minutes of idle",
    decide=decide,
    config_type=DropcacheConfig,
    initial_state=DropcacheState,
)
