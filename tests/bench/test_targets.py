"""Targets judged per repeat, and repeats summarised: from hand-made recordings."""

from __future__ import annotations

import dataclasses

from vmreclaim.bench import report
from vmreclaim.bench.guestmem import GuestMemory
from vmreclaim.bench.measures import HotSet, Measures, measure
from vmreclaim.bench.pgbench import DatabaseLoad, PgbenchFigures
from vmreclaim.bench.recorder import NeedSample, Recording, Sample
from vmreclaim.bench.repeats import repeats_summary
from vmreclaim.bench.runner import RunResult
from vmreclaim.bench.targets import targets
from vmreclaim.workloads.runtime_heap import HeapReport

MIB = 1 << 20


def _run(
    scenario: str, contender: str, recording: Recording, measures: Measures, repeat: int = 0
) -> RunResult:
    """A run as the runner returns it, from a hand-made recording and its measures."""
    return RunResult(
        scenario=scenario,
        contender=contender,
        accel="tcg",
        boot_seconds=5.0,
        recording=recording,
        measures=measures,
        agent_log="",
        repeat=repeat,
    )


def _heap_run(contender: str, back_mib: int, repeat: int = 0) -> RunResult:
    """thp-heap-freed: 1000 MiB on the host, 900 MiB freed at 10 s, `back_mib` gone by 20 s."""
    samples = [Sample(t, (1000 - (back_mib if t >= 20 else 0)) * MIB, 0) for t in range(0, 60)]
    recording = Recording(samples, [NeedSample(0, 100 * MIB)], [("build", 4.0), ("free", 10.0)])
    heap = HeapReport(
        heap_bytes=1024 * MIB, freed_bytes=900 * MIB, held_bytes=890 * MIB, memfree_rise_bytes=0
    )
    return _run("thp-heap-freed", contender, recording, measure(recording, heap=heap), repeat)


def _swap_run(cold_back_mib: int, swap_growth_mib: int, repeat: int = 0) -> RunResult:
    """busy-with-cold-cache-swap: 400 MiB of cold files written at 10 s, some of it returned."""
    samples = [Sample(t, (500 + (400 if t >= 12 else 0)) * MIB, 0) for t in range(0, 40)]
    samples += [Sample(t, (900 - cold_back_mib) * MIB, 0) for t in range(40, 60)]
    recording = Recording(
        samples, [NeedSample(0, 100 * MIB)], [("prepare", 4.0), ("cold-write", 10.0)]
    )
    start = GuestMemory(swap_used_bytes=0, swapped_out_pages=0, thp_held_bytes=0)
    end = dataclasses.replace(start, swap_used_bytes=swap_growth_mib * MIB)
    return _run(
        "busy-with-cold-cache-swap",
        "adaptive",
        recording,
        measure(recording, cold_bytes=400 * MIB, guest_start=start, guest_end=end, swap=True),
        repeat,
    )


def test_the_heap_target_is_judged_for_adaptive_and_measured_for_the_others() -> None:
    lines = targets([_heap_run("reporting", 0), _heap_run("adaptive", 810)])
    assert lines == [
        "- thp-heap-freed: reporting, beside it: measured (0 % of 900.0 MiB)",
        "- thp-heap-freed: adaptive returns 80 % of what the program freed within 30 s: "
        "met (90 % of 900.0 MiB)",
    ]


def test_a_target_met_in_some_repeats_only_is_missed_and_shows_every_figure() -> None:
    runs = [_heap_run("adaptive", 810, 0), _heap_run("adaptive", 450, 1)]
    assert targets(runs) == [
        "- thp-heap-freed: adaptive returns 80 % of what the program freed within 30 s: "
        "MISSED, met in 1 of 2 runs (90 % of 900.0 MiB; 50 % of 900.0 MiB)"
    ]


def test_swap_growth_is_judged_against_what_adaptive_returned() -> None:
    ok, missed = targets([_swap_run(360, 3)]), targets([_swap_run(360, 10)])
    assert ok[0].startswith("- busy-with-cold-cache-swap: adaptive returns 80 % of the cold")
    assert ok[0].endswith("met (90 %)")
    assert ok[1].startswith("- busy-with-cold-cache-swap: swap used grows by at most 1 %")
    assert " met (3.0 MiB for 360.0 MiB" in ok[1]
    assert " MISSED (10.0 MiB for 360.0 MiB" in missed[1]


