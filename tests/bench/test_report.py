"""The benchmark's output files, from hand-made results."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from vmreclaim.bench import report
from vmreclaim.bench.guestmem import GuestMemory
from vmreclaim.bench.measures import measure
from vmreclaim.bench.pgbench import DatabaseLoad, PgbenchFigures
from vmreclaim.bench.recorder import NeedSample, Recording, Sample
from vmreclaim.bench.runner import RunResult
from vmreclaim.workloads.runtime_heap import HeapReport

MIB = 1 << 20


def _result(contender: str, agent_log: str) -> RunResult:
    recording = Recording(
        samples=[Sample(t, (600 - 10 * t) * MIB, 0) for t in range(0, 40)],
        needs=[NeedSample(0, 100 * MIB)],
        phases=[("build", 4.0), ("idle", 20.0)],
    )
    return RunResult(
        scenario="build-then-idle",
        contender=contender,
        accel="tcg",
        boot_seconds=5.0,
        recording=recording,
        measures=measure(recording),
        agent_log=agent_log,
    )


def test_each_agents_whole_log_is_written_beside_the_results(tmp_path: Path) -> None:
    log = "vmreclaim: no action: busy (0.62 % CPU over the last interval)\n" * 3
    results = [_result("reporting", ""), _result("wsl2-gradual", log)]
    written = report.write(results, {"command": "vmreclaim bench", "machine": "test"}, tmp_path)

    runs = {
        run["contender"]: run for run in json.loads((tmp_path / "results.json").read_text())["runs"]
    }
    assert runs["reporting"]["agent_log"] is None
    path = tmp_path / runs["wsl2-gradual"]["agent_log"]
    assert path.read_text() == log
    assert path in written
    assert sorted(p.name for p in (tmp_path / "agent-logs").iterdir()) == [path.name]


def test_the_table_shows_where_the_excess_accrued(tmp_path: Path) -> None:
    table = report.markdown([_result("reporting", "")], {"command": "c", "machine": "m"})
    assert "| contender | rest | build | idle |" in table
    # 600 MiB falling by 10 MiB/s against a 100 MiB need: most of it before idle begins at 20 s.
    row = next(
        line
        for line in table.splitlines()
        if line.startswith("| reporting | ") and line.count("|") == 5
    )
    rest, build, idle = (float(cell) for cell in row.strip("|").split("|")[1:])
    assert build > idle > 0
    assert rest > 0


def _measured(scenario: str, **kwargs: Any) -> RunResult:
    recording = Recording(
        samples=[Sample(t, 1000 * MIB, 0) for t in range(0, 50)],
        needs=[NeedSample(0, 100 * MIB)],
        phases=[("build", 4.0), ("free", 10.0)],
    )
    return RunResult(scenario, "reporting", "tcg", 5.0, recording, measure(recording, **kwargs), "")


def test_swap_and_heap_columns_appear_only_in_the_scenarios_that_measure_them() -> None:
    memory = GuestMemory(swap_used_bytes=0, swapped_out_pages=0, thp_held_bytes=700 * MIB)
    heap = HeapReport(1024 * MIB, 900 * MIB, 890 * MIB, 0)
    results = [
        _measured("build-then-idle"),
        _measured("busy-with-cold-cache-swap", guest_start=memory, guest_end=memory, swap=True),
        _measured("thp-heap-freed", heap=heap, guest_end=memory),
    ]
    sections = report.markdown(results, {"command": "c", "machine": "m"}).split("### ")
    plain, swap, thp = (
        next(s for s in sections if s.startswith(name + "\n"))
        for name in ("build-then-idle", "busy-with-cold-cache-swap", "thp-heap-freed")
    )
    assert "swap growth" not in plain
    assert "heap freed" not in plain
    assert "| swap growth (swapped out) |" in swap
    assert "heap freed" not in swap
    assert "| reporting |" in swap
    assert "| 0 B (0 B) |" in swap
    assert "| heap freed (held in huge pages) | heap back in 30 s |" in thp
    assert "| 900.0 MiB (890.0 MiB) | 0 % | 700.0 MiB |" in thp


def test_json_carries_the_heap_and_swap_measures(tmp_path: Path) -> None:
    memory = GuestMemory(swap_used_bytes=3 * MIB, swapped_out_pages=0, thp_held_bytes=0)
    results = [
        _measured("busy-with-cold-cache-swap", guest_start=memory, guest_end=memory, swap=True)
    ]
    report.write(results, {"command": "c", "machine": "m"}, tmp_path)
    measures = json.loads((tmp_path / "results.json").read_text())["runs"][0]["measures"]
    assert measures["swap"] == {"growth_bytes": 0, "swapped_out_bytes": 0}
    assert measures["heap"] is None


def test_the_database_columns_appear_only_with_a_database_and_its_figures_in_json(
    tmp_path: Path,
) -> None:
    figures = PgbenchFigures(150.0, 180000, 0, 1200.0, 0.00166, 0.00679)
    whole = PgbenchFigures(160.0, 196000, 0, 1225.0, 0.00160, 0.00664)
    load = DatabaseLoad(whole=whole, cold_write=figures, cold_write_seconds=None)
    start = GuestMemory(0, 0, 0, file_refaults=10)
    end = GuestMemory(0, 0, 0, file_refaults=1118)
    results = [
        _measured("busy-with-cold-cache"),
        _measured("pgbench-ro", guest_start=start, guest_end=end, database=load),
    ]
    sections = report.markdown(results, {"command": "c", "machine": "m"}).split("### ")
    busy, database = (
        next(s for s in sections if s.startswith(name + "\n"))
        for name in ("busy-with-cold-cache", "pgbench-ro")
    )
    assert "pgbench" not in busy
    assert (
        "| pgbench TPS, cold-write (whole run) | latency avg, cold-write "
        "| latency p99, cold-write (whole run) | file refaults | cold writer took (guest clock) |"
    ) in database
    assert "| 1200 (1225) | 1.66 ms | 6.79 ms (6.64 ms) | 1108 | unfinished |" in database

    report.write(results[1:], {"command": "c", "machine": "m"}, tmp_path)
    measures = json.loads((tmp_path / "results.json").read_text())["runs"][0]["measures"]
    assert measures["database"]["cold_write"]["tps"] == 1200.0
    assert measures["database"]["whole"]["latency_p99_s"] == 0.00664
    assert measures["database"]["file_refaults"] == 1108


def test_the_built_source_and_its_version_are_recorded(tmp_path: Path) -> None:
    built = dataclasses.replace(_result("reporting", ""), source="sqlite3 3.40.1-2+deb12u2")
    table = report.markdown([built], {"command": "vmreclaim bench", "machine": "test"})
    lines = table.splitlines()
    assert lines[lines.index("### build-then-idle") + 2] == "Built: sqlite3 3.40.1-2+deb12u2"
    runs = report.to_json([built], {})["runs"]
    assert runs[0]["source"] == "sqlite3 3.40.1-2+deb12u2"
    assert report.to_json([_result("reporting", "")], {})["runs"][0]["source"] is None
