"""The `adaptive` policy on observation sequences: busy, idle, pressure, refaults, the floor."""

from __future__ import annotations

import dataclasses

from vmreclaim.guest.observe import WrittenFile, WrittenOnce
from vmreclaim.guest.policies import POLICIES, AdaptiveConfig
from vmreclaim.guest.policies.adaptive import inactive_kept_by_kernel
from vmreclaim.guest.policies.base import Decision

from . import kernel_text as k
from .simguest import MIB, PolicyDriver, acting

ADAPTIVE = POLICIES["adaptive"]
BUSY = 0.05  # 5 % of CPU time: never idle for WSL2


def floor_of(driver: PolicyDriver) -> int:
    return int(driver.state.floor_bytes or driver.config.min_floor_bytes)


def test_the_first_tick_only_measures(sim):
    decision = PolicyDriver(sim, ADAPTIVE).tick()
    assert not decision.acts
    assert decision.reason == "first sample: measuring"


# The simulated guest has 100 MiB of active cache; under 1 GiB of file cache the kernel keeps at
# least as much inactive (inactive_is_low()), so 700 of its 800 MiB inactive are the cold set.
KEPT = 100 * MIB


def test_busy_with_cold_cache_it_reclaims_most_of_it_within_a_minute(sim):
    driver = PolicyDriver(sim, ADAPTIVE)
    driver.run(30, busy_ratio=BUSY)
    assert sim.memory["Inactive(file)"] < KEPT + 0.3 * 700 * MIB  # > 70 % gone in 30 s
    driver.run(30)
    assert sim.memory["Inactive(file)"] < KEPT + 0.1 * 700 * MIB  # > 90 % gone in 60 s
    assert all("busy (5.0 % CPU)" in d.reason for _, d in acting(driver.log))


def test_busy_it_takes_only_inactive_cache_and_leaves_what_the_kernel_keeps_inactive(sim):
    driver = PolicyDriver(sim, ADAPTIVE)
    driver.run(120, busy_ratio=BUSY)
    assert sim.memory["Active(file)"] == 100 * MIB
    assert KEPT <= sim.memory["Inactive(file)"] < KEPT + 16 * MIB
    assert "the 100.0 MiB the kernel keeps inactive, too little" in driver.log[-1][1].reason


