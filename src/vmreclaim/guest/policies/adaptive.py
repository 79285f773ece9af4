"""`adaptive` (the default): return cold page cache while the guest is busy, fast when it is idle,
and keep the hot set by learning a floor from memory pressure and refaults.

Control law, once per tick (dt seconds since the previous one):

1. Floor. `floor` is the reclaimable cache (Active(file) + Inactive(file) + SReclaimable) not
   reclaimed, deep idle (step 5) aside. It starts at min_floor (WSL2's 128 MiB) and decays
   toward it by a few % of the gap per minute, so a floor raised by a burst can learn lower again.
2. Pressure (senpai/TMO): PSI memory `some` stall above the target share of wall time (senpai:
   10 ms per 6 s) means the guest is short of memory, whoever caused it: pause reclaim for
   pressure_hold_s and raise the floor to the cache there is now. Our own memory.reclaim writes do
   not count as stall ("mm: memcontrol: don't count limit-setting reclaim as memory pressure",
   Linux 5.8); refaults of pages we took do.
3. Refaults: workingset_refault_file * page size above a rate means we took hot pages: raise the
   floor by what refaulted plus a margin, and skip this tick. Without PSI this is the only
   back-off, and reasons say so.
4. Busy: the cold candidates are the inactive file list (memory.reclaim takes inactive pages
   first), above the floor, as it has stood for busy_min_age_s: its lowest size over that span.
   Cache written since then is not yet known to be cold (a file set just written and about to
   be read again sits on the inactive list until its second read), as in DAMON's and far
   memory's minimum age. Cache that was there before the agent started counts as old. This
   counts pages, not which pages: memory.reclaim still takes the list's oldest, and those may
   be young files when older inactive pages are mapped ones the kernel keeps (seen in the
   benchmark: the first two steps, while a hot set was being written just after boot, took
   31 MiB, about all of the 27 MiB of refaults the run counted; the refault feedback then
   raised the floor). Reclaim the share
   1 - exp(-dt / busy_time_constant_s) of them, so the cold set decays exponentially (tau 20 s:
   ~86 % gone in 40 s, 95 % in 60 s), at least min_step_bytes (the tail does not linger) and at
   most one 256 MiB memory.reclaim write. And never so much that the inactive list falls below
   what the kernel keeps against the active one (inactive_is_low() in mm/vmscan.c: inactive *
   int_sqrt(10 * GiB of file cache) >= active, ratio 1 under 1 GiB): below it, reclaim refills the
   inactive list from the active one, the hot set's pages among them, and takes them before their
   next read. Drop-behind (step 10) is not bound by this: it takes named files.
5. Idle (<= 0.5 % busy over a sliding 15 s window, not WSL2's 2 minutes): reclaim everything
   above the floor, at most idle_max_step_bytes (WSL2 gradual's largest step) per tick.
   Deep idle: once the guest has stayed idle for deep_idle_after_s more (about a minute of
   quiet in all, half WSL2's wait), reclaim once down to deep_idle_floor_bytes, below the
   floor. The floor keeps a working set for when work resumes; an idle guest's own needs (the
   shell, libc, this agent) are a few tens of MiB, and the cache the floor keeps costs more than
   its size: its pages pin blocks of free memory that free page reporting cannot return and
   compaction cannot empty (after the benchmark's real build, 94 MiB of such free memory beside
   139 MiB of cache; one reclaim to 33 MiB freed both, and the host held 14 MiB above the
   guest's rest). WSL2 gradual ends there too: its 256 MiB step empties the cache far below its
   own 128 MiB floor. The learned floor is kept for the next busy period.
6. Steps under min_step_bytes are not worth a write (oVirt MoM ignores small changes), reclaims
   are at least min_reclaim_interval_s apart, and nothing happens on incomplete data.
7. Where reclaim cannot be bounded (no memory.reclaim, or swap on without swappiness=), the only
   method drops all clean cache, hot set included: do that only when idle, once per idle period.
8. Compact when free memory in blocks below the reporting order (which free page reporting cannot
   return) is large, at most every compact_interval_s. A compaction that did not shrink it by
   compact_min_bytes is retried at doubling intervals (up to compact_max_interval_s) until one
   helps or fragmentation grows past what it left. Busy, and while the agent is still freeing
   cache (files holding compact_min_bytes are waiting for drop-behind, or it reclaimed or split
   within compact_settle_s), the amount must pass busy_compact_min_bytes instead: a pass takes its
   CPU from the workload whatever it finds (under pgbench, compaction was half of the agent's
   CPU and one pass moved 18 MiB for it), and the next drop leaves new small blocks. Once the
   freeing settles, one pass takes them all: on the tick of the last drop, right after it.
   Idle, a reclaim of compact_min_bytes or more is compacted on its own tick, back-off or not,
   as WSL2 gradual does after every step: a pass 30 s later left the host 88-116 MiB above the
   guest's rest after the real build, in 4 traces of 4 (see _plan_compaction). And when the
   load stops (a tick at idle_busy_ratio or less) after a pass that ran under it, one more
   pass comes compact_interval_s after that one, back-off or not, from quiet_compact_min_bytes
   up, whatever share of free memory that is: what was running has freed its memory since
   (see _plan_compaction). Every pass flushes the kernel's per-CPU free lists first and keeps
   them near empty through it (actions.percpu_lists_flushed): their pages pin the blocks they
   lie in, no compaction moves them, and the pages a pass frees would go there and pin the
   blocks it emptied.
9. Huge pages that processes partly freed hold their free part until the deferred split
   shrinker runs, which the kernel does under memory pressure only. When they hold more than
   thp_split_min_bytes, split them (busy or idle: it costs no page cache, see
   actions.split_huge_pages) and compact, since the freed pages land in small blocks; at most
   every thp_split_interval_s, doubling the wait while splits free less than thp_split_min_bytes
   (pinned pages cannot be split).
10. Drop-behind: files closed after writing and not read for drop_behind_age_s are cold for
   certain (vmreclaim.guest.dropbehind watches both); drop their cache every tick, busy or idle,
   paused or not, since no one is using it. What they hold comes out of steps 4-5's amounts, so
   memory.reclaim does not take as much again from the list's other pages, the hot set's among
   them.
No step drops dentries and inodes to unpin small free blocks. One did (drop_caches=2 and a
compaction, idle, once per idle period, from 2026-12-01 to 2026-12-07): it never moved more
than 2 MiB of them, and after the real build the deep reclaims that came after it left the
host 0, 30, 44 and 50 MiB above the guest's rest, those without it 14 and 16 MiB
(docs/benchmarks.md, build-real).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

from vmreclaim.guest.actions import MAX_RECLAIM_WRITE_BYTES, plan_reclaim
from vmreclaim.guest.observe import FreeSplit, Observation
from vmreclaim.guest.policies.base import (
    CACHE_PARTS,
    CPU_PARTS,
    REFAULT_PARTS,
    Decision,
    Policy,
    counter_delta,
    incomplete_reason,
    missing_parts,
    no_action,
)
from vmreclaim.guest.policies.wsl2_idle import WSL2_IDLE_BUSY_RATIO, own_time_clamped
from vmreclaim.units import format_size as fmt


@dataclass(frozen=True)
class AdaptiveConfig:
    # Reclaimable cache never taken (WSL2 gradual's floor): libc, the shell, the agent itself.
    min_floor_bytes: int = 128 << 20
    # The learned floor never rises above this share of MemTotal.
    max_floor_ratio: float = 0.5
    # Share of (floor - min_floor) the floor loses per minute (senpai relaxes by ~1 % a step).
    floor_decay_ratio_per_min: float = 0.05
    # Busy: cold cache above the floor decays with this time constant (see step 4 above).
    busy_time_constant_s: float = 20.0
    # Busy: inactive cache is a candidate once it has been there this long (step 4). Long
    # enough for a file set that is being re-read to be read twice and leave the list.
    busy_min_age_s: float = 20.0
    # Busy: largest reclaim per tick, one bounded memory.reclaim write (actions' write bound).
    busy_max_step_bytes: int = MAX_RECLAIM_WRITE_BYTES
    # Idle: CPU busy share at most this over idle_window_s (WSL2's 0.5 % threshold).
    idle_busy_ratio: float = WSL2_IDLE_BUSY_RATIO
    idle_window_s: float = 15.0
    # Idle: largest reclaim per tick (WSL2 gradual's largest step, 1 GiB).
    idle_max_step_bytes: int = 1 << 30
    # Deep idle (step 5): this long idle, counted from the first idle tick (so after about
    # idle_window_s + this of quiet), reclaim once down to deep_idle_floor_bytes; 0 turns it off.
    deep_idle_after_s: float = 45.0
    deep_idle_floor_bytes: int = 32 << 20
    # Smaller reclaims are not worth a write.
    min_step_bytes: int = 16 << 20
    # Least time between two reclaims; below a 2 s tick so each tick may reclaim despite jitter.
    min_reclaim_interval_s: float = 1.5
    # PSI memory `some` stall share of wall time tolerated (senpai: 10 ms per 6 s, ~0.17 %).
    pressure_target_ratio: float = 0.010 / 6
    # How long reclaim pauses after pressure above the target (five senpai intervals).
    pressure_hold_s: float = 30.0
    # Refaulted cache per second above which we took hot pages (256 pages/s of 4 KiB).
    refault_threshold_bytes_per_s: int = 1 << 20
    # The floor rises by what refaulted times (1 + this).
    refault_margin_ratio: float = 0.5
    # Compact when free memory in unreportable blocks exceeds both of these ... What it costs
    # the host is the absolute amount, so the share is only a guard for very large guests.
    # Seen here: after adaptive reclaimed 800 MiB of cache while the files were still being
    # written, 104 MiB of free memory sat below order 9 (6 % of free, under the 10 % first
    # chosen), and one compaction returned 80 MiB more to the host.
    compact_min_bytes: int = 64 << 20
    compact_min_ratio: float = 0.02  # ... share of all free memory
    # When the load stops after a pass that ran under it, one more pass from this much on
    # (step 8). After the real build the build's end left 37-42 MiB unreportable, under
    # compact_min_bytes, and the host 160-170 MiB above the guest's rest until the deep reclaim
    # a minute later (benchmark, 3 runs of 3); a pass in the quiet leaves 20-35 MiB. Not
    # compact_min_ratio: this pass comes once per load stop.
    quiet_compact_min_bytes: int = 32 << 20
    # ... and at least this long after the last compaction. Short, because one that has little
    # to move is cheap (0.2 s in a TCG guest here) and the kernel may cut one short; the
    # doubling below keeps a guest that stays fragmented from paying it every time.
    compact_interval_s: float = 10.0
    # Longest wait between compactions that do not help. Not never: the kernel may cut one short
    # (seen here: one compaction stopped after 1,024 pages, the next on the same guest moved
    # 52,676 and returned 358 MiB); pinned pages make them useless for good.
    compact_max_interval_s: float = 600.0
    # Busy and still freeing cache: compact only past this much unreportable free memory...
    busy_compact_min_bytes: int = 128 << 20
    # ... until no file waits for drop-behind and the agent has reclaimed nothing for this
    # long (three 2 s ticks).
    compact_settle_s: float = 6.0
    # Split partly freed huge pages when they hold more than this (step 9). Seen in a 2 GiB
    # lab guest: 1 GiB touched then released in sub-2 MiB ranges held 958 MiB this way.
    thp_split_min_bytes: int = 64 << 20
    # ... at most this often. One split ran in 0.6 s for 511 huge pages in a TCG guest; each
    # also drops the unused dentries and inodes, so not every tick.
    thp_split_interval_s: float = 30.0
    # Longest wait between splits that do not free thp_split_min_bytes.
    thp_split_max_interval_s: float = 600.0
    # Step 10: files closed after writing and not read since for this long have their cache
    # dropped; 0 turns drop-behind off (and the agent's watch of writes with it). A file read
    # back later than this is read from disk once. Tools that drop behind themselves (dd's
    # oflag=nocache, rsync's --drop-cache) wait 0 s; 20 s left the last 20 s of a backup's
    # writes on the host in pgbench-ro (45 % of its cold files back, 80 % asked).
    drop_behind_age_s: float = 10.0
    # ... when they hold at least this much (an upper bound: their sizes).
    drop_behind_min_bytes: int = 4 << 20


# After a split, more compactions this far apart (see _plan_compaction).
SPLIT_FOLLOWUP_COMPACTIONS = 3
SPLIT_FOLLOWUP_INTERVAL_S = 4.0


class CpuPoint(NamedTuple):
    timestamp: float
    busy_jiffies: int
    total_jiffies: int


class Activity(NamedTuple):
    """This tick's time step and CPU state, as the reclaim step needs them."""

    dt: float
    idle: bool
    cpu: str  # the CPU state for reasons, e.g. "busy (12.5 % CPU)"
    dropping_bytes: int = 0  # cache drop-behind takes this tick (step 10)
    deep: bool = False  # idle long enough for the deep idle floor (step 5)


