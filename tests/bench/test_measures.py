"""The benchmark's measures on hand-made recordings."""

from __future__ import annotations

import pytest

from vmreclaim.bench.guestmem import GuestMemory
from vmreclaim.bench.measures import (
    KEPT_CACHE_BYTES,
    HeapFreed,
    SwapUse,
    excess_gib_s,
    measure,
    returned_share,
    time_to_return,
)
from vmreclaim.bench.recorder import NeedSample, Recording, Sample
from vmreclaim.workloads.runtime_heap import HeapReport

MIB = 1 << 20


def _samples(points: list[tuple[float, int]]) -> list[Sample]:
    return [Sample(seconds, mib * MIB, mib * MIB) for seconds, mib in points]


def test_excess_integrates_what_is_held_above_the_need() -> None:
    samples = _samples([(0, 1024), (10, 512), (20, 512)])
    needs = [NeedSample(0, 512 * MIB)]
    # 512 MiB above the need for 10 s, then nothing.
    assert excess_gib_s(samples, needs) == pytest.approx(5.0)


def test_excess_ignores_time_before_the_first_need_and_never_goes_negative() -> None:
    samples = _samples([(0, 1024), (10, 256), (20, 256)])
    needs = [NeedSample(10, 512 * MIB)]
    assert excess_gib_s(samples, needs) == 0.0


def test_time_to_return_counts_from_the_start_down_to_the_share_above_what_is_kept() -> None:
    samples = _samples([(0, 1000), (10, 1000), (15, 600), (20, 300), (30, 200)])
    kept = 200 * MIB
    # Above the kept level at 10 s: 800 MiB; half is back at 600, 90 % at 280.
    assert time_to_return(samples, 10, kept, 0.5) == 5
    assert time_to_return(samples, 10, kept, 0.9) == 20
    assert time_to_return(samples, 10, 100 * MIB, 0.9) is None
    assert time_to_return(samples, 30, kept, 0.9) == 0.0  # nothing above: nothing to return


def test_reclaimable_leaves_out_rest_and_the_kept_cache_floor() -> None:
    rest = 200
    held = rest + 128 + 600
    recording = Recording(
        samples=_samples([(0, rest), (5, rest), (10, held), (20, held), (30, rest + 150)]),
        needs=[NeedSample(0, rest * MIB)],
        phases=[("build", 5.0), ("idle", 20.0)],
    )
    m = measure(recording)
    assert m.rest_bytes == rest * MIB
    assert m.reclaimable_bytes == held * MIB - rest * MIB - KEPT_CACHE_BYTES
    # At 30 s it holds 22 MiB above rest + floor: more than 90 % of 600 MiB is back.
    assert m.returned_90_s == 10
    assert m.final_bytes == (rest + 150) * MIB


def test_cold_cache_returned_is_a_share_of_what_was_written() -> None:
    recording = Recording(
        samples=_samples([(0, 200), (9, 200), (10, 200), (40, 300)]),
        phases=[("hot", 1.0), ("cold-write", 10.0)],
    )
    # 400 MiB written, the footprint rose by 100 MiB: 75 % went back.
    assert measure(recording, cold_bytes=400 * MIB).cold_returned_ratio == pytest.approx(0.75)


def test_cold_cache_net_of_the_guests_own_growth_is_shown_beside_it() -> None:
    recording = Recording(
        samples=_samples([(0, 200), (9, 200), (10, 200), (40, 300)]),
        needs=[NeedSample(0, 150 * MIB), NeedSample(30, 190 * MIB)],  # the database took 40 MiB
        phases=[("pgbench", 1.0), ("cold-write", 10.0)],
    )
    m = measure(recording, cold_bytes=400 * MIB)
    assert m.cold_returned_ratio == pytest.approx(0.75)
    assert m.cold_need_growth_bytes == 40 * MIB
    assert m.cold_returned_net_ratio == pytest.approx(0.85)  # 60 of the 100 MiB were files
    # A need that fell adds nothing: the net reading never lowers the first.
    fell = Recording(recording.samples, [NeedSample(0, 150 * MIB), NeedSample(30, 100 * MIB)])
    fell.phases.extend(recording.phases)
    assert measure(fell, cold_bytes=400 * MIB).cold_returned_net_ratio == pytest.approx(0.75)
    unknown = Recording(recording.samples, [], list(recording.phases))
    assert measure(unknown, cold_bytes=400 * MIB).cold_returned_net_ratio is None


def test_a_recording_without_phases_is_refused() -> None:
    with pytest.raises(ValueError, match="phases"):
        measure(Recording(samples=_samples([(0, 1), (1, 1)])))


def test_excess_by_phase_splits_the_whole_run() -> None:
    samples = _samples([(0, 300), (5, 900), (10, 900), (20, 300), (30, 300)])
    recording = Recording(samples, [NeedSample(0, 300 * MIB)], [("build", 5.0), ("idle", 20.0)])
    m = measure(recording)
    by_phase = dict(m.excess_by_phase)
    assert list(by_phase) == ["rest", "build", "idle"]
    # 600 MiB above the need from 5 s to 20 s: all of it in build.
    assert by_phase["rest"] == 0.0
    assert by_phase["build"] == pytest.approx(600 / 1024 * 15)
    assert by_phase["idle"] == 0.0
    assert sum(by_phase.values()) == pytest.approx(m.excess_gib_s)


def test_returned_share_is_the_fall_over_the_window_as_a_share_of_what_was_freed() -> None:
    samples = _samples([(t, 1000 if t < 10 else 1000 - 10 * min(t - 10, 30)) for t in range(60)])
    # Down by 300 MiB 30 s after the free at 10 s, of 600 MiB freed.
    assert returned_share(samples, 10, 600 * MIB, 30) == pytest.approx(0.5, abs=0.02)
    assert returned_share(samples, 10, 100 * MIB, 30) == 1.0
    assert returned_share(samples, 10, 0, 30) == 0.0


def test_a_heap_that_stays_held_counts_as_not_returned() -> None:
    recording = Recording(
        samples=_samples([(t, 1200) for t in range(50)]),
        phases=[("build", 4.0), ("free", 10.0)],
    )
    heap = HeapReport(
        heap_bytes=1024 * MIB, freed_bytes=900 * MIB, held_bytes=890 * MIB, memfree_rise_bytes=0
    )
    end = GuestMemory(swap_used_bytes=0, swapped_out_pages=0, thp_held_bytes=880 * MIB)
    m = measure(recording, heap=heap, guest_end=end)
    assert m.heap == HeapFreed(
        freed_bytes=900 * MIB,
        held_bytes=890 * MIB,
        returned_30_s_ratio=0.0,
        thp_held_end_bytes=880 * MIB,
    )
    assert m.swap is None


def test_swap_use_is_the_growth_over_the_run_when_the_scenario_has_swap() -> None:
    recording = Recording(samples=_samples([(0, 500), (10, 500)]), phases=[("hot", 1.0)])
    start = GuestMemory(swap_used_bytes=2 * MIB, swapped_out_pages=512, thp_held_bytes=0)
    end = GuestMemory(swap_used_bytes=50 * MIB, swapped_out_pages=512 + 12800, thp_held_bytes=0)
    m = measure(recording, guest_start=start, guest_end=end, swap=True)
    assert m.swap == SwapUse(growth_bytes=48 * MIB, swapped_out_bytes=50 * MIB)
    assert measure(recording, guest_start=start, guest_end=end).swap is None
    assert m.heap is None
