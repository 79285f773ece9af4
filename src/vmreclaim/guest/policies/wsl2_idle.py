"""WSL2's idle detector, shared by the `dropcache` and `gradual` baselines.

Source: microsoft/WSL, src/linux/init/util.cpp (2026), as summarised in the project's
field-notes §5: every 10 s read the `cpu` line of /proc/stat; busy = user+nice+system+irq+softirq
+steal; an interval is idle when busy <= 0.5 % of all CPU time; reclaim starts once a full 2-minute
window has been idle (older releases: 10 minutes, user time only). One busy interval ends the idle
period. Kept faithful, weaknesses included: a guest that is never fully idle never reclaims.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from vmreclaim.guest.observe import Observation

# WSL2 samples /proc/stat every 10 s.
WSL2_SAMPLE_INTERVAL_S = 10.0
# An interval is idle when busy time is at most 0.5 % of all CPU time.
WSL2_IDLE_BUSY_RATIO = 0.005
# Reclaim starts after 2 minutes of idle intervals (10 minutes before the 2026 gradual mode).
WSL2_IDLE_WINDOW_S = 120.0
# The daemon ticks every interval_s (2 s by default), so a 10 s sample falls on a tick give or take
# scheduling jitter: a sample up to this much early still counts, or it would slip a whole tick.
SAMPLE_SLACK_S = 0.5


@dataclass(frozen=True)
class Wsl2IdleConfig:
    """The idle detector's settings, which both WSL2 baselines' configs begin with."""

    # Seconds between /proc/stat samples (WSL2: 10 s, whatever the daemon's tick).
    sample_interval_s: float = WSL2_SAMPLE_INTERVAL_S
    # Largest busy share of CPU time for an idle interval (WSL2: 0.5 %).
    idle_busy_ratio: float = WSL2_IDLE_BUSY_RATIO
    # Idle time before reclaim (WSL2 2026: 2 minutes; older releases 10 minutes).
    idle_window_s: float = WSL2_IDLE_WINDOW_S


@dataclass(frozen=True)
class IdleState:
    """The last 10 s sample and how long the guest has been idle since."""

    sampled_at: float | None = None  # timestamp of the last sample; None before the first
    busy_jiffies: int = 0
    total_jiffies: int = 0
    idle_since: float | None = None  # start of the current run of idle intervals


@dataclass(frozen=True)
class IdleTick:
    """What the detector saw this tick. Baselines act only on ticks that took a sample."""

    sampled: bool
    busy: bool  # the interval just sampled was busy: the idle period, if any, is over
    busy_ratio: float | None  # of the interval just sampled; None when none was
    idle_for_s: float  # 0 when the last sampled interval was busy


def own_time_clamped(busy_jiffies: int) -> int:
    """An interval's busy time after the agent's own CPU time came out of it, at least 0.

    /proc/stat samples busy time at each timer tick, while the agent's own time (from
    /proc/self/stat) follows what it really ran. In an otherwise idle guest the agent can run
    more than the ticks that caught it, so the discounted busy time of an interval goes below
    zero: everything busy in it was the agent. Seen in the benchmark, where taking that for
    counters going backwards restarted WSL2's 2-minute window every minute or so.
    """
    return max(0, busy_jiffies)


def advance_idle(
    obs: Observation, state: IdleState, config: Wsl2IdleConfig
) -> tuple[IdleTick, IdleState]:
    """Take a sample when `config.sample_interval_s` has passed since the last; track the idle
    run.

    Needs obs.cpu (the caller checks completeness first).
    """
    cpu = obs.cpu
    assert cpu is not None
    now = obs.timestamp
    fresh = dataclasses.replace(
        state, sampled_at=now, busy_jiffies=cpu.busy_jiffies, total_jiffies=cpu.total_jiffies
    )
    if state.sampled_at is None:
        return IdleTick(False, False, None, 0.0), dataclasses.replace(fresh, idle_since=None)
    if now - state.sampled_at < config.sample_interval_s - SAMPLE_SLACK_S:
        idle_for = 0.0 if state.idle_since is None else now - state.idle_since
        return IdleTick(False, False, None, idle_for), state
    total = cpu.total_jiffies - state.total_jiffies
    if total <= 0:
        # Counters went backwards or did not move: no verdict on this interval; start over.
        return IdleTick(False, True, None, 0.0), dataclasses.replace(fresh, idle_since=None)
    busy = own_time_clamped(cpu.busy_jiffies - state.busy_jiffies)
    ratio = busy / total
    if ratio > config.idle_busy_ratio:
        return IdleTick(True, True, ratio, 0.0), dataclasses.replace(fresh, idle_since=None)
    # The idle run starts at the beginning of its first idle interval: the previous sample.
    idle_since = state.sampled_at if state.idle_since is None else state.idle_since
    return IdleTick(True, False, ratio, now - idle_since), dataclasses.replace(
        fresh, idle_since=idle_since
    )


def window_complete(tick: IdleTick, config: Wsl2IdleConfig) -> bool:
    """A full idle window has passed: WSL2 counts its 10 s samples, so the twelfth idle sample
    completes 2 minutes even when it was taken a little early (within SAMPLE_SLACK_S). Seen
    in the benchmark: "idle for 119.98 s" waited another 10 s."""
    return tick.idle_for_s >= config.idle_window_s - SAMPLE_SLACK_S


def busy_reason(tick: IdleTick, config: Wsl2IdleConfig) -> str:
    """Why a busy tick ends the idle period, with the share that made it busy."""
    if tick.busy_ratio is None:
        return "no verdict on the last interval (CPU counters did not advance): idle starts over"
    return (
        f"busy ({100 * tick.busy_ratio:.2f} % CPU over the last interval, above "
        f"{100 * config.idle_busy_ratio:.1f} %): waiting for a full idle window"
    )