def test_repeats_are_summarised_by_median_and_range() -> None:
    runs = [_heap_run("adaptive", back, repeat) for repeat, back in enumerate((810, 450, 720))]
    lines = repeats_summary(runs)
    header = lines[2]
    assert "| contender | runs |" in header
    assert "heap back in 30 s" in header
    assert "cold back" not in header  # no run measures it
    row = lines[4]
    assert row.startswith("| adaptive | 3 |")
    assert "80 % (50 % - 90 %)" in row


def test_the_markdown_labels_repeats_and_adds_the_summary() -> None:
    runs = [_heap_run("adaptive", 810, 0), _heap_run("adaptive", 720, 1)]
    table = report.markdown(runs, {"command": "c", "machine": "m"})
    assert "| adaptive #1 |" in table
    assert "| adaptive #2 |" in table
    assert "Over the repeats, median (min - max):" in table


def test_one_repeat_keeps_the_table_as_it_was() -> None:
    table = report.markdown([_heap_run("adaptive", 810)], {"command": "c", "machine": "m"})
    assert "| adaptive |" in table
    assert "#1" not in table
    assert "Over the repeats" not in table


def _database_run(
    contender: str, tps: float, p99_ms: float, cold_back_mib: int = 640, repeat: int = 0
) -> RunResult:
    """pgbench-ro: 768 MiB of cold files written from 14 s, `cold_back_mib` of them returned;
    pgbench's figures over the cold writer's window as given."""
    samples = [Sample(t, (400 + (768 if t >= 20 else 0)) * MIB, 0) for t in range(0, 100)]
    samples += [Sample(t, (1168 - cold_back_mib) * MIB, 0) for t in range(100, 164)]
    recording = Recording(
        samples, [NeedSample(0, 100 * MIB)], [("pgbench", 4.0), ("cold-write", 14.0)]
    )
    figures = PgbenchFigures(150.0, round(150 * tps), 0, tps, 0.0015, p99_ms / 1000)
    load = DatabaseLoad(whole=figures, cold_write=figures, cold_write_seconds=60.0)
    start = GuestMemory(0, 0, 0, file_refaults=100)
    end = dataclasses.replace(start, file_refaults=1100)
    return _run(
        "pgbench-ro",
        contender,
        recording,
        measure(recording, cold_bytes=768 * MIB, guest_start=start, guest_end=end, database=load),
        repeat,
    )


def test_the_database_targets_compare_adaptive_with_reporting_only() -> None:
    lines = targets([_database_run("reporting", 1200, 6.80), _database_run("adaptive", 1188, 7.0)])
    assert lines == [
        "- pgbench-ro: adaptive returns 80 % of the cold cache within the cold-write phase, "
        "under pgbench: met (83 %)",
        "- pgbench-ro: pgbench keeps 98 % of its TPS under adaptive against reporting only: "
        "met (1188 vs 1200 TPS while the cold files are written, 99.0 %)",
        "- pgbench-ro: pgbench's p99 latency rises by 5 % at most under adaptive against "
        "reporting only: met (7.00 vs 6.80 ms, +2.9 %, 1000 file refaults)",
    ]


def test_a_database_slowed_by_reclaim_misses_its_targets() -> None:
    lines = targets(
        [_database_run("reporting", 1200, 6.80), _database_run("adaptive", 1150, 7.2, 300)]
    )
    assert [line.split(": ")[2].split(" ")[0] for line in lines] == ["MISSED"] * 3


def test_cold_back_shows_the_reading_net_of_the_databases_growth_but_judges_the_first() -> None:
    run = _database_run("adaptive", 1188, 7.0, cold_back_mib=576)  # 75 %
    grown = dataclasses.replace(run.recording, needs=[NeedSample(0, 100 * MIB)])
    grown.needs.append(NeedSample(120, 180 * MIB))  # the database took 80 MiB meanwhile
    measures = measure(grown, cold_bytes=768 * MIB)
    line = targets([_run("pgbench-ro", "adaptive", grown, measures)])[0]
    assert line == (
        "- pgbench-ro: adaptive returns 80 % of the cold cache within the cold-write phase, "
        "under pgbench: MISSED (75 % (85 % net of the 80.0 MiB the guest's own need grew by))"
    )


