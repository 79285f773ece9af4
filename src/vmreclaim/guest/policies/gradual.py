"""`gradual`: WSL2's 2026 autoMemoryReclaim mode, re-implemented as a baseline.

Source: microsoft/WSL src/linux/init/util.cpp (2026), field-notes §5. Once the guest has been idle
for a full 2-minute window (see wsl2_idle), on every idle 10 s tick: while reclaimable cache
(Active(file) + Inactive(file) + SReclaimable) is above a 128 MiB floor, write
"<step> swappiness=0" to /sys/fs/cgroup/memory.reclaim with step = clamp(MemTotal / 32, 256 MiB,
1 GiB). Compact when idle begins and after each reclaim. Faithful, weaknesses included: nothing
while busy, and the step is not trimmed to the floor (the kernel reclaims what it can; EAGAIN is
partial success). Published: a kernel build's host footprint halved in 177 s instead of 591 s.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from vmreclaim.guest.observe import Observation
from vmreclaim.guest.policies.base import (
    CACHE_PARTS,
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
from vmreclaim.units import format_size


@dataclass(frozen=True)
class GradualConfig(Wsl2IdleConfig):
    """WSL2's idle detector settings (reclaim steps follow its 10 s samples), then these."""

    # Reclaimable cache left alone (WSL2: 128 MiB).
    floor_bytes: int = 128 << 20
    # Step = MemTotal * step_total_ratio, clamped to [min_step_bytes, max_step_bytes]
    # (WSL2: MemTotal / 32, clamped to 256 MiB .. 1 GiB).
    step_total_ratio: float = 1 / 32
    min_step_bytes: int = 256 << 20
    max_step_bytes: int = 1 << 30


@dataclass(frozen=True)
class GradualState:
    idle: IdleState = field(default_factory=IdleState)
    idle_period: bool = False  # the idle window was reached and the period has not ended


def step_bytes(mem_total_bytes: int, config: GradualConfig) -> int:
    """WSL2's step: MemTotal / 32, clamped to 256 MiB .. 1 GiB."""
    step = int(mem_total_bytes * config.step_total_ratio)
    return max(config.min_step_bytes, min(step, config.max_step_bytes))


def _idle_tick(
    obs: Observation, config: GradualConfig, period_started: bool, idle_for_s: float
) -> Decision:
    """A sampled tick past the idle window: one step above the floor, compaction at the start."""
    reclaimable = obs.memory.reclaimable_cache_bytes
    total = obs.memory.total_bytes
    assert reclaimable is not None
    assert total is not None
    floor = format_size(config.floor_bytes)
    if reclaimable > config.floor_bytes:
        step = step_bytes(total, config)
        return Decision(
            reclaim_bytes=step,
            compact=True,
            reason=f"idle for {idle_for_s:.0f} s: {format_size(reclaimable)} reclaimable "
            f"above the {floor} floor; reclaiming a {format_size(step)} step, then compacting",
        )
    if not period_started:
        return Decision(
            compact=True,
            reason=f"idle period begins: {format_size(reclaimable)} reclaimable is within the "
            f"{floor} floor; compacting",
        )
    return no_action(f"idle: reclaimable cache within the {floor} floor")


def decide(
    obs: Observation, config: GradualConfig, state: GradualState
) -> tuple[Decision, GradualState]:
    missing = missing_parts(obs, CPU_PARTS + CACHE_PARTS)
    if missing:
        return no_action(incomplete_reason(missing)), state
    tick, idle = advance_idle(obs, state.idle, config)
    if tick.busy:
        return no_action(busy_reason(tick, config)), GradualState(idle, False)
    if not tick.sampled:
        return no_action("between 10 s samples"), dataclasses.replace(state, idle=idle)
    if not window_complete(tick, config):
        return no_action(
            f"idle for {tick.idle_for_s:.0f} s of the {config.idle_window_s:.0f} s window"
        ), GradualState(idle, False)
    return _idle_tick(obs, config, state.idle_period, tick.idle_for_s), GradualState(idle, True)


GRADUAL: Policy[GradualConfig, GradualState] = Policy(
    name="gradual",
    summary="WSL2's gradual mode: memory.reclaim steps every 10 s after 2 minutes of idle",
    decide=decide,
    config_type=GradualConfig,
    initial_state=GradualState,
    floor=lambda config, state: config.floor_bytes,
)
