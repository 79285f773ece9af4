"""The scenarios' shapes that the runner and the measures rely on."""

from __future__ import annotations

import pytest

from vmreclaim.bench.cli import _SCENARIOS
from vmreclaim.bench.scenarios import (
    BUILD_PACKAGE,
    COLD_DONE,
    COLD_MARK,
    HEAP_RELEASE,
    PGBENCH_STOP,
    SCENARIOS,
    busy_with_cold_cache,
)

MIB = 1 << 20


def test_every_scenario_can_be_chosen_on_the_command_line() -> None:
    assert set(_SCENARIOS) == set(SCENARIOS)


@pytest.mark.parametrize("quick", [True, False])
def test_the_swap_form_is_busy_with_cold_cache_with_swap_and_idle_memory_set_up_first(
    quick: bool,
) -> None:
    swap = SCENARIOS["busy-with-cold-cache-swap"](quick)
    plain = busy_with_cold_cache(quick)
    assert swap.phases == plain.phases
    assert (swap.cold_bytes, swap.hot_bytes) == (plain.cold_bytes, plain.hot_bytes)
    assert swap.swap_bytes == 512 * MIB
    assert "swapon /mnt/scratch/swapfile" in swap.setup
    assert f"alloc {600 * MIB}" in swap.setup
    assert not plain.setup
    assert not plain.swap_bytes


@pytest.mark.parametrize("quick", [True, False])
def test_the_heap_is_freed_at_the_last_phases_start_with_time_to_measure_30_s(
    quick: bool,
) -> None:
    scenario = SCENARIOS["thp-heap-freed"](quick)
    free = scenario.phases[-1]
    # The measure takes the last phase's start as the moment of the free.
    assert free.script.startswith(f"touch {HEAP_RELEASE}")
    assert free.wait
    assert free.seconds > 30
    assert scenario.runtime_heap_bytes >= 512 * MIB


@pytest.mark.parametrize("quick", [True, False])
@pytest.mark.parametrize("name", ["pgbench-ro", "pgbench-rw"])
def test_the_database_is_loaded_before_the_run_and_the_cold_writer_starts_under_pgbench(
    name: str, quick: bool
) -> None:
    scenario = SCENARIOS[name](quick)
    assert scenario.database is not None
    assert scenario.database.select_only == (name == "pgbench-ro")
    # Tables several times shared_buffers (32 MB), so the page cache holds them.
    assert scenario.database.scale * 16 * MIB >= 2 * 32 * MIB
    assert f"database /mnt/scratch/postgres/data --scale {scenario.database.scale}" in (
        scenario.setup
    )
    start, cold = scenario.phases
    assert " pgbench " in start.script
    assert ("--select-only" in start.script) == (name == "pgbench-ro")
    assert f"--until {PGBENCH_STOP}" in start.script
    assert f"--mark {COLD_MARK}" in start.script
    assert not start.wait
    # The writer marks its start for pgbench's log and is the last phase: "cold back" is
    # measured from there, as in busy-with-cold-cache.
    assert cold.script.startswith(f"touch {COLD_MARK} && ")
    assert f"write-files /mnt/scratch/cold {scenario.cold_bytes}" in cold.script
    assert cold.script.endswith(f"touch {COLD_DONE}")
    assert cold.seconds == (20.0 if quick else 90.0)
    # Both on the guest's clock: pgbench's own start (its python3 wrapper's 3 s of the vCPU)
    # falls before the writer's, and so before the window of comparison, at any host pace.
    assert cold.guest_clock
    assert start.guest_clock
    assert start.seconds == (5.0 if quick else 10.0)
    assert scenario.cold_bytes == (48 if quick else 384) * MIB
    # The phase is on the guest's clock, as the window is, and holds it with room to spare.
    assert 0 < scenario.database.window_s <= 0.5 * cold.seconds


@pytest.mark.parametrize("quick", [True, False])
def test_build_real_builds_its_pinned_source_to_the_end_then_idles_as_build_then_idle(
    quick: bool,
) -> None:
    scenario = SCENARIOS["build-real"](quick)
    build, idle = scenario.phases
    assert scenario.source_package == BUILD_PACKAGE
    # The build runs to its end, and the idle phase, whose start the measures count from,
    # begins at once: "90 % back within 15 s of idle" counts from the build's end.
    assert build.wait
    assert build.seconds == 0
    assert f"tar -xJf {BUILD_PACKAGE}_*.orig.tar.xz" in build.script
    assert "Makefile.linux-gcc" in build.script
    assert not idle.script
    assert idle.seconds == SCENARIOS["build-then-idle"](quick).phases[-1].seconds


def test_only_the_full_build_real_compiles_the_amalgamation() -> None:
    assert "sqlite3.c -lm" not in SCENARIOS["build-real"](True).phases[0].script
    assert "sqlite3.c -lm" in SCENARIOS["build-real"](False).phases[0].script
