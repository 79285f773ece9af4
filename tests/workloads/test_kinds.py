"""The workloads run natively too: what they write and report."""

from __future__ import annotations

import json
import time
from pathlib import Path

from vmreclaim.workloads.kinds import fragment, reread, write_files


def test_write_files_writes_the_total_in_files_of_the_size_asked(tmp_path: Path) -> None:
    written = write_files(tmp_path / "data", 5 << 20, 2 << 20)
    assert [p.stat().st_size for p in written] == [2 << 20, 2 << 20, 1 << 20]
    # Pages differ: nothing could deduplicate them.
    first = written[0].read_bytes()
    assert first[:8] != first[4096 : 4096 + 8]


def test_reread_reports_passes_and_their_times(tmp_path: Path) -> None:
    write_files(tmp_path / "hot", 1 << 20, 1 << 19)
    report = tmp_path / "hot.json"
    summary = reread(tmp_path / "hot", seconds=0.3, pause=0.01, report=report)
    assert summary == json.loads(report.read_text())
    assert summary["passes"] >= 2
    assert 0 < summary["median_pass_seconds"] <= summary["worst_pass_seconds"]
    assert summary["mean_pass_seconds"] <= summary["worst_pass_seconds"]
    assert summary["refaults"] >= 0


def test_reread_stops_when_told_to_by_a_file(tmp_path: Path) -> None:
    write_files(tmp_path / "hot", 1 << 20, 1 << 19)
    stop = tmp_path / "stop"
    stop.touch()
    started = time.monotonic()
    summary = reread(tmp_path / "hot", seconds=60, pause=0.01, report=None, until=stop)
    assert time.monotonic() - started < 30
    assert summary["passes"] == 0


def test_fragment_says_when_half_is_freed(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    fragment(8 << 20, ready, hold=0)
    assert ready.read_text() == f"{4 << 20}\n"
