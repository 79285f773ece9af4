"""The WSL2 baselines, `dropcache` and `gradual`, on observation sequences (field-notes §5)."""

from __future__ import annotations

from vmreclaim.guest.policies import POLICIES
from vmreclaim.guest.policies.gradual import GradualConfig, step_bytes

from .simguest import MIB, PolicyDriver, acting

GIB = 1 << 30
BUSY = 0.05  # 5 % of CPU time: far above WSL2's 0.5 % idle threshold, like an IDE


def test_dropcache_acts_only_after_two_minutes_of_idle(sim):
    driver = PolicyDriver(sim, POLICIES["dropcache"])
    actions = acting(driver.run(200, busy_ratio=0.0))
    assert [t for t, _ in actions] == [120.0]
    ((_, decision),) = actions
    assert decision.drop_caches
    assert decision.compact
    assert decision.reclaim_bytes == 0


def test_dropcache_drops_once_per_idle_period(sim):
    driver = PolicyDriver(sim, POLICIES["dropcache"])
    driver.run(600, busy_ratio=0.0)
    driver.run(20, busy_ratio=BUSY)  # a busy interval ends the idle period
    driver.run(200, busy_ratio=0.0)
    drops = [t for t, decision in acting(driver.log) if decision.drop_caches]
    assert drops == [120.0, 620.0 + 120.0]


def test_an_interval_at_the_idle_threshold_still_counts_as_idle(sim):
    driver = PolicyDriver(sim, POLICIES["dropcache"])
    assert acting(driver.run(130, busy_ratio=0.005))  # busy <= 0.5 % is idle


def test_gradual_acts_only_after_two_minutes_of_idle(sim):
    driver = PolicyDriver(sim, POLICIES["gradual"])
    actions = acting(driver.run(130, busy_ratio=0.0))
    assert [t for t, _ in actions] == [120.0]
    ((_, decision),) = actions
    # MemTotal / 32 is 122 MiB on this 3.8 GiB guest: clamped up to 256 MiB
    assert decision.reclaim_bytes == 256 * MIB
    assert decision.compact


def test_the_twelfth_idle_sample_completes_the_window_even_a_little_early(sim):
    # Ticks that come 2 ms early make the twelfth idle sample 119.88 s after the first: WSL2
    # counts samples, so that is its 2 minutes; waiting for one more would cost 10 s.
    for name in ("dropcache", "gradual"):
        driver = PolicyDriver(sim, POLICIES[name])
        actions = acting(driver.run(140, interval_s=1.998, busy_ratio=0.0))
        assert actions, name
        first_sample = driver.log[0][0]
        assert actions[0][0] - first_sample < 120.0, name


def test_gradual_steps_every_idle_sample_until_the_floor(sim):
    driver = PolicyDriver(sim, POLICIES["gradual"])
    actions = acting(driver.run(300, busy_ratio=0.0))
    # 950 MiB reclaimable: steps at 120, 130 and 140 s leave 182 MiB, one more leaves 0
    assert [t for t, _ in actions] == [120.0, 130.0, 140.0, 150.0]
    assert all(d.reclaim_bytes == 256 * MIB and d.compact for _, d in actions)
    assert sim.reclaimable <= 128 * MIB


def test_gradual_compacts_once_when_idle_begins_within_the_floor(sim):
    sim.set_cache(active=40 * MIB, inactive=40 * MIB, slab=20 * MIB)
    driver = PolicyDriver(sim, POLICIES["gradual"])
    actions = acting(driver.run(300, busy_ratio=0.0))
    assert [(t, d.reclaim_bytes, d.compact) for t, d in actions] == [(120.0, 0, True)]


def test_gradual_samples_every_10_s_whatever_the_tick(sim):
    driver = PolicyDriver(sim, POLICIES["gradual"])
    actions = acting(driver.run(150, interval_s=1.0, busy_ratio=0.0))
    assert [t for t, _ in actions] == [120.0, 130.0, 140.0]


def test_gradual_step_is_memtotal_over_32_clamped_to_256_mib_and_1_gib():
    config = GradualConfig()
    assert step_bytes(2 * GIB, config) == 256 * MIB  # 64 MiB, clamped up
    assert step_bytes(16 * GIB, config) == 512 * MIB
    assert step_bytes(64 * GIB, config) == 1 * GIB  # 2 GiB, clamped down


def test_wsl2_modes_do_nothing_while_busy(sim):
    for name in ("dropcache", "gradual"):
        driver = PolicyDriver(sim, POLICIES[name])
        assert acting(driver.run(600, busy_ratio=BUSY)) == [], name
    assert sim.memory["Inactive(file)"] == 800 * MIB


def test_a_busy_sample_restarts_the_two_minute_window(sim):
    driver = PolicyDriver(sim, POLICIES["gradual"])
    driver.run(100, busy_ratio=0.0)
    driver.run(10, busy_ratio=BUSY)
    actions = acting(driver.run(140, busy_ratio=0.0))
    assert actions[0][0] == 110.0 + 120.0


def test_a_busy_sample_says_how_busy_the_interval_was(sim):
    # A log that only says "busy" cannot tell a loaded guest from one tick of housekeeping.
    for name in ("dropcache", "gradual"):
        driver = PolicyDriver(sim, POLICIES[name])
        driver.run(20, busy_ratio=0.0)
        log = driver.run(10, busy_ratio=BUSY) + driver.run(2, busy_ratio=0.0)
        busy = [d.reason for _, d in log if "busy" in d.reason]
        assert busy, name
        assert "5.00 % CPU" in busy[0], busy
        assert "above 0.5 %" in busy[0], busy


def test_an_interval_whose_busy_time_was_all_the_agent_stays_idle(sim):
    # The daemon takes the agent's own CPU time out of /proc/stat's busy time. The agent can
    # run more than the timer ticks that caught it, so an interval's busy time goes below zero
    # once discounted: that is an idle interval, not counters going backwards.
    for name in ("dropcache", "gradual"):
        driver = PolicyDriver(sim, POLICIES[name])
        driver.run(60, busy_ratio=0.0)
        sim.cpu["user"] -= 2
        actions = acting(driver.run(80, busy_ratio=0.0))
        assert actions, name
        assert actions[0][0] - driver.log[0][0] == 120.0, name


def test_wsl2_modes_take_no_action_without_cpu_times(sim):
    for name in ("dropcache", "gradual"):
        driver = PolicyDriver(sim, POLICIES[name])
        driver.run(100, busy_ratio=0.0)
        sim.root.remove("/proc/stat")
        decision = driver.tick()
        assert not decision.acts
        assert "could not read cpu" in decision.reason
        sim.write_files()