class Counters(NamedTuple):
    """The cumulative counters of the previous tick, for deltas."""

    timestamp: float
    stall_us: int | None  # PSI memory some total; None without PSI
    refault_pages: int


@dataclass(frozen=True)
class AdaptiveState:
    last: Counters | None = None
    cpu_window: tuple[CpuPoint, ...] = ()  # samples covering the last idle_window_s
    # (timestamp, Inactive(file) bytes) covering the last busy_min_age_s
    inactive_window: tuple[tuple[float, int], ...] = ()
    floor_bytes: int | None = None  # None: min_floor_bytes
    paused_until: float | None = None
    last_reclaim_at: float | None = None
    last_compact_at: float | None = None
    last_freed_at: float | None = None  # the agent last reclaimed or split (step 8)
    # Unreportable free memory just before the last compaction and on the first tick after it,
    # and how many compactions in a row did not shrink it by compact_min_bytes.
    compact_before_bytes: int | None = None
    compact_baseline_bytes: int | None = None
    compact_failures: int = 0
    # The last compaction ran on a busy tick: once the load stops, one more pass may come,
    # back-off or not (step 8).
    compacted_under_load: bool = False
    idle_reclaimed: bool = False  # reclaimed in this idle period (unbounded reclaim: only once)
    idle_since: float | None = None  # the first idle tick of this idle period
    deep_reclaimed: bool = False  # step 5's deep idle reclaim ran in this idle period
    last_split_at: float | None = None
    # Bytes held in partly freed huge pages when the last split was decided, until the next
    # tick judges it; and how many splits in a row freed less than thp_split_min_bytes.
    split_before_bytes: int | None = None
    split_failures: int = 0
    compact_followups: int = 0  # compactions still to try soon after the last split


