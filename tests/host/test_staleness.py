"""Stale guest statistics: a VM whose guest stopped reporting is neither shrunk nor judged in
need. The records come from a real QEMU 7.2's `qom-get guest-stats` answer, verbatim, dated by
`history.track` as the fleet does."""

from __future__ import annotations

from typing import Any

from vmreclaim.host.backends.qemu import parse_guest_stats
from vmreclaim.host.config import PolicyConfig, max_stats_age, parse_config, with_stale_after
from vmreclaim.host.history import track
from vmreclaim.host.metrics import vm_values
from vmreclaim.host.policy import Mode, Observation, PolicyState, VmControl, decide, max_step
from vmreclaim.host.records import BalloonState, GuestStats, HostMemory, VmObservation, VmSample
from vmreclaim.host.top import stats_age_text, vm_json

MIB = 1 << 20
GIB = 1 << 30
RAM = 768 * MIB

# `qom-get /machine/peripheral/balloon0 guest-stats` on a 768 MiB lab guest whose balloon held
# 128 MiB (QEMU 7.2, Linux 6.1, statistics polling every second), 2026-12-01.
GUEST_STATS: dict[str, Any] = {
    "stats": {
        "stat-htlb-pgalloc": 0,
        "stat-swap-out": 0,
        "stat-available-memory": 521441280,
        "stat-htlb-pgfail": 0,
        "stat-free-memory": 573349888,
        "stat-minor-faults": 1709,
        "stat-major-faults": 0,
        "stat-total-memory": 612913152,
        "stat-swap-in": 0,
        "stat-disk-caches": 5722112,
    },
    "last-update": 1796084512,
}
REPORTED_AT = 1796084512.0

CONFIG = PolicyConfig(
    keep_available_bytes=1 << 40,  # a host always short: the policy shrinks what it may
    release_available_bytes=1 << 41,
    max_stats_age_s=max_stats_age(interval=1.0, stale_after=3),
)
HOST = HostMemory(32 * GIB, 4 * GIB, 0.0, 0.0)


def observed(guest: object, now: float, actual: int = RAM) -> VmObservation:
    stats = parse_guest_stats(guest)
    sample = VmSample("vm", "/run/vm.qmp", 100, None, BalloonState(RAM, actual, True), stats)
    return track(None, sample, now)[1]


def targets(observation: VmObservation, state: PolicyState | None = None) -> dict[str, int]:
    decision = decide(Observation(HOST, (observation,)), CONFIG, state or PolicyState())
    return {action.name: action.target_bytes for action in decision.actions}


def test_the_threshold_is_three_intervals_or_three_statistics_periods() -> None:
    # The guest reports every STATS_PERIOD_S (2 s): a 1 s poll still waits three reports.
    assert max_stats_age(interval=1.0, stale_after=3) == 6.0
    assert max_stats_age(interval=5.0, stale_after=3) == 15.0
    assert max_stats_age(interval=0.2, stale_after=3) == 6.0


def test_the_age_is_the_time_since_the_guests_last_report() -> None:
    assert observed(GUEST_STATS, REPORTED_AT + 2.5).stats_age_s == 2.5


def test_fresh_statistics_let_the_policy_shrink() -> None:
    assert targets(observed(GUEST_STATS, REPORTED_AT + 1.0)) == {"vm": RAM - max_step(RAM, CONFIG)}


def test_statistics_older_than_the_threshold_stop_the_shrinking() -> None:
    observation = observed(GUEST_STATS, REPORTED_AT + 6.5)
    assert observation.stats_stale(CONFIG.max_stats_age_s)
    state = PolicyState(Mode.SHRINK, {"/run/vm.qmp": VmControl(900 * MIB)})
    assert targets(observation, state) == {}


def test_a_stale_guest_is_not_judged_in_need_on_its_old_figures() -> None:
    # The last report said 100 MiB available, under the margin: were it fresh, the policy
    # would deflate at once (test_policy); stale, the balloon holds.
    low = {**GUEST_STATS, "stats": {**GUEST_STATS["stats"], "stat-available-memory": 100 * MIB}}
    state = PolicyState(Mode.SHRINK, {"/run/vm.qmp": VmControl(700 * MIB)})
    fresh = targets(observed(low, REPORTED_AT + 1.0, actual=700 * MIB), state)
    stale = targets(observed(low, REPORTED_AT + 60.0, actual=700 * MIB), state)
    assert fresh == {"vm": RAM}
    assert stale == {}


def test_a_guest_that_never_reported_is_stale() -> None:
    never = {**GUEST_STATS, "last-update": 0}
    observation = observed(never, REPORTED_AT)
    assert observation.stats_age_s is None
    assert observation.stats_stale(CONFIG.max_stats_age_s)
    assert targets(observation) == {}


def test_a_report_stamped_ahead_of_our_clock_is_new() -> None:
    assert observed(GUEST_STATS, REPORTED_AT - 0.7).stats_age_s == 0.0


def undated(free: int) -> VmSample:
    stats = GuestStats(None, RAM, free, 800 * MIB, 50 * MIB, 0, 1000)
    return VmSample("fc", "firecracker:/run/fc.sock", 7, None, BalloonState(RAM, RAM, True), stats)


def test_undated_statistics_are_aged_from_their_last_change() -> None:
    history, first = track(None, undated(900 * MIB), now=100.0)
    assert first.stats_age_s is None  # seen once: no telling how old
    history, changed = track(history, undated(901 * MIB), now=101.0)
    assert changed.stats_age_s == 0.0
    history, same = track(history, undated(901 * MIB), now=108.0)
    assert same.stats_age_s == 7.0
    assert same.stats_stale(CONFIG.max_stats_age_s)


def test_top_and_the_metrics_show_stale_statistics_with_their_age() -> None:
    stale = observed(GUEST_STATS, REPORTED_AT + 12.0)
    fresh = observed(GUEST_STATS, REPORTED_AT + 1.0)
    assert stats_age_text(stale, 3.0) == "[red]stale 12 s[/red]"
    assert stats_age_text(fresh, 3.0) == "1 s"
    guest = vm_json(stale, 3.0)["guest"]
    assert (guest["age_s"], guest["stale"]) == (12.0, True)
    assert vm_json(fresh, 3.0)["guest"]["stale"] is False
    values = vm_values(stale, 3.0)
    assert (values["guest_stats_age_seconds"], values["guest_stats_stale"]) == (12.0, 1.0)
    assert vm_values(fresh, 3.0)["guest_stats_stale"] == 0.0


def test_stale_after_is_read_from_the_config_in_intervals() -> None:
    config = parse_config(
        {"interval": 2.0, "stale_after": 4, "host": {"keep_available": "1G"}}, "t"
    )
    assert (config.stale_after, config.policy.max_stats_age_s) == (4.0, 8.0)
    assert with_stale_after(config, 10).policy.max_stats_age_s == 20.0
    default = parse_config({"host": {"keep_available": "1G"}}, "t")
    assert default.policy.max_stats_age_s == 6.0