def test_repeats_show_the_databases_median_tps_and_p99() -> None:
    runs = [
        _database_run("adaptive", tps, p99, repeat=k)
        for k, (tps, p99) in enumerate([(1190, 7.0), (1180, 7.4), (1200, 6.9)])
    ]
    table = "\n".join(repeats_summary(runs))
    assert "| pgbench TPS, cold-write | latency p99, cold-write | file refaults |" in table
    assert "| 1190 (1180 - 1200) | 7.00 ms (6.90 ms - 7.40 ms) | 1000 (1000 - 1000) |" in table


def _idle_run(scenario: str, contender: str, back_at_s: int) -> RunResult:
    """1000 MiB on the host when the idle phase starts at 10 s, 800 MiB of it gone `back_at_s`
    seconds later (rest is 100 MiB, so 772 MiB is reclaimable above the kept cache)."""
    samples = [Sample(t, 100 * MIB, 0) for t in range(0, 4)]
    samples += [Sample(t, (200 if t >= 10 + back_at_s else 1000) * MIB, 0) for t in range(4, 100)]
    recording = Recording(samples, [NeedSample(0, 100 * MIB)], [("build", 4.0), ("idle", 10.0)])
    return _run(scenario, contender, recording, measure(recording))


def test_both_builds_ask_90_percent_back_within_15_s_of_idle() -> None:
    # Issue 5 allowed build-then-idle 30 s; issue 11 asks 15 s of a build ("20 s today" was
    # build-then-idle's figure), and build-real joined it.
    within = "adaptive returns 90 % of the reclaimable within 15 s of idle"
    for scenario in ("build-then-idle", "build-real"):
        assert targets([_idle_run(scenario, "adaptive", 20)]) == [
            f"- {scenario}: {within}: MISSED (20 s)"
        ]
        assert targets([_idle_run(scenario, "adaptive", 12)]) == [
            f"- {scenario}: {within}: met (12 s)"
        ]


def test_build_real_judges_adaptives_excess_against_wsl2_gradual_of_the_same_scenario() -> None:
    runs = [
        _idle_run("build-real", "adaptive", 5),
        _idle_run("build-real", "wsl2-gradual", 85),
        _idle_run("build-then-idle", "wsl2-gradual", 0),
    ]
    excess_line = targets(runs)[1]
    assert excess_line.startswith(
        "- build-real: adaptive's excess is at most 1/4 of WSL2 gradual's: met"
    )


def _busy_run(contender: str, median_pass_s: float, refaults: int, repeat: int = 0) -> RunResult:
    """busy-with-cold-cache: 768 MiB of cold files written at 10 s, 700 MiB of them returned;
    the 192 MiB hot set re-read at the given median pass with `refaults` pages read back."""
    samples = [Sample(t, (500 + (768 if t >= 12 else 0)) * MIB, 0) for t in range(0, 40)]
    samples += [Sample(t, (1268 - 700) * MIB, 0) for t in range(40, 60)]
    recording = Recording(
        samples, [NeedSample(0, 100 * MIB)], [("prepare", 4.0), ("cold-write", 10.0)]
    )
    hot = HotSet(40, median_pass_s, median_pass_s, refaults, 192 * MIB)
    return _run(
        "busy-with-cold-cache",
        contender,
        recording,
        measure(recording, cold_bytes=768 * MIB, hot=hot),
        repeat,
    )


def test_hot_set_refaults_are_judged_against_2_percent_of_the_hot_set_in_every_repeat() -> None:
    runs = [_busy_run("reporting", 0.91, 0, k) for k in range(3)]
    # 2 % of 192 MiB is 3.84 MiB, 983 pages: the third repeat's 8,566 (as before drop-behind).
    runs += [_busy_run("adaptive", 0.92, refaults, k) for k, refaults in enumerate([0, 134, 8566])]
    line = next(line for line in targets(runs) if "refaults at most" in line)
    assert line == (
        "- busy-with-cold-cache: hot set refaults at most 2 % of the hot set: MISSED, met in 2 of "
        "3 runs (0 pages, 0 B of 192.0 MiB (0.0 %); 134 pages, 536.0 KiB of 192.0 MiB (0.3 %); "
        "8566 pages, 33.5 MiB of 192.0 MiB (17.4 %))"
    )
