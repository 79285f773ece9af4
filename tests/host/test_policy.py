"""The balloon policy, a pure function: each test names one rule of the control law."""

from __future__ import annotations

import dataclasses

from vmreclaim.host.config import PolicyConfig, VmRule
from vmreclaim.host.policy import (
    Mode,
    Observation,
    PolicyState,
    VmControl,
    decide,
)
from vmreclaim.host.records import BalloonState, GuestStats, HostMemory, VmObservation, VmSample

MIB = 1 << 20
GIB = 1 << 30

CONFIG = PolicyConfig(
    keep_available_bytes=4 * GIB,
    release_available_bytes=6 * GIB,
    max_memory_pressure=10.0,
    max_step_bytes=100 * MIB,
    max_step_fraction=0.05,
    guest_available_margin_bytes=128 * MIB,
    major_faults_per_cycle=200,
    min_change_bytes=1 * MIB,
    deflate_hold_cycles=3,
    default_minimum_bytes=512 * MIB,
    default_shares=1000,
)


def host(available: int, psi: float | None = 0.0) -> HostMemory:
    return HostMemory(32 * GIB, available, psi, 0.0)


def vm(
    name: str = "a",
    *,
    ram: int = 4 * GIB,
    actual: int | None = None,
    available: int | None = 3 * GIB,
    faults: int | None = 10,
    updated: float = 1000.0,
    age: float | None = 1.0,
) -> VmObservation:
    guest = GuestStats(updated, ram, 2 * GIB, available, 512 * MIB, faults, 100)
    sample = VmSample(
        name=name,
        address=f"/run/{name}.qmp",
        pid=100,
        footprint=None,
        balloon=BalloonState(ram, ram if actual is None else actual, True),
        guest=guest,
    )
    return VmObservation(
        sample, 0.0, 0, (), None, age if updated else None, updated if updated else None
    )


def run(observation: Observation, state: PolicyState | None = None, config=CONFIG):
    return decide(observation, config, state or PolicyState())


def targets(decision) -> dict[str, int]:
    return {action.name: action.target_bytes for action in decision.actions}


def test_a_short_host_shrinks_a_vm_by_at_most_100_mib_a_cycle() -> None:
    decision = run(Observation(host(1 * GIB), (vm(ram=8 * GIB),)))
    assert targets(decision) == {"a": 8 * GIB - 100 * MIB}


def test_a_small_vm_shrinks_by_at_most_5_percent_of_its_ram() -> None:
    decision = run(Observation(host(1 * GIB), (vm(ram=1 * GIB),)))
    step = 1 * GIB - targets(decision)["a"]
    assert 0 < step <= 0.05 * GIB


def test_repeated_cycles_keep_every_step_bounded() -> None:
    state = PolicyState()
    previous = 4 * GIB
    for cycle in range(10):
        # The balloon reached the last target and the guest has reported since.
        observed = vm(actual=previous, updated=1000.0 + cycle)
        decision = run(Observation(host(1 * GIB), (observed,)), state)
        state = decision.state
        target = state.vms["/run/a.qmp"].target_bytes
        assert 0 < previous - target <= min(100 * MIB, 0.05 * 4 * GIB)
        previous = target


def test_the_next_step_waits_for_the_balloon_to_reach_its_target() -> None:
    first = run(Observation(host(1 * GIB), (vm(updated=1000.0),)))
    target = first.state.vms["/run/a.qmp"].target_bytes
    # Still inflating, and a newer report: the figures do not show the step yet.
    moving = run(
        Observation(host(1 * GIB), (vm(actual=target + 50 * MIB, updated=1002.0),)), first.state
    )
    assert targets(moving) == {}


def test_the_next_step_waits_for_a_report_made_after_the_balloon_moved() -> None:
    first = run(Observation(host(1 * GIB), (vm(updated=1000.0),)))
    target = first.state.vms["/run/a.qmp"].target_bytes
    # Still inflating, with a report made while it moved: that report does not count.
    moving = run(
        Observation(host(1 * GIB), (vm(actual=target + 50 * MIB, updated=1001.0),)), first.state
    )
    assert targets(moving) == {}
    # At its target, but the guest's figures are still those of while it moved.
    arrived = run(Observation(host(1 * GIB), (vm(actual=target, updated=1001.0),)), moving.state)
    assert targets(arrived) == {}
    newer = run(Observation(host(1 * GIB), (vm(actual=target, updated=1003.0),)), arrived.state)
    assert 0 < target - targets(newer)["a"] <= 100 * MIB


