"""The soak's pieces that need no QEMU: the host files it writes are what the daemon's reader
reads, and its verdict names every property that failed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vmreclaim.bench.soak import (
    KINDS,
    LOADS,
    MAX_RSS_GROWTH_BYTES,
    ChaosEvent,
    Recovery,
    SoakResult,
    SoakSettings,
)
from vmreclaim.bench.soak_processes import FakeHostProc
from vmreclaim.host.hostmem import read_host_memory

GIB = 1 << 30


@pytest.mark.parametrize("load", LOADS, ids=[load.name for load in LOADS])
def test_the_fake_hosts_files_read_back_as_the_load(tmp_path: Path, load) -> None:
    host = FakeHostProc(tmp_path, 16 * GIB)
    host.set(load)
    memory = read_host_memory(tmp_path)
    assert memory is not None
    assert (memory.total_bytes, memory.available_bytes) == (16 * GIB, load.available_bytes)
    assert memory.psi_some_avg10 == pytest.approx(load.psi_some_avg10)


GOOD = SoakResult(
    settings=SoakSettings(vms=1, seconds=60.0),
    events=tuple(ChaosEvent(1.0, kind, 0, 1.0) for kind in KINDS),
    recoveries=(Recovery("crash", 0, 2.0, 3, True), Recovery("pressure", None, 3.0, 1, True)),
    cycles=60,
    metrics_cycles=60,
    max_cycle_gap_s=1.1,
    rss_start_bytes=30_000_000,
    rss_end_bytes=31_000_000,
    rss_samples=(30_000_000, 31_000_000),
    answering_at_end=1,
    view_failures=0,
    log_problems=(),
    warnings=4,
    mode_changes=2,
    exit_code=0,
    stop_s=0.5,
)


def test_a_soak_where_everything_held_has_no_problem() -> None:
    assert GOOD.problems() == []


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"log_problems": ("Traceback (most recent call last):",)}, "daemon log: Traceback"),
        ({"rss_end_bytes": 30_000_000 + MAX_RSS_GROWTH_BYTES}, "RSS grew"),
        ({"recoveries": (Recovery("freeze", 0, 2.0, None, True),)}, "not back within 33"),
        ({"recoveries": (Recovery("pressure", None, 2.0, 4, True),)}, "not back within 3"),
        ({"events": (ChaosEvent(1.0, "crash", 0, 1.0),)}, "no freeze, pressure, vanish event"),
        ({"answering_at_end": 0}, "0 of 1 VMs answer"),
        ({"exit_code": None, "stop_s": 10.0}, "SIGTERM: exit status None"),
    ],
)
def test_each_failed_property_is_named(change: dict[str, object], words: str) -> None:
    (problem,) = dataclasses.replace(GOOD, **change).problems()  # type: ignore[arg-type]
    assert words in problem