_Point = TypeVar("_Point", CpuPoint, tuple[float, int])


def _slide(window: tuple[_Point, ...], point: _Point, span_s: float) -> tuple[_Point, ...]:
    """Append `point`; drop samples older than needed to cover `span_s` back from it. A
    sample's first field is its timestamp."""
    points = [p for p in window if p[0] < point[0]] + [point]
    start = 0
    for index, p in enumerate(points):
        if point[0] - p[0] >= span_s:
            start = index  # the newest sample still at least span_s old
    return tuple(points[start:])


def _cpu_between(first: CpuPoint, last: CpuPoint) -> tuple[int, int]:
    """(busy jiffies, all jiffies) from one sample to a later one, the agent's own time out."""
    return (
        own_time_clamped(last.busy_jiffies - first.busy_jiffies),
        last.total_jiffies - first.total_jiffies,
    )


def _idle(window: tuple[CpuPoint, ...], config: AdaptiveConfig) -> tuple[bool, str]:
    """(idle over the whole window, the CPU state in words for reasons)."""
    first, last = window[0], window[-1]
    busy, total = _cpu_between(first, last)
    span = last.timestamp - first.timestamp
    if total <= 0:
        return False, "not idle (no CPU time measured)"
    percent = 100 * busy / total
    if busy > config.idle_busy_ratio * total:
        return False, f"busy ({percent:.1f} % CPU)"
    if span < config.idle_window_s:
        return False, f"quiet for {span:.0f} s of the {config.idle_window_s:.0f} s idle window"
    return True, f"idle ({percent:.1f} % CPU over {span:.0f} s)"