def test_stale_figures_lagging_the_balloon_never_squeeze_the_guest_under_its_margin() -> None:
    """A guest of 1.5 GiB that uses 200 MiB, reporting every other cycle, a balloon that
    reaches each target one cycle after it is set: the squeeze stops at the margin, with no
    emergency deflation (as it did when steps were taken on figures older than the balloon)."""
    config = dataclasses.replace(CONFIG, default_minimum_bytes=256 * MIB)
    ram, used = 1536 * MIB, 200 * MIB
    state, actual, report = PolicyState(), ram, (0.0, ram - used)
    lowest_available = ram
    for cycle in range(200):
        if cycle % 2 == 0:
            report = (1000.0 + cycle, actual - used)  # the guest reports what it has now
        lowest_available = min(lowest_available, actual - used)
        observed = vm(ram=ram, actual=actual, available=report[1], updated=report[0])
        decision = run(Observation(host(1 * GIB), (observed,)), state, config)
        assert all("margin" not in action.reason for action in decision.actions), cycle
        state = decision.state
        actual = state.vms["/run/a.qmp"].target_bytes  # reached by the next cycle
    step = 0.05 * ram
    assert 128 * MIB + step - 4096 <= lowest_available <= 128 * MIB + 2 * step  # whole pages


def test_the_step_is_the_vms_share_of_a_small_shortfall() -> None:
    decision = run(Observation(host(4 * GIB - 10 * MIB), (vm(),)))
    assert targets(decision) == {"a": 4 * GIB - 10 * MIB}


def test_shares_split_the_shortfall() -> None:
    config = dataclasses.replace(CONFIG, rules=(VmRule("big", None, 3000),))
    shortfall = 40 * MIB
    observation = Observation(
        host(4 * GIB - shortfall), (vm("big", ram=8 * GIB), vm("small", ram=8 * GIB))
    )
    decision = run(observation, config=config)
    shrunk = {name: 8 * GIB - target for name, target in targets(decision).items()}
    assert shrunk == {"big": 30 * MIB, "small": 10 * MIB}


def test_a_vm_never_goes_below_its_minimum() -> None:
    state = PolicyState(Mode.SHRINK, {"/run/a.qmp": VmControl(512 * MIB + 10 * MIB)})
    decision = run(Observation(host(1 * GIB), (vm(actual=522 * MIB),)), state)
    assert targets(decision) == {"a": 512 * MIB}
    again = run(Observation(host(1 * GIB), (vm(actual=512 * MIB),)), decision.state)
    assert targets(again) == {}


def test_a_vm_is_squeezed_no_closer_than_a_step_to_its_guests_available_margin() -> None:
    # margin 128 MiB, step 100 MiB: 30 MiB more available than both may go.
    decision = run(Observation(host(1 * GIB), (vm(available=128 * MIB + 100 * MIB + 30 * MIB),)))
    assert targets(decision) == {"a": 4 * GIB - 30 * MIB}
    at_the_band = run(Observation(host(1 * GIB), (vm(available=128 * MIB + 100 * MIB),)))
    assert targets(at_the_band) == {}


def test_between_the_thresholds_balloons_hold() -> None:
    state = PolicyState(Mode.SHRINK, {"/run/a.qmp": VmControl(3 * GIB)})
    decision = run(Observation(host(5 * GIB), (vm(actual=3 * GIB),)), state)
    assert decision.mode is Mode.HOLD
    assert decision.actions == ()


def test_above_the_release_threshold_balloons_grow_back_in_bounded_steps() -> None:
    state = PolicyState(Mode.HOLD, {"/run/a.qmp": VmControl(3 * GIB)})
    decision = run(Observation(host(7 * GIB), (vm(actual=3 * GIB),)), state)
    assert decision.mode is Mode.GROW
    assert targets(decision) == {"a": 3 * GIB + 100 * MIB}


def test_memory_pressure_alone_shrinks_by_a_full_step() -> None:
    decision = run(Observation(host(8 * GIB, psi=25.0), (vm(),)))
    assert decision.mode is Mode.SHRINK
    assert targets(decision) == {"a": 4 * GIB - 100 * MIB}


