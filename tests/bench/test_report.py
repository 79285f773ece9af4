"""The benchmark's output files, from hand-made results."""

from __future__ import annotations

import json
from pathlib import Path

from vmreclaim.bench import report
from vmreclaim.bench.measures import measure
from vmreclaim.bench.recorder import NeedSample, Recording, Sample
from vmreclaim.bench.runner import RunResult

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