def _quiet_tick(window: tuple[CpuPoint, ...], config: AdaptiveConfig) -> bool:
    """Whether the guest was quiet (idle_busy_ratio or less) over the last tick alone."""
    if len(window) < 2:
        return False
    busy, total = _cpu_between(window[-2], window[-1])
    return total > 0 and busy <= config.idle_busy_ratio * total


def _decay(floor: int, dt: float, config: AdaptiveConfig) -> int:
    gap = floor - config.min_floor_bytes
    if gap <= 0:
        return config.min_floor_bytes
    return config.min_floor_bytes + int(gap * (1 - config.floor_decay_ratio_per_min) ** (dt / 60))


def _worth_a_pass(
    free: FreeSplit, config: AdaptiveConfig, settling: bool, *, load_stopped: bool
) -> bool:
    """Whether enough free memory is unreportable for a compaction (step 8's amounts)."""
    stuck = free.unreportable_bytes
    if settling:
        least = config.busy_compact_min_bytes
    elif load_stopped:
        # Once per load stop, so the share that guards large guests from paying often is not
        # asked: in a 2 GiB guest it is 36 MiB, and it held back the pass at 33.9 MiB after a
        # build (1 run of 3; without it, the pass came in 3 runs of 3, twice at 34-35 MiB).
        return stuck > config.quiet_compact_min_bytes
    else:
        least = config.compact_min_bytes
    total_free = free.reportable_bytes + free.unreportable_bytes
    return stuck > least and stuck > config.compact_min_ratio * total_free


