"""Pure measures over one recording. Amounts are bytes, times seconds from the recording's
start; nothing here reads a clock or a file."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace

from vmreclaim.bench.guestmem import PAGE, GuestMemory
from vmreclaim.bench.pgbench import DatabaseLoad
from vmreclaim.bench.recorder import NeedSample, Recording, Sample
from vmreclaim.guest.policies.gradual import GradualConfig
from vmreclaim.workloads.runtime_heap import HeapReport

GIB = float(1 << 30)
# Reclaimable cache a guest keeps for libc, the shell and the agent: WSL2 gradual's floor, which
# adaptive keeps too. What the host holds above rest plus this is what a policy should return.
KEPT_CACHE_BYTES = GradualConfig().floor_bytes
# How long after a runtime frees its heap the host should have it back: free page reporting
# returns freed memory within 2 to 7 s in this lab (README, "Measured here"), so 30 s leaves a
# policy time to act on what reporting alone cannot return.
HEAP_RETURN_WINDOW_S = 30.0


@dataclass(frozen=True)
class HotSet:
    passes: int
    mean_pass_seconds: float
    median_pass_seconds: float
    refaults: int
    """File refaults in the guest while the hot set was re-read (pages; the hot set's own, since
    nothing else is read again)."""
    size_bytes: int = 0
    """The hot set's size; 0 where unknown."""


@dataclass(frozen=True)
class SwapUse:
    growth_bytes: int
    """Swap in use in the guest at the end minus at the start."""
    swapped_out_bytes: int
    """Written to swap over the run (/proc/vmstat pswpout)."""


@dataclass(frozen=True)
class HeapFreed:
    freed_bytes: int
    """What the runtime gave back to the guest's kernel."""
    held_bytes: int
    """Of that, what the guest still held in partly freed huge pages right after the free."""
    returned_30_s_ratio: float
    """The share of freed_bytes that left the host within HEAP_RETURN_WINDOW_S of the free."""
    thp_held_end_bytes: int | None
    """Held in partly freed huge pages in the guest at the run's end."""


@dataclass(frozen=True)
class Measures:
    rest_bytes: int
    """Guest RAM resident on the host before the scenario started."""
    peak_bytes: int
    final_bytes: int
    mean_bytes: float
    excess_gib_s: float
    """Guest RAM held on the host beyond what the guest needs, integrated over the run."""
    excess_by_phase: tuple[tuple[str, float], ...]
    """excess_gib_s split by phase, the time before the first phase named "rest"."""
    last_phase_start_bytes: int
    reclaimable_bytes: int
    """What the host held at the last phase's start above rest plus KEPT_CACHE_BYTES."""
    returned_50_s: float | None
    """From the last phase's start until half of reclaimable_bytes had gone back."""
    returned_90_s: float | None
    cold_returned_ratio: float | None
    fragmented_returned_bytes: int | None
    hot: HotSet | None
    agent_cpu_ratio: float | None
    """The agent's CPU time over the run's wall time, in the guest (one CPU = 1.0)."""
    swap: SwapUse | None
    """Scenarios with swap: what went to swap over the run."""
    heap: HeapFreed | None
    """thp-heap-freed: what the runtime freed and what of it left the host."""
    cold_bytes: int = 0
    """The cold files the scenario wrote (cold_returned_ratio is a share of these)."""
    database: DatabaseLoad | None = None
    """Scenarios with a database: pgbench's throughput and latency, and the file refaults."""
    cold_need_growth_bytes: int | None = None
    """How much the guest's need (RAM - MemAvailable) grew from the last phase's start to the
    end: memory the workload itself took meanwhile (a database's shared buffers and backends),
    which the footprint carries beside any cold file. None without cold files or need reports."""

    @property
    def cold_returned_net_ratio(self) -> float | None:
        """cold_returned_ratio with the guest's own growth over the phase taken out of the
        footprint's rise: a second reading, never the one targets are judged on."""
        if self.cold_returned_ratio is None or self.cold_need_growth_bytes is None:
            return None
        growth = max(0, self.cold_need_growth_bytes) / self.cold_bytes
        return min(1.0, self.cold_returned_ratio + growth)


def needed_at(needs: list[NeedSample], seconds: float) -> int | None:
    """The latest known need at `seconds` (a step function), None before the first report."""
    index = bisect.bisect_right([n.seconds for n in needs], seconds) - 1
    return needs[index].needed_bytes if index >= 0 else None


def excess_gib_s(
    samples: list[Sample],
    needs: list[NeedSample],
    start: float = float("-inf"),
    end: float = float("inf"),
) -> float:
    """Integral of max(0, footprint - need) over time, trapezoid-free: each sample holds until
    the next one. Only samples taken in [start, end) count."""
    total = 0.0
    for current, following in zip(samples, samples[1:]):
        if not start <= current.seconds < end:
            continue
        need = needed_at(needs, current.seconds)
        if need is None:
            continue
        total += max(0, current.guest_ram_bytes - need) * (following.seconds - current.seconds)
    return total / GIB


def at(samples: list[Sample], seconds: float) -> Sample:
    """The first sample at or after `seconds` (the last one if none)."""
    index = bisect.bisect_left([s.seconds for s in samples], seconds)
    return samples[min(index, len(samples) - 1)]


def mean_over(samples: list[Sample], start: float, end: float) -> int:
    window = [s.guest_ram_bytes for s in samples if start <= s.seconds <= end]
    return round(sum(window) / len(window)) if window else at(samples, start).guest_ram_bytes


