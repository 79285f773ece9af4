"""The soak's short form (issue 12, point 7): `vmreclaim host run` over three paused QEMUs for
75 s of crashes, restarts, freezes, vanishing sockets and host memory swings. The full one is
`python -m vmreclaim.bench.soak --vms 10 --minutes 20` (README, host side)."""

from __future__ import annotations

import pytest

from vmreclaim.bench.soak import (
    HOST_SWING_BOUND_CYCLES,
    KINDS,
    MAX_RSS_GROWTH_BYTES,
    SoakResult,
    SoakSettings,
    run_soak,
    summary,
)
from vmreclaim.errors import MissingDependencyError
from vmreclaim.lab.qemu_command import find_qemu

pytestmark = pytest.mark.soak

SHORT = SoakSettings(vms=3, seconds=75.0, warmup_s=20.0, mean_gap_s=2.0, seed=7)


@pytest.fixture(scope="module")
def soaked(tmp_path_factory: pytest.TempPathFactory) -> SoakResult:
    try:
        find_qemu()
    except MissingDependencyError as err:
        pytest.skip(err.message)
    result = run_soak(SHORT, tmp_path_factory.mktemp("soak"))
    print(summary(result))
    return result


def test_every_kind_of_event_happens(soaked: SoakResult) -> None:
    assert {event.kind for event in soaked.events} == set(KINDS)
    assert len(soaked.events) >= 15


def test_no_traceback_or_error_in_the_daemons_log(soaked: SoakResult) -> None:
    assert soaked.log_problems == ()


def test_the_daemons_rss_grows_by_under_5_mb(soaked: SoakResult) -> None:
    assert soaked.rss_growth_bytes < MAX_RSS_GROWTH_BYTES, soaked.rss_samples


def test_every_vm_is_back_under_control_within_the_bound(soaked: SoakResult) -> None:
    bound = SHORT.recovery_bound_cycles
    vm_recoveries = [r for r in soaked.recoveries if r.vm is not None]
    assert vm_recoveries
    late = [r for r in vm_recoveries if r.cycles is None or r.cycles > bound]
    assert late == []
    assert soaked.answering_at_end == SHORT.vms


def test_the_daemon_sees_every_host_swing_within_its_bound(soaked: SoakResult) -> None:
    swings = [r for r in soaked.recoveries if r.vm is None]
    assert swings
    assert all(r.cycles is not None and r.cycles <= HOST_SWING_BOUND_CYCLES for r in swings)
    assert soaked.mode_changes >= 1


def test_sigterm_after_the_soak_stops_the_daemon_within_2_s(soaked: SoakResult) -> None:
    assert soaked.exit_code == 0
    assert soaked.stop_s < 2.0


def test_the_soak_requires_nothing_else(soaked: SoakResult) -> None:
    assert soaked.problems() == []