def _compaction(
    obs: Observation,
    config: AdaptiveConfig,
    state: AdaptiveState,
    settling: bool,
    *,
    load_stopped: bool = False,
) -> str | None:
    """Why to compact now, or None. `settling`: busy, and the agent is still freeing cache.
    `load_stopped`: the last compaction ran under a load that has stopped since; from
    quiet_compact_min_bytes up, compact_interval_s after it, whatever the back-off says."""
    free = obs.free
    if (
        free is None
        or not obs.reclaim.compact_memory
        or not _worth_a_pass(free, config, settling, load_stopped=load_stopped)
    ):
        return None
    total_free = free.reportable_bytes + free.unreportable_bytes
    stuck = free.unreportable_bytes
    share = 100 * stuck / total_free
    why = (
        f"{fmt(stuck)} free in blocks below order {free.reporting_order} "
        f"({share:.0f} % of free) cannot be reported"
    )
    wait = config.compact_interval_s
    baseline = state.compact_baseline_bytes
    if load_stopped:
        why = f"{why}, and the load the last pass ran under has stopped"
    elif baseline is not None and stuck - baseline <= config.compact_min_bytes:
        # No worse than the last compaction left: retry, less often each time it did not help.
        wait = min(wait * 2**state.compact_failures, config.compact_max_interval_s)
    last = state.last_compact_at
    if last is not None and obs.timestamp - last < wait:
        return None
    return why


def _split(
    obs: Observation, config: AdaptiveConfig, state: AdaptiveState
) -> tuple[str | None, AdaptiveState]:
    """(why to split partly freed huge pages now or None, the state with the last split judged)."""
    held = obs.huge_pages.partly_freed_bytes
    if held is None or not obs.reclaim.drop_caches:
        return None, state
    if state.split_before_bytes is not None:
        helped = state.split_before_bytes - held >= config.thp_split_min_bytes
        failures = 0 if helped else state.split_failures + 1
        state = dataclasses.replace(state, split_before_bytes=None, split_failures=failures)
    if held < config.thp_split_min_bytes:
        return None, state
    wait = min(
        config.thp_split_interval_s * 2**state.split_failures, config.thp_split_max_interval_s
    )
    last = state.last_split_at
    if last is not None and obs.timestamp - last < wait:
        return None, state
    state = dataclasses.replace(state, last_split_at=obs.timestamp, split_before_bytes=held)
    return f"{fmt(held)} held in partly freed huge pages", state