def test_the_kernels_inactive_ratio_grows_with_the_file_cache():
    assert inactive_kept_by_kernel(800 * MIB, 100 * MIB) == 100 * MIB  # < 1 GiB: ratio 1
    assert inactive_kept_by_kernel(2 << 30, 2 << 30) == -(-(2 << 30) // 6)  # 4 GiB: isqrt(40) = 6


def test_busy_steps_are_at_most_one_256_mib_write(sim):
    sim.set_cache(inactive=8 << 30)
    steps = [
        d.reclaim_bytes for _, d in acting(PolicyDriver(sim, ADAPTIVE).run(20, busy_ratio=BUSY))
    ]
    assert steps
    assert max(steps) == 256 * MIB


def test_busy_cache_written_while_it_watches_waits_its_minimum_age(sim):
    sim.set_cache(inactive=0)
    driver = PolicyDriver(sim, ADAPTIVE)
    driver.run(10, busy_ratio=BUSY)
    sim.set_cache(inactive=400 * MIB)  # a file set written now, maybe about to be re-read
    young = driver.run(18)
    assert all(d.reclaim_bytes == 0 for _, d in young)
    assert "400.0 MiB newer than 20 s waits" in young[-1][1].reason
    driver.run(30)
    assert sim.memory["Inactive(file)"] < 0.5 * 400 * MIB  # then it goes like any cold cache


def test_busy_the_tail_goes_in_min_steps_not_crumbs(sim):
    steps = [
        d.reclaim_bytes for _, d in acting(PolicyDriver(sim, ADAPTIVE).run(120, busy_ratio=BUSY))
    ]
    assert min(steps[:-1]) >= 16 * MIB


def test_idle_it_reclaims_down_to_the_floor_long_before_wsl2(sim):
    driver = PolicyDriver(sim, ADAPTIVE)
    log = driver.run(30, busy_ratio=0.0)
    idle_steps = [(t, d) for t, d in acting(log) if d.reason.startswith("idle")]
    assert idle_steps[0][0] <= 20.0  # WSL2 waits 120 s
    assert sim.reclaimable == 128 * MIB


def test_idle_holds_when_the_agents_own_time_exceeds_the_sampled_busy_time(sim):
    # See the WSL2 test of the same name: after the daemon's discount an idle window's busy
    # time can come out below zero, which is idle.
    driver = PolicyDriver(sim, ADAPTIVE)
    driver.run(6, busy_ratio=0.0)
    sim.cpu["user"] -= 2
    log = driver.run(24, busy_ratio=0.0)
    idle_steps = [t for t, d in acting(log) if d.reason.startswith("idle")]
    assert idle_steps
    assert idle_steps[0] <= 20.0


def _idle_reclaims(log: list[tuple[float, Decision]]) -> list[tuple[float, Decision]]:
    return [(t, d) for t, d in acting(log) if d.reclaim_bytes and d.reason.startswith("idle")]


def test_long_idle_it_reclaims_once_down_to_the_deep_idle_floor(sim):
    sim.set_cache(slab=0)  # the simulated reclaim takes file pages only
    driver = PolicyDriver(sim, ADAPTIVE)
    log = driver.run(120, busy_ratio=0.0)
    steps = _idle_reclaims(log)
    assert len(steps) == 2  # down to the floor, then once to the deep idle floor
    (first, _), (deep, decision) = steps
    # the first idle tick comes after the 15 s window; the deep one 45 s after that
    assert deep - first == 46.0
    assert "; quiet for 61 s: " in decision.reason
    assert "reclaimable above the 32.0 MiB deep idle floor" in decision.reason
    assert sim.reclaimable == 32 * MIB
    assert floor_of(driver) == 128 * MIB  # the floor itself stays for the next busy period


def test_deep_idle_waits_for_a_new_idle_period_to_go_below_the_floor_again(sim):
    driver = PolicyDriver(sim, ADAPTIVE)
    driver.run(120, busy_ratio=0.0)
    sim.set_cache(inactive=400 * MIB)  # read while still idle (a cron job, say)
    again = _idle_reclaims(driver.run(60, busy_ratio=0.0))
    assert len(again) == 1
    assert "above the 128.0 MiB floor" in again[0][1].reason  # not the deep one
    driver.run(10, busy_ratio=BUSY)  # work resumes: a new idle period follows
    sim.set_cache(inactive=400 * MIB)
    later = _idle_reclaims(driver.run(120, busy_ratio=0.0))
    assert [("deep idle floor" in d.reason) for _, d in later] == [False, True]


def test_deep_idle_can_be_turned_off(sim):
    driver = PolicyDriver(sim, ADAPTIVE, AdaptiveConfig(deep_idle_after_s=0))
    log = driver.run(300, busy_ratio=0.0)
    assert sim.reclaimable == 128 * MIB
    # At the floor the reason still says whether the guest is idle.
    assert log[-1][1].reason.startswith("idle (0.0 % CPU over 16 s): 128.0 MiB reclaimable is ")


def test_quiet_but_short_of_the_idle_window_it_reclaims_like_busy(sim):
    decisions = [d for _, d in PolicyDriver(sim, ADAPTIVE).run(6, busy_ratio=0.0)]
    assert decisions[1].reason.startswith("quiet for 2 s of the 15 s idle window")
    assert decisions[1].reclaim_bytes < 256 * MIB


def test_a_pressure_spike_pauses_reclaim_and_raises_the_floor(sim):
    driver = PolicyDriver(sim, ADAPTIVE)
    driver.run(10, busy_ratio=BUSY)
    before = sim.reclaimable
    sim.advance(0, stall_us=50_000)  # 50 ms stalled in one 2 s tick: 15x senpai's target
    spike = driver.tick()
    assert not spike.acts
    assert spike.reason.startswith("memory pressure: 50.0 ms stalled in 2.0 s")
    assert floor_of(driver) == before
    held = driver.run(30, busy_ratio=BUSY)
    assert acting(held[1:]) == []
    assert all("paused after memory pressure" in d.reason for _, d in held[1:-1])


def test_stall_under_the_target_does_not_stop_reclaim(sim):
    driver = PolicyDriver(sim, ADAPTIVE)
    driver.run(4, busy_ratio=BUSY)
    sim.advance(0, stall_us=2_000)  # 2 ms in 2 s, under senpai's ~3.3 ms
    assert driver.tick().reclaim_bytes > 0


def test_a_refault_burst_raises_the_floor_and_later_steps_respect_it(sim):
    driver = PolicyDriver(sim, ADAPTIVE)
    driver.run(10, busy_ratio=BUSY)
    sim.advance(0, refault_bytes=64 * MIB)
    burst = driver.tick()
    assert not burst.acts
    assert burst.reason.startswith("refaults: 64.0 MiB of cache read back in 2.0 s")
    raised = floor_of(driver)
    assert raised == 128 * MIB + 96 * MIB  # what refaulted, plus the 50 % margin
    for _ in range(60):
        sim.advance(2)
        before = sim.reclaimable
        decision = driver.tick()
        assert before - decision.reclaim_bytes >= floor_of(driver)  # the floor it decided with
    assert sim.reclaimable >= 200 * MIB  # the floor decays only a few % a minute


def test_the_learned_floor_decays_toward_the_minimum(sim):
    driver = PolicyDriver(sim, ADAPTIVE)
    driver.run(4, busy_ratio=BUSY)
    sim.advance(0, refault_bytes=400 * MIB)
    driver.tick()
    high = floor_of(driver)
    driver.run(600)
    low = floor_of(driver)
    assert 128 * MIB < low < high
    # 5 % of the gap per minute: after 10 minutes 0.95**10 of it is left
    assert abs((low - 128 * MIB) / (high - 128 * MIB) - 0.95**10) < 0.01


def test_it_never_asks_for_more_than_reclaimable_minus_the_floor(sim):
    # Deep idle goes below the floor on purpose (see the deep idle tests below).
    driver = PolicyDriver(sim, ADAPTIVE, AdaptiveConfig(deep_idle_after_s=0))
    driver.run(4, busy_ratio=BUSY)
    sim.advance(0, refault_bytes=400 * MIB)
    driver.tick()  # the floor rises to 728 MiB, above all of the active list and slab
    steps = []
    for busy in (BUSY, 0.0):
        for inactive_mib in range(600, 1100, 10):
            sim.advance(2, busy)
            sim.set_cache(active=0, inactive=inactive_mib * MIB, slab=0)
            before = sim.reclaimable
            decision = driver.tick()
            assert decision.reclaim_bytes <= max(0, before - floor_of(driver))
            steps.append(decision.reclaim_bytes)
    assert any(steps)


def test_no_action_on_incomplete_data(sim):
    driver = PolicyDriver(sim, ADAPTIVE)
    driver.run(4, busy_ratio=BUSY)
    for absolute in ("/proc/stat", "/proc/meminfo", "/proc/vmstat"):
        sim.root.remove(absolute)
        decision = driver.tick()
        assert not decision.acts, absolute
        assert decision.reason.startswith("no action: could not read")
        sim.write_files()


def test_a_missing_meminfo_key_it_needs_is_incomplete_data(sim):
    driver = PolicyDriver(sim, ADAPTIVE)
    driver.run(4, busy_ratio=BUSY)
    sim.root.write("/proc/meminfo", k.MEMINFO_DEBIAN_6_1.replace("Inactive(file)", "Inactive(x)"))
    decision = driver.tick()
    assert decision.reason == "no action: could not read meminfo.Inactive(file)"


def test_without_psi_it_still_reclaims_and_says_it_backs_off_on_refaults_only(sim):
    sim.root.remove("/proc/pressure/memory")
    driver = PolicyDriver(sim, ADAPTIVE)
    steps = acting(driver.run(10, busy_ratio=BUSY))
    assert steps
    assert all(d.reason.endswith("(no PSI: backing off on refaults only)") for _, d in steps)


def _fragment(sim, order0_pages: int) -> None:
    """Free memory mostly in order-0 pages, which free page reporting cannot return."""
    sim.root.write(
        "/proc/buddyinfo",
        f"Node 0, zone   Normal  {order0_pages}   2000    100      0      0      0      0      0"
        "      0      0     20 \n",
    )


def _compaction_times(log: list[tuple[float, Decision]]) -> list[float]:
    return [t for t, d in log if d.compact]


def test_it_compacts_when_much_free_memory_is_unreportable(sim):
    # 30000 free order-0 pages (117 MiB) and few large blocks: most free memory is unreportable
    _fragment(sim, 30000)
    sim.set_cache(inactive=0)
    log = PolicyDriver(sim, ADAPTIVE).run(20, busy_ratio=BUSY)
    compactions = [(t, d.compact_reason) for t, d in log if d.compact]
    assert [t for t, _ in compactions] == [2.0]
    assert compactions[0][1] == (
        "134.4 MiB free in blocks below order 9 (63 % of free) cannot be reported"
    )


def test_a_compaction_that_does_not_help_is_retried_at_doubling_intervals(sim):
    _fragment(sim, 30000)  # the simulated guest stays as fragmented whatever compaction does
    sim.set_cache(inactive=0)
    driver = PolicyDriver(sim, ADAPTIVE)
    assert _compaction_times(driver.run(200, busy_ratio=BUSY)) == [2.0, 22.0, 62.0, 142.0]


def test_fragmentation_growing_past_what_compaction_left_brings_the_short_interval_back(sim):
    _fragment(sim, 30000)
    sim.set_cache(inactive=0)
    driver = PolicyDriver(sim, ADAPTIVE)
    assert _compaction_times(driver.run(100, busy_ratio=BUSY)) == [2.0, 22.0, 62.0]
    _fragment(sim, 50000)  # 78 MiB more unreportable: past the 64 MiB step
    assert _compaction_times(driver.run(10, busy_ratio=BUSY)) == [100.0]


def test_a_compaction_that_helps_keeps_the_short_interval(sim):
    _fragment(sim, 60000)
    sim.set_cache(inactive=0)
    driver = PolicyDriver(sim, ADAPTIVE)
    driver.run(4, busy_ratio=BUSY)  # compacts at 2 s
    _fragment(sim, 30000)  # ... which freed 117 MiB of small blocks
    driver.run(2, busy_ratio=BUSY)  # at 4 s the agent sees what the compaction left
    _fragment(sim, 45000)  # some fragmentation back, less than the 64 MiB that counts as growth
    assert _compaction_times(driver.run(14, busy_ratio=BUSY)) == [12.0]


def test_compactions_are_at_least_the_interval_apart(sim):
    _fragment(sim, 30000)
    sim.set_cache(inactive=0)
    driver = PolicyDriver(sim, ADAPTIVE)
    driver.run(6, busy_ratio=BUSY)  # compacts at 2 s; at 4 s sees what compaction left
    _fragment(sim, 60000)
    # Fragmentation grew: the 10 s interval. That compaction did not help either (the second
    # in a row): 10 s doubled twice to the next.
    assert _compaction_times(driver.run(50, busy_ratio=BUSY)) == [12.0, 52.0]


def test_when_the_load_stops_a_pass_comes_the_interval_after_the_busy_one_whatever_the_back_off(
    sim,
):
    """A pass under load says little of one after it: what ran freed its memory since."""
    _fragment(sim, 30000)  # stays as fragmented whatever compaction does
    sim.set_cache(active=0, inactive=0, slab=0)
    driver = PolicyDriver(sim, ADAPTIVE)
    assert _compaction_times(driver.run(24, busy_ratio=BUSY)) == [2.0, 22.0]  # next: 62 s
    log = driver.run(100, busy_ratio=0.0)  # quiet from 24 s on
    compactions = [(t, d.compact_reason) for t, d in log if d.compact]
    # Not on the first quiet tick, 2 s after the busy pass: the 10 s interval after it.
    assert compactions[0] == (
        32.0,
        "134.4 MiB free in blocks below order 9 (63 % of free) cannot be reported, and the load "
        "the last pass ran under has stopped",
    )
    # Once: that pass ran in the quiet and did not help either, so the back-off goes on from it
    # (the third failure in a row: 80 s).
    assert [t for t, _ in compactions] == [32.0, 112.0]


def test_when_the_load_stops_less_unreportable_is_worth_a_pass(sim):
    """56 MiB unreportable: under the 64 MiB a pass needs, over the 32 MiB it needs then."""
    _fragment(sim, 30000)
    sim.set_cache(active=0, inactive=0, slab=0)
    driver = PolicyDriver(sim, ADAPTIVE)
    assert _compaction_times(driver.run(24, busy_ratio=BUSY)) == [2.0, 22.0]
    _fragment(sim, 10000)  # what ran under that pass freed its memory: 56 MiB left
    assert not _compaction_times(driver.run(30, busy_ratio=BUSY))
    assert _compaction_times(driver.run(30, busy_ratio=0.0)) == [56.0]  # the first quiet tick


def test_when_the_load_stops_the_share_of_free_memory_is_not_asked(sim):
    """35 MiB unreportable beside 1.9 GiB reportable: under the 2 % share every other pass
    needs (39 MiB), over the 32 MiB the pass after a load needs."""
    _fragment(sim, 30000)
    sim.set_cache(active=0, inactive=0, slab=0)
    driver = PolicyDriver(sim, ADAPTIVE)
    assert _compaction_times(driver.run(24, busy_ratio=BUSY)) == [2.0, 22.0]
    sim.root.write(  # 4600 order-0, 2000 order-1 and 100 order-2 pages; 480 blocks of 4 MiB
        "/proc/buddyinfo",
        "Node 0, zone   Normal   4600   2000    100      0      0      0      0      0"
        "      0      0    480 \n",
    )
    assert not _compaction_times(driver.run(30, busy_ratio=BUSY))
    assert _compaction_times(driver.run(30, busy_ratio=0.0)) == [56.0]  # the first quiet tick


def test_a_guest_quiet_all_along_compacts_on_the_back_off_alone(sim):
    _fragment(sim, 30000)
    sim.set_cache(active=0, inactive=0, slab=0)  # no deep idle reclaim to compact after
    driver = PolicyDriver(sim, ADAPTIVE)
    assert _compaction_times(driver.run(150, busy_ratio=0.0)) == [2.0, 22.0, 62.0, 142.0]


def test_the_load_stopping_with_little_unreportable_leaves_the_back_off_as_it_was(sim):
    _fragment(sim, 30000)
    sim.set_cache(active=0, inactive=0, slab=0)
    driver = PolicyDriver(sim, ADAPTIVE)
    driver.run(30, busy_ratio=BUSY)  # compactions at 2 and 22 s under load; the next at 62 s
    _fragment(sim, 3000)  # 29 MiB unreportable when the load stops: not worth a pass
    assert not _compaction_times(driver.run(4, busy_ratio=0.0))
    _fragment(sim, 30000)  # back to what the last pass left: not growth, the back-off holds
    assert _compaction_times(driver.run(40, busy_ratio=0.0)) == [62.0]


def test_busy_it_waits_for_its_own_freeing_to_settle_before_compacting(sim):
    """95 MiB unreportable: worth a pass, but not while each reclaim leaves new small blocks."""
    _fragment(sim, 20000)
    log = PolicyDriver(sim, ADAPTIVE).run(120, busy_ratio=BUSY)
    reclaims = [t for t, d in log if d.reclaim_bytes]
    compactions = _compaction_times(log)
    assert len(reclaims) > 3
    assert compactions
    assert compactions[0] >= reclaims[-1] + ADAPTIVE.config_type().compact_settle_s


def test_busy_and_freeing_it_still_compacts_past_the_busy_amount(sim):
    _fragment(sim, 40000)  # 173 MiB unreportable
    log = PolicyDriver(sim, ADAPTIVE).run(10, busy_ratio=BUSY)
    assert [t for t, d in log if d.reclaim_bytes][:1] == [2.0]
    assert _compaction_times(log)[:1] == [2.0]


def test_it_does_not_compact_when_little_free_memory_is_unreportable(sim):
    # 40 MiB unreportable: under the 64 MiB worth a compaction
    _fragment(sim, 10000)
    assert not any(d.compact for _, d in PolicyDriver(sim, ADAPTIVE).run(130, busy_ratio=BUSY))


def reclaiming(log: list[tuple[float, Decision]]) -> list[tuple[float, Decision]]:
    """The ticks that reclaim or drop cache (compactions aside)."""
    return [(t, d) for t, d in log if d.reclaim_bytes or d.drop_caches]


def test_with_swap_and_no_swappiness_key_it_reclaims_while_busy(sim):
    # Linux 6.1 with swap on, as WSL2: bounded memory.reclaim with vm.swappiness held at 0
    sim.swap_on(1 << 30)
    busy = reclaiming(PolicyDriver(sim, ADAPTIVE).run(60, busy_ratio=BUSY))
    assert busy
    assert all(d.reclaim_bytes <= 256 * MIB and not d.drop_caches for _, d in busy)


def test_with_swap_no_key_and_no_vm_swappiness_it_drops_cache_only_when_idle_once(sim):
    # Without vm.swappiness to hold at 0, memory.reclaim could push anonymous memory out, so
    # the only safe method is drop_caches, which cannot be bounded
    sim.swap_on(1 << 30)
    sim.root.remove("/proc/sys/vm/swappiness")
    driver = PolicyDriver(sim, ADAPTIVE)
    busy = driver.run(60, busy_ratio=BUSY)
    assert reclaiming(busy) == []
    assert "waiting for idle" in busy[-1][1].reason
    idle = reclaiming(driver.run(60, busy_ratio=0.0))
    assert len(idle) == 1
    assert "once per idle period" in idle[0][1].reason


def test_config_changes_the_law(sim):
    slow = dataclasses.replace(AdaptiveConfig(), busy_time_constant_s=200.0)
    driver = PolicyDriver(sim, ADAPTIVE, slow)
    driver.run(30, busy_ratio=BUSY)
    assert sim.memory["Inactive(file)"] > 400 * MIB


def _tick_with_written(driver: PolicyDriver, *files: WrittenFile) -> Decision:
    """One tick whose observation carries the drop-behind watch's files."""
    obs = dataclasses.replace(driver.sim.observe(), written=WrittenOnce(files, ("/mnt",)))
    decision, driver.state = driver.policy.decide(obs, driver.config, driver.state)
    return decision


def test_files_written_and_unread_past_the_age_are_dropped_but_younger_ones_wait(sim):
    driver = PolicyDriver(sim, ADAPTIVE)
    driver.run(4, busy_ratio=BUSY)
    now = sim.now
    old, young = WrittenFile(now - 25, 64 * MIB), WrittenFile(now - 5, 300 * MIB)
    decision = _tick_with_written(driver, old, young)
    assert decision.drop_written_before == now - 10
    assert decision.drop_reason == "1 file(s) of 64.0 MiB written and not read for 10 s"
    sim.advance(2)
    assert _tick_with_written(driver, young).drop_written_before is None


def test_busy_compaction_waits_for_files_still_due_for_drop_behind_then_follows_the_last(sim):
    """95 MiB unreportable while a writer's files keep coming: each drop would leave new small
    blocks. On the tick of the last drop, nothing waits any more: compact right after it."""
    sim.set_cache(inactive=0)  # no memory.reclaim steps: only drop-behind frees
    _fragment(sim, 20000)
    driver = PolicyDriver(sim, ADAPTIVE)
    start = sim.now
    first, last = WrittenFile(start - 1, 64 * MIB), WrittenFile(start + 8, 64 * MIB)
    decisions = []
    for _ in range(6):  # ticks at 0-10 s: the first file waits, is dropped at 10 s
        decisions.append(_tick_with_written(driver, first, *([last] if sim.now >= last[0] else [])))
        sim.advance(2, BUSY)
    assert not any(d.compact for d in decisions)
    assert decisions[-1].drop_written_before is not None
    decisions = []
    for _ in range(5):  # ticks at 12-20 s: the last file is dropped at 20 s
        decisions.append(_tick_with_written(driver, last))
        sim.advance(2, BUSY)
    assert [d.compact for d in decisions] == [False, False, False, False, True]
    assert decisions[-1].drop_written_before is not None


def test_a_trickle_of_small_files_due_for_drop_behind_does_not_hold_compaction_off(sim):
    """A database's WAL: one 16 MiB segment always waiting. Under a pass's worth, it does not
    count as freeing to come (under pgbench-rw it held every pass off, 25 % of the cold files
    stayed on the host as unreportable free memory)."""
    sim.set_cache(inactive=0)
    _fragment(sim, 20000)  # 95 MiB unreportable: over 64 MiB, under the busy 128 MiB
    driver = PolicyDriver(sim, ADAPTIVE)
    decisions = []
    for _ in range(3):
        decisions.append(_tick_with_written(driver, WrittenFile(sim.now - 2, 16 * MIB)))
        sim.advance(2, BUSY)
    assert [d.compact for d in decisions] == [False, True, False]


def test_a_few_small_files_are_not_worth_a_drop(sim):
    driver = PolicyDriver(sim, ADAPTIVE)
    driver.run(4, busy_ratio=BUSY)
    assert (
        _tick_with_written(driver, WrittenFile(sim.now - 60, 1 * MIB)).drop_written_before is None
    )


def test_drop_behind_goes_on_while_reclaim_is_paused_by_pressure(sim):
    driver = PolicyDriver(sim, ADAPTIVE)
    driver.run(10, busy_ratio=BUSY)
    sim.advance(0, stall_us=50_000)
    decision = _tick_with_written(driver, WrittenFile(sim.now - 30, 64 * MIB))
    assert decision.reason.startswith("memory pressure")
    assert decision.reclaim_bytes == 0
    assert decision.drop_written_before is not None
    assert decision.acts


def test_what_drop_behind_takes_is_not_reclaimed_again(sim):
    driver = PolicyDriver(sim, ADAPTIVE)
    driver.run(30, busy_ratio=0.0)
    sim.set_cache(inactive=800 * MIB)
    sim.advance(2)
    obs = sim.observe()
    written = WrittenOnce((WrittenFile(sim.now - 30, 200 * MIB),), ("/mnt",))
    without, _ = ADAPTIVE.decide(obs, driver.config, driver.state)
    with_files, _ = ADAPTIVE.decide(
        dataclasses.replace(obs, written=written), driver.config, driver.state
    )
    assert without.reason.startswith("idle")
    assert with_files.reclaim_bytes == without.reclaim_bytes - 200 * MIB


def test_an_age_of_zero_turns_drop_behind_and_the_watch_off(sim):
    config = dataclasses.replace(AdaptiveConfig(), drop_behind_age_s=0.0)
    assert ADAPTIVE.watches_writes(AdaptiveConfig())
    assert not ADAPTIVE.watches_writes(config)
    driver = PolicyDriver(sim, ADAPTIVE, config)
    driver.run(4, busy_ratio=BUSY)
    assert (
        _tick_with_written(driver, WrittenFile(sim.now - 60, 64 * MIB)).drop_written_before is None
    )


def test_idle_a_large_reclaim_is_compacted_on_its_own_tick_whatever_the_back_off(sim):
    _fragment(sim, 30000)  # no compaction helps: the retries wait longer and longer
    sim.set_cache(inactive=0, slab=0)
    driver = PolicyDriver(sim, ADAPTIVE)
    assert _compaction_times(driver.run(150, busy_ratio=BUSY)) == [2.0, 22.0, 62.0, 142.0]
    sim.set_cache(inactive=400 * MIB)  # the next retry would wait until 302 s
    log = driver.run(120, busy_ratio=0.0)
    deep = [(t, d) for t, d in _idle_reclaims(log) if "deep idle floor" in d.reason]
    assert len(deep) == 1
    t, decision = deep[0]
    assert t < 302.0
    assert decision.compact
    assert decision.compact_reason == (
        "right after reclaiming 96.0 MiB while idle, before new allocations settle among the "
        "freed pages"
    )


def test_idle_a_small_reclaim_leaves_compaction_to_its_back_off(sim):
    _fragment(sim, 30000)
    sim.set_cache(active=0, inactive=128 * MIB, slab=0)  # at the floor
    driver = PolicyDriver(sim, ADAPTIVE)
    driver.run(100, busy_ratio=BUSY)  # compactions at 2, 22, 62 s; the next waits until 142 s
    driver.run(20, busy_ratio=0.0)  # idle, at the floor
    sim.set_cache(inactive=168 * MIB)  # 40 MiB above the floor: under compact_min_bytes
    steps = _idle_reclaims(driver.run(10, busy_ratio=0.0))
    assert [d.reclaim_bytes for _, d in steps] == [40 * MIB]
    assert not steps[0][1].compact


def test_fragmented_busy_or_idle_it_does_not_drop_dentries_and_inodes(sim):
    # Dropping them (drop_caches=2) before a deep reclaim left more on the host, not less.
    _fragment(sim, 30000)  # stays as fragmented whatever compaction does
    sim.set_cache(inactive=0)
    driver = PolicyDriver(sim, ADAPTIVE)
    log = driver.run(120, busy_ratio=BUSY) + driver.run(120, busy_ratio=0.0)
    assert len(_compaction_times(log)) >= 5
    assert not any(d.split_huge_pages for _, d in log)