def time_to_return(
    samples: list[Sample], start: float, kept_bytes: int, fraction: float
) -> float | None:
    """Seconds from `start` until the footprint is down by `fraction` of what it held above
    `kept_bytes` at `start`; 0 when that was under 32 MiB (nothing worth returning), None if
    never."""
    held = at(samples, start).guest_ram_bytes
    above = held - kept_bytes
    if above < 32 << 20:
        return 0.0
    target = held - fraction * above
    for sample in samples:
        if sample.seconds >= start and sample.guest_ram_bytes <= target:
            return sample.seconds - start
    return None


def returned_share(samples: list[Sample], start: float, freed_bytes: int, window: float) -> float:
    """The host footprint's fall from just before `start` to `window` seconds after it, as a
    share of `freed_bytes` (0 to 1). Both ends are 1 s means: samples come at 4 Hz."""
    if freed_bytes <= 0:
        return 0.0
    before = mean_over(samples, start - 1.0, start)
    after = mean_over(samples, start + window - 1.0, start + window)
    return min(1.0, max(0.0, (before - after) / freed_bytes))


def phase_start(recording: Recording, name: str) -> float | None:
    return next((start for phase, start in recording.phases if phase == name), None)


def _spans(recording: Recording) -> list[tuple[str, float, float]]:
    """("rest", 0, first phase), then each phase from its start to the next one's (or on)."""
    names = ["rest", *(name for name, _ in recording.phases)]
    starts = [float("-inf"), *(start for _, start in recording.phases)]
    ends = [*starts[1:], float("inf")]
    return list(zip(names, starts, ends))


def measure(
    recording: Recording,
    *,
    cold_bytes: int = 0,
    fragmented_bytes: int = 0,
    hot: HotSet | None = None,
    agent_cpu_ratio: float | None = None,
    heap: HeapReport | None = None,
    guest_start: GuestMemory | None = None,
    guest_end: GuestMemory | None = None,
    swap: bool = False,
    database: DatabaseLoad | None = None,
) -> Measures:
    """`heap`: the runtime's report of a free at the last phase's start. `guest_start` and
    `guest_end`: the guest's own readings; its swap use is reported when `swap` is set, and
    its file refaults with a `database`."""
    samples = recording.samples
    if len(samples) < 2 or not recording.phases:
        raise ValueError("a recording needs samples and phases")
    first_phase = recording.phases[0][1]
    last_phase = recording.phases[-1][1]
    end = samples[-1].seconds
    rest = mean_over(samples, 0.0, first_phase)
    final = mean_over(samples, end - 3.0, end)
    cold_ratio = None
    need_growth = None
    if cold_bytes:
        cold_start = mean_over(samples, last_phase - 1.0, last_phase)
        cold_ratio = min(1.0, max(0.0, 1 - (final - cold_start) / cold_bytes))
        need_start, need_end = (
            needed_at(recording.needs, last_phase),
            needed_at(recording.needs, end),
        )
        if need_start is not None and need_end is not None:
            need_growth = need_end - need_start
    peak = max(s.guest_ram_bytes for s in samples)
    kept = rest + KEPT_CACHE_BYTES
    last_start = at(samples, last_phase).guest_ram_bytes
    # The phases cover the whole run, so the run's excess is their sum.
    by_phase = tuple(
        (name, excess_gib_s(samples, recording.needs, start, end))
        for name, start, end in _spans(recording)
    )
    return Measures(
        rest_bytes=rest,
        peak_bytes=peak,
        final_bytes=final,
        mean_bytes=sum(s.guest_ram_bytes for s in samples) / len(samples),
        excess_gib_s=sum(excess for _, excess in by_phase),
        excess_by_phase=by_phase,
        last_phase_start_bytes=last_start,
        reclaimable_bytes=max(0, last_start - kept),
        returned_50_s=time_to_return(samples, last_phase, kept, 0.5),
        returned_90_s=time_to_return(samples, last_phase, kept, 0.9),
        cold_returned_ratio=cold_ratio,
        cold_bytes=cold_bytes,
        fragmented_returned_bytes=(peak - final) if fragmented_bytes else None,
        hot=hot,
        agent_cpu_ratio=agent_cpu_ratio,
        swap=_swap_use(guest_start, guest_end) if swap else None,
        heap=None if heap is None else _heap_freed(samples, last_phase, heap, guest_end),
        database=None if database is None else _with_refaults(database, guest_start, guest_end),
        cold_need_growth_bytes=need_growth,
    )


def _with_refaults(
    database: DatabaseLoad, start: GuestMemory | None, end: GuestMemory | None
) -> DatabaseLoad:
    if start is None or end is None:
        return database
    return replace(database, file_refaults=end.file_refaults - start.file_refaults)


def _swap_use(start: GuestMemory | None, end: GuestMemory | None) -> SwapUse | None:
    if start is None or end is None:
        return None
    return SwapUse(
        growth_bytes=end.swap_used_bytes - start.swap_used_bytes,
        swapped_out_bytes=(end.swapped_out_pages - start.swapped_out_pages) * PAGE,
    )


def _heap_freed(
    samples: list[Sample], free_start: float, heap: HeapReport, end: GuestMemory | None
) -> HeapFreed:
    return HeapFreed(
        freed_bytes=heap.freed_bytes,
        held_bytes=heap.held_bytes,
        returned_30_s_ratio=returned_share(
            samples, free_start, heap.freed_bytes, HEAP_RETURN_WINDOW_S
        ),
        thp_held_end_bytes=None if end is None else end.thp_held_bytes,
    )