def inactive_kept_by_kernel(inactive: int, active: int) -> int:
    """The inactive file list below which reclaim deactivates active pages (step 4): the least
    inactive with inactive * ratio >= active, ratio = int_sqrt(10 * GiB on both lists), 1 under
    1 GiB (inactive_is_low() in mm/vmscan.c, Linux 4.10+)."""
    gib = (inactive + active) >> 30
    ratio = math.isqrt(10 * gib) if gib else 1
    return -(-active // ratio)


def _reclaim_step(  # noqa: PLR0911 - one return per case of the law, each with its reason
    obs: Observation, config: AdaptiveConfig, state: AdaptiveState, activity: Activity
) -> tuple[int, str]:
    """(bytes to reclaim, why) from the floor, idleness and the kernel's reclaim method."""
    mem = obs.memory
    reclaimable, inactive = mem.reclaimable_cache_bytes, mem.inactive_file_bytes
    assert reclaimable is not None
    assert inactive is not None
    idle, cpu = activity.idle, activity.cpu
    floor = state.floor_bytes or config.min_floor_bytes
    floor_name = "floor"
    if activity.deep and config.deep_idle_floor_bytes < floor:
        floor, floor_name = config.deep_idle_floor_bytes, "deep idle floor"
    above = reclaimable - floor - activity.dropping_bytes
    if above < config.min_step_bytes:
        # With the CPU state: an idle guest at its floor and a busy one read alike otherwise.
        return 0, f"{cpu}: {fmt(reclaimable)} reclaimable is within the {fmt(floor)} {floor_name}"
    plan = plan_reclaim(obs.reclaim, mem.swap_active)
    if plan.method == "none":
        return 0, f"cannot reclaim: {plan.reason}"
    if plan.method == "drop_caches":
        if not idle:
            return 0, f"{cpu}: waiting for idle, reclaim would drop all cache ({plan.reason})"
        if state.idle_reclaimed:
            return 0, f"{cpu}: all clean cache already dropped in this idle period"
        return above, f"{cpu}: dropping clean cache once per idle period ({plan.reason})"
    last = state.last_reclaim_at
    if last is not None and obs.timestamp - last < config.min_reclaim_interval_s:
        return 0, "rate limit: reclaimed less than min_reclaim_interval_s ago"
    if idle:
        step = min(above, config.idle_max_step_bytes)
        return step, f"{cpu}: {fmt(above)} reclaimable above the {fmt(floor)} {floor_name}"
    # The inactive list as it has stood for busy_min_age_s; what came since is too young.
    settled = min(size for _, size in state.inactive_window) if state.inactive_window else 0
    young = inactive - settled
    waits = f" ({fmt(young)} newer than {config.busy_min_age_s:.0f} s waits)" if young > 0 else ""
    kept = inactive_kept_by_kernel(inactive, mem.active_file_bytes or 0)
    cold = min(settled - activity.dropping_bytes, above, inactive - activity.dropping_bytes - kept)
    if cold < config.min_step_bytes:
        return 0, (
            f"{cpu}: {fmt(cold)} inactive cache above the {fmt(floor)} floor and the "
            f"{fmt(kept)} the kernel keeps inactive, too little{waits}"
        )
    # Exponential decay of the cold set: this tick's share of it, clamped to the bounds.
    share = 1 - math.exp(-activity.dt / config.busy_time_constant_s)
    step = min(max(int(cold * share), config.min_step_bytes), config.busy_max_step_bytes, cold)
    return step, f"{cpu}: {fmt(cold)} inactive cache above the {fmt(floor)} floor{waits}"


def _back_off(
    obs: Observation, config: AdaptiveConfig, last: Counters, floor: int
) -> tuple[str, int, bool] | None:
    """(why, new floor, pause) when pressure or refaults say stop; None to go on."""
    mem = obs.memory
    reclaimable, total = mem.reclaimable_cache_bytes, mem.total_bytes
    assert reclaimable is not None
    assert total is not None
    max_floor = max(config.min_floor_bytes, int(total * config.max_floor_ratio))
    dt = obs.timestamp - last.timestamp
    pressure = obs.memory_pressure
    if pressure is not None and last.stall_us is not None:
        stall_us = counter_delta(pressure.some.total_us, last.stall_us)
        target_us = config.pressure_target_ratio * dt * 1e6
        if stall_us > target_us:
            new_floor = min(max(floor, reclaimable), max_floor)
            return (
                f"memory pressure: {stall_us / 1000:.1f} ms stalled in {dt:.1f} s (target "
                f"{target_us / 1000:.1f} ms); pausing {config.pressure_hold_s:.0f} s, "
                f"floor {fmt(new_floor)}",
                new_floor,
                True,
            )
    refault_pages = obs.vmstat.workingset_refault_file
    assert refault_pages is not None
    refault = counter_delta(refault_pages, last.refault_pages) * obs.page_size
    if refault > config.refault_threshold_bytes_per_s * dt:
        new_floor = min(floor + int(refault * (1 + config.refault_margin_ratio)), max_floor)
        return (
            f"refaults: {fmt(refault)} of cache read back in {dt:.1f} s, hot pages were taken; "
            f"floor {fmt(floor)} -> {fmt(new_floor)}",
            new_floor,
            False,
        )
    return None


def _plan_compaction(
    obs: Observation,
    config: AdaptiveConfig,
    state: AdaptiveState,
    split: bool,
    settling: bool,
    *,
    idle_step: int = 0,
    quiet: bool = False,
) -> tuple[str | None, AdaptiveState]:
    """(why to compact now or None, the state with this tick's compaction bookkeeping).

    Judges the last compaction on the first tick after it (step 8). After a split, compacts at
    once and then up to SPLIT_FOLLOWUP_COMPACTIONS more times, SPLIT_FOLLOWUP_INTERVAL_S apart,
    while much free memory stays unreportable: one pass can leave much of what a split freed
    in small blocks (seen in the benchmark: 211 MiB after the first pass, 52 MiB after a later
    one), and these passes are not judged, so they do not slow step 8's retries.

    `idle_step`: what this tick reclaims while idle. From compact_min_bytes up, compact right
    after it, whatever the back-off says, and do not judge that pass (its "before" is from
    before the reclaim). Waiting costs: after the real build, a deep reclaim compacted 30-36 s
    later (the back-off) left the host 88-116 MiB above the guest's rest in 4 traces of 4;
    compacted 2 s later, 20 MiB in 1 of 1; the same reclaims by hand, compacted at once, at most
    28 MiB in 7 of 7, and 30 s later 42 MiB (docs/benchmarks/one-off/build_real_idle.py,
    2026-12-07).

    `quiet`: this tick alone was quiet (_quiet_tick). A pass that ran under load says little of
    what one does once the load has stopped: the processes that were running freed their
    memory since. So after a busy pass, once the load stops, one more pass comes
    compact_interval_s after it, whatever its back-off, from quiet_compact_min_bytes up; it is
    judged as usual. Seen after the real build (benchmark, 2026-12-07, 3 runs of 3, each pass
    with the per-CPU lists held down): the pass while the last compiler step ran took the
    unreportable free memory from 135-145 to 53-57 MiB; the compilers' exit left 37-42 MiB,
    under compact_min_bytes, and the footprint at 336-346 MiB for a minute, until the deep
    reclaim's pass took it to 180 MiB.
    Their freed pages also sit on the per-CPU lists, which buddyinfo does not count and a
    pass's flush hands back. A pass by hand at the build's end took the footprint from 472 to
    308 MiB within 5 s (2 of 2; docs/benchmarks/one-off/build_real_idle.py, mode atend).
    """
    now = obs.timestamp
    if state.last_compact_at is not None and state.compact_baseline_bytes is None and obs.free:
        left = obs.free.unreportable_bytes
        before = state.compact_before_bytes
        failures = state.compact_failures  # a compaction after a split is not judged
        if before is not None:
            failures = 0 if before - left >= config.compact_min_bytes else failures + 1
        state = dataclasses.replace(state, compact_baseline_bytes=left, compact_failures=failures)
    load_stopped = quiet and state.compacted_under_load
    compact = _compaction(obs, config, state, settling, load_stopped=load_stopped)
    if (
        load_stopped
        and compact is None
        and not (obs.free and _worth_a_pass(obs.free, config, settling, load_stopped=True))
    ):
        state = dataclasses.replace(state, compacted_under_load=False)  # nothing left to redo
    after_reclaim = idle_step >= config.compact_min_bytes
    # A split or this tick's reclaim changes what the compaction faces: not judged.
    judged = compact is not None and not split and not after_reclaim
    followups = SPLIT_FOLLOWUP_COMPACTIONS if split else state.compact_followups
    if compact is None and split:
        # The split frees pages in blocks of order 0-3 (seen here), below any reporting order.
        compact = "after splitting huge pages, whose freed pages lie in small blocks"
    elif compact is None and after_reclaim:
        compact = (
            f"right after reclaiming {fmt(idle_step)} while idle, before new allocations "
            "settle among the freed pages"
        )
    elif compact is None and followups and obs.free and state.last_compact_at is not None:
        stuck = obs.free.unreportable_bytes
        if stuck <= config.compact_min_bytes:
            followups = 0
        elif now - state.last_compact_at >= SPLIT_FOLLOWUP_INTERVAL_S:
            followups -= 1
            compact = f"{fmt(stuck)} free in small blocks after splitting huge pages, again"
    state = dataclasses.replace(state, compact_followups=followups)
    if compact is not None:
        state = dataclasses.replace(
            state,
            last_compact_at=now,
            compact_baseline_bytes=None,
            compact_before_bytes=obs.free.unreportable_bytes if obs.free and judged else None,
            compacted_under_load=not quiet,
        )
    return compact, state


def decide(
    obs: Observation, config: AdaptiveConfig, state: AdaptiveState
) -> tuple[Decision, AdaptiveState]:
    missing = missing_parts(obs, CPU_PARTS + CACHE_PARTS + REFAULT_PARTS)
    if missing:
        return no_action(incomplete_reason(missing)), state
    refault_pages = obs.vmstat.workingset_refault_file
    assert obs.cpu is not None
    assert refault_pages is not None
    now = obs.timestamp
    pressure = obs.memory_pressure
    counters = Counters(now, None if pressure is None else pressure.some.total_us, refault_pages)
    point = CpuPoint(now, obs.cpu.busy_jiffies, obs.cpu.total_jiffies)
    window = _slide(state.cpu_window, point, config.idle_window_s)
    inactive_bytes = obs.memory.inactive_file_bytes
    assert inactive_bytes is not None
    # Until busy_min_age_s has passed the first sample stays in the window: cache the agent
    # found when it started counts as old.
    inactive_window = _slide(state.inactive_window, (now, inactive_bytes), config.busy_min_age_s)
    last = state.last
    state = dataclasses.replace(
        state, last=counters, cpu_window=window, inactive_window=inactive_window
    )
    if last is None or now <= last.timestamp:
        return no_action("first sample: measuring"), state
    drop_before, dropping, waiting, drop_why = _drop_behind(obs, config)
    decision, state = _decide_reclaim(obs, config, state, last, dropping=dropping, waiting=waiting)
    if drop_before is not None:
        decision = dataclasses.replace(
            decision, drop_written_before=drop_before, drop_reason=drop_why
        )
    return decision, state


def _drop_behind(obs: Observation, config: AdaptiveConfig) -> tuple[float | None, int, int, str]:
    """(drop the files closed before this time, or None; what they hold; what files closed
    since hold, still waiting; why): step 10."""
    written = obs.written
    if written is None or config.drop_behind_age_s <= 0:
        return None, 0, 0, ""
    before = obs.timestamp - config.drop_behind_age_s
    files, size = written.closed_before(before)
    waiting = written.size_bytes - size
    if size < config.drop_behind_min_bytes:
        return None, 0, waiting + size, ""
    why = (
        f"{files} file(s) of {fmt(size)} written and not read for {config.drop_behind_age_s:.0f} s"
    )
    return before, size, waiting, why


def _decide_reclaim(
    obs: Observation,
    config: AdaptiveConfig,
    state: AdaptiveState,
    last: Counters,
    *,
    dropping: int,
    waiting: int,
) -> tuple[Decision, AdaptiveState]:
    """Steps 1-9 of the law, on a tick that has a previous one. `dropping`: what drop-behind
    takes this tick; `waiting`: what the files it will take later hold."""
    now = obs.timestamp
    pressure = obs.memory_pressure
    dt = now - last.timestamp
    floor = _decay(state.floor_bytes or config.min_floor_bytes, dt, config)
    state = dataclasses.replace(state, floor_bytes=floor)
    no_psi = "" if pressure is not None else " (no PSI: backing off on refaults only)"

    backing_off = _back_off(obs, config, last, floor)
    if backing_off is not None:
        why, floor, pause = backing_off
        paused_until = now + config.pressure_hold_s if pause else state.paused_until
        state = dataclasses.replace(state, floor_bytes=floor, paused_until=paused_until)
        return no_action(why + no_psi), state
    if state.paused_until is not None and now < state.paused_until:
        left = state.paused_until - now
        return no_action(f"paused after memory pressure, {left:.0f} s left"), state

    idle, cpu = _idle(state.cpu_window, config)
    if not idle:
        state = dataclasses.replace(
            state, idle_reclaimed=False, idle_since=None, deep_reclaimed=False
        )
    elif state.idle_since is None:
        state = dataclasses.replace(state, idle_since=now)
    idle_for = _deep_idle_for(config, state, now)
    deep = idle_for is not None
    if idle_for is not None:
        cpu = f"{cpu}; quiet for {idle_for + config.idle_window_s:.0f} s"
    step, why = _reclaim_step(obs, config, state, Activity(dt, idle, cpu, dropping, deep))
    split, state = _split(obs, config, state)
    if step > 0 or split is not None:
        state = dataclasses.replace(state, last_freed_at=now)
    freed_at = state.last_freed_at
    freeing = freed_at is not None and now - freed_at < config.compact_settle_s
    # Files due for drop-behind hold off a pass only when they hold what a pass is worth:
    # a database's WAL (16 MiB segments, one waiting at any time under pgbench-rw) would
    # otherwise hold it off for good.
    settling = not idle and (freeing or waiting >= config.compact_min_bytes)
    compact, state = _plan_compaction(
        obs,
        config,
        state,
        split is not None,
        settling,
        idle_step=step if idle else 0,
        quiet=_quiet_tick(state.cpu_window, config),
    )
    if step > 0:
        why = f"{why}; reclaiming {fmt(step)}"
        state = dataclasses.replace(
            state,
            last_reclaim_at=now,
            idle_reclaimed=state.idle_reclaimed or idle,
            deep_reclaimed=state.deep_reclaimed or deep,
        )
    decision = Decision(
        reclaim_bytes=step,
        compact=compact is not None,
        reason=why + no_psi,
        compact_reason=compact or "",
        split_huge_pages=split is not None,
        split_reason=split or "",
    )
    return decision, state


def _deep_idle_for(config: AdaptiveConfig, state: AdaptiveState, now: float) -> float | None:
    """How long the guest has been idle when this tick may reclaim down to the deep idle floor
    (step 5), else None."""
    since = state.idle_since
    if since is None or state.deep_reclaimed or config.deep_idle_after_s <= 0:
        return None
    idle_for = now - since
    return idle_for if idle_for >= config.deep_idle_after_s else None


def _holding_back(state: AdaptiveState, now: float) -> str | None:
    """Why reclaim is paused at `now` (step 2), or None."""
    if state.paused_until is not None and now < state.paused_until:
        return f"paused after memory pressure, {state.paused_until - now:.0f} s left"
    return None


ADAPTIVE: Policy[AdaptiveConfig, AdaptiveState] = Policy(
    name="adaptive",
    summary="ours: cold cache while busy, all above a learned floor when idle; backs off on "
    "PSI and refaults",
    decide=decide,
    config_type=AdaptiveConfig,
    initial_state=AdaptiveState,
    watches_writes=lambda config: config.drop_behind_age_s > 0,
    floor=lambda config, state: state.floor_bytes or config.min_floor_bytes,
    holds_back=lambda config, state, now: _holding_back(state, now),
)