def test_low_guest_available_deflates_at_once_to_full_ram() -> None:
    state = PolicyState(Mode.SHRINK, {"/run/a.qmp": VmControl(2 * GIB)})
    decision = run(Observation(host(1 * GIB), (vm(actual=2 * GIB, available=100 * MIB),)), state)
    assert targets(decision) == {"a": 4 * GIB}
    assert "available" in decision.actions[0].reason


def test_climbing_major_faults_deflate_at_once() -> None:
    state = PolicyState(Mode.SHRINK, {"/run/a.qmp": VmControl(2 * GIB, last_major_faults=1000)})
    decision = run(Observation(host(1 * GIB), (vm(actual=2 * GIB, faults=1500),)), state)
    assert targets(decision) == {"a": 4 * GIB}
    assert "major faults" in decision.actions[0].reason


def test_a_guest_taking_balloon_pages_back_deflates_at_once() -> None:
    """deflate-on-oom: the guest grows its balloon's size past the target on the verge of OOM;
    the next poll sees it, before any statistics report."""
    state = PolicyState(Mode.SHRINK, {"/run/a.qmp": VmControl(2 * GIB, last_actual_bytes=2 * GIB)})
    decision = run(Observation(host(1 * GIB), (vm(actual=2 * GIB + 20 * MIB),)), state)
    assert targets(decision) == {"a": 4 * GIB}
    assert "took balloon pages back" in decision.actions[0].reason


def test_a_balloon_still_inflating_or_growing_as_asked_is_no_emergency() -> None:
    # Inflating towards a lower target: above it, but shrinking.
    shrinking = PolicyState(
        Mode.SHRINK, {"/run/a.qmp": VmControl(2 * GIB, last_actual_bytes=2 * GIB + 80 * MIB)}
    )
    decision = run(Observation(host(1 * GIB), (vm(actual=2 * GIB + 40 * MIB),)), shrinking)
    assert all("took" not in action.reason for action in decision.actions)
    # Growing towards a higher target it was given.
    growing = PolicyState(Mode.GROW, {"/run/a.qmp": VmControl(3 * GIB, last_actual_bytes=2 * GIB)})
    decision = run(Observation(host(7 * GIB), (vm(actual=2 * GIB + 500 * MIB),)), growing)
    assert all("took" not in action.reason for action in decision.actions)


def test_a_few_major_faults_do_not_deflate() -> None:
    state = PolicyState(Mode.SHRINK, {"/run/a.qmp": VmControl(2 * GIB, last_major_faults=1000)})
    decision = run(Observation(host(1 * GIB), (vm(actual=2 * GIB, faults=1100),)), state)
    assert targets(decision) == {"a": 2 * GIB - 100 * MIB}


def test_after_an_emergency_deflation_the_vm_is_left_alone_for_a_while() -> None:
    state = PolicyState(Mode.SHRINK, {"/run/a.qmp": VmControl(2 * GIB)})
    decision = run(Observation(host(1 * GIB), (vm(actual=2 * GIB, available=100 * MIB),)), state)
    held = []
    for cycle in range(CONFIG.deflate_hold_cycles + 1):
        decision = run(Observation(host(1 * GIB), (vm(updated=1001.0 + cycle),)), decision.state)
        held.append(targets(decision))
    assert held[:-1] == [{}] * CONFIG.deflate_hold_cycles
    assert held[-1] == {"a": 4 * GIB - 100 * MIB}


def test_without_host_figures_nothing_moves() -> None:
    decision = run(Observation(None, (vm(available=10 * MIB),)))
    assert decision.mode is Mode.NO_DATA
    assert decision.actions == ()


def test_a_vm_without_guest_statistics_is_not_shrunk() -> None:
    decision = run(Observation(host(1 * GIB), (vm(available=None), vm("b", updated=0.0))))
    assert decision.actions == ()


def test_changes_below_min_change_are_ignored() -> None:
    decision = run(Observation(host(4 * GIB - 512 * 1024), (vm(),)))
    assert decision.actions == ()


def test_a_vm_that_is_gone_is_forgotten() -> None:
    state = PolicyState(Mode.HOLD, {"/run/gone.qmp": VmControl(GIB)})
    decision = run(Observation(host(5 * GIB), (vm(),)), state)
    assert set(decision.state.vms) == {"/run/a.qmp"}


def test_targets_are_whole_pages() -> None:
    decision = run(Observation(host(4 * GIB - 10 * MIB - 123), (vm(),)))
    assert all(action.target_bytes % 4096 == 0 for action in decision.actions)
