"""The daemon loop over a fake /proc and /sys with a fake clock: writes, logs, stopping."""

from __future__ import annotations

import errno
import logging
import math
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from vmreclaim.guest.daemon import SETUP_REFRESH_S, Agent, CpuLedger, stop_on_signals
from vmreclaim.guest.policies import POLICIES
from vmreclaim.units import format_size

from . import kernel_text as k
from .simguest import MIB, START, SimGuest

BUSY = 0.05
MEMORY_RECLAIM = "/sys/fs/cgroup/memory.reclaim"
COMPACT = "/proc/sys/vm/compact_memory"


def make_agent(sim: SimGuest, name: str = "adaptive", busy_ratio: float = BUSY) -> Agent:
    sim.busy_ratio = busy_ratio
    policy = POLICIES[name]
    return Agent(
        sim.path,
        policy,
        policy.config_type(),
        interval_s=2.0,
        clock=sim.clock,
        sleep=sim.sleep,
        writer=sim.kernel_writer,
        own_cpu=lambda: (0.0, 0.0),
        user_hz=100,
    )


def info_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]


# The simulated guest's 100 MiB of active cache: the kernel keeps as much inactive (under 1 GiB
# of file cache its ratio is 1), so the law's cold set is the inactive list above that.
ACTIVE = 100 * MIB


def expected_busy_steps(cold: int, ticks: int) -> list[int]:
    """The adaptive law with its defaults on a cold set far above the floor, page aligned."""
    inactive = cold
    steps = []
    for _ in range(ticks):
        step = int(inactive * (1 - math.exp(-2.0 / 20.0))) // 4096 * 4096
        steps.append(step)
        inactive -= step
    return steps


def test_adaptive_writes_memory_reclaim_every_busy_tick(sim):
    agent = make_agent(sim)
    assert agent.run(duration_s=10) == 5  # ticks at 0, 2, 4, 6 and 8 s
    steps = expected_busy_steps(800 * MIB - ACTIVE, 4)
    # (the simulated guest's fragmented free memory also earns one compaction: not this test's)
    reclaims = [write for write in sim.writes if write[0] == MEMORY_RECLAIM]
    assert reclaims == [(MEMORY_RECLAIM, str(step)) for step in steps]
    assert sim.now == START + 10


def test_each_action_logs_what_how_much_measured_and_why(sim, caplog):
    caplog.set_level(logging.INFO)
    make_agent(sim).run(duration_s=4)
    step = expected_busy_steps(800 * MIB - ACTIVE, 1)[0]
    size = format_size(step)
    messages = [m for m in info_messages(caplog) if not m.startswith("compact:")]
    assert messages == [
        f"reclaim {size} by memory.reclaim (1 write(s), done): {size} reclaimed, "
        f"cache 950.0 MiB -> {format_size(950 * MIB - step)} in 0.00 s; "
        f"why: busy (5.0 % CPU): 700.0 MiB inactive cache above the 128.0 MiB floor; "
        f"reclaiming {format_size(int(700 * MIB * (1 - math.exp(-0.1))))}",
        "stopped after 2 tick(s); CPU 0.00 s since the start, 0.00 s of it in ticks "
        "(observing 0.00 s, deciding 0.00 s, reclaim 0.00 s, compaction 0.00 s)",
    ]


def test_no_op_ticks_log_only_at_debug(sim, caplog):
    caplog.set_level(logging.DEBUG)
    make_agent(sim, "off").run(duration_s=10)
    assert info_messages(caplog) == [
        "stopped after 5 tick(s); CPU 0.00 s since the start, 0.00 s of it in ticks "
        "(observing 0.00 s, deciding 0.00 s)"
    ]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert debug.count("no action: policy off") == 5
    assert sim.writes == []


def test_the_stop_line_says_where_the_agents_cpu_went(sim, caplog):
    """Each action's CPU (its own and the kernel's work in its context) is booked to it."""
    caplog.set_level(logging.INFO)
    spent = [0.0]

    def writer(path: Path, text: str) -> None:
        spent[0] += 0.25 if path.name == "memory.reclaim" else 0.5
        sim.kernel_writer(path, text)

    agent = make_agent(sim)
    agent._writer = writer
    # 1.5 s before the first tick: the agent's start, which no tick's part holds.
    agent.cpu = CpuLedger(lambda: (1.0, 0.5 + spent[0]))
    agent.run(duration_s=4)
    assert info_messages(caplog)[-1] == (
        "stopped after 2 tick(s); CPU 2.25 s since the start, 0.75 s of it in ticks "
        "(compaction 0.50 s, reclaim 0.25 s, observing 0.00 s, deciding 0.00 s)"
    )


def test_gradual_writes_its_step_with_swappiness_0_then_compacts(sim):
    sim.root.write("/proc/sys/kernel/osrelease", k.OSRELEASE_6_11)
    make_agent(sim, "gradual", busy_ratio=0.0).run(duration_s=122)
    assert sim.writes == [(MEMORY_RECLAIM, f"{256 * MIB} swappiness=0"), (COMPACT, "1")]


def test_dropcache_writes_3_to_drop_caches_then_compacts(sim):
    make_agent(sim, "dropcache", busy_ratio=0.0).run(duration_s=300)
    assert sim.writes == [("/proc/sys/vm/drop_caches", "3"), (COMPACT, "1")]


def test_start_logs_the_effective_configuration(sim, caplog):
    caplog.set_level(logging.INFO)
    make_agent(sim).log_start()
    messages = info_messages(caplog)
    assert messages[0].startswith("starting: policy adaptive (ours:")
    assert messages[1].startswith("adaptive config: min_floor_bytes=128.0 MiB ")
    assert "busy_max_step_bytes=256.0 MiB" in messages[1]
    assert messages[2] == (
        "reclaim on 6.1.0-18-amd64: memory.reclaim (no swap is active: reclaim takes cache)"
    )


def test_a_failed_write_is_logged_and_the_loop_goes_on(sim, caplog):
    sim.root.write(
        "/proc/buddyinfo",
        "Node 0, zone   Normal  30000   2000    100      0      0      0      0"
        "      0      0      0     20 \n",
    )

    def busy_compaction(path: Path, text: str) -> None:
        if path.name == "compact_memory":
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        sim.kernel_writer(path, text)

    agent = make_agent(sim)
    agent._writer = busy_compaction
    caplog.set_level(logging.WARNING)
    assert agent.run(duration_s=6) == 3
    (warning,) = info_messages(caplog)
    assert warning.startswith("compaction failed: writing ")
    assert "Device or resource busy; why it was tried: " in warning
    assert len(sim.writes) == 2  # the reclaims went on


def test_stop_ends_the_loop_after_the_current_tick(sim):
    agent = make_agent(sim)
    sleeps = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        sim.sleep(seconds)
        if len(sleeps) == 3:
            agent.stop("test")

    agent._sleep = sleep
    assert agent.run() == 3
    assert agent.stop_reason == "test"


def test_sigterm_stops_the_loop_after_the_tick_and_restores_the_handler(sim):
    agent = make_agent(sim)
    sleeps = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        sim.sleep(seconds)
        if len(sleeps) == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    agent._sleep = sleep
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(agent):
        assert agent.run() == 2
    assert agent.stop_reason == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigint_wakes_the_default_sleep_at_once(sim):
    policy = POLICIES["off"]
    agent = Agent(sim.path, policy, policy.config_type(), interval_s=60.0)
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    start = time.monotonic()
    with stop_on_signals(agent):
        timer.start()
        assert agent.run() == 1
    timer.join()
    assert time.monotonic() - start < 10
    assert agent.stop_reason == "SIGINT"


def test_a_tick_that_overruns_delays_the_next_instead_of_bursting(sim):
    agent = make_agent(sim, "off")
    ticks = []
    tick = agent.tick

    def slow_tick():
        ticks.append(sim.now)
        sim.advance(5.0)  # a tick that takes 5 s of a 2 s interval
        return tick()

    agent.tick = slow_tick  # type: ignore[method-assign]
    agent.run(duration_s=20)
    assert [t - START for t in ticks] == [0.0, 7.0, 14.0]


def test_adaptive_does_not_count_its_own_reclaim_as_guest_activity(sim):
    # Each memory.reclaim write costs the agent 0.5 s of system time, which /proc/stat shows as
    # busy (6 % of a 4-CPU guest over 2 s); the guest itself is idle.
    spent = [0.0]

    def costly_writer(path: Path, text: str) -> None:
        sim.kernel_writer(path, text)
        spent[0] += 0.5
        sim.cpu["system"] += 50
        sim.write_files()

    sim.set_cache(active=2 << 30, inactive=0, slab=0)
    agent = make_agent(sim, busy_ratio=0.0)
    agent._writer = costly_writer
    agent._own_cpu = lambda: (0.0, spent[0])
    agent.run(duration_s=20)
    # idle from 16 s on: 1 GiB steps on consecutive ticks, all the way down to the floor
    reclaims = [write for write in sim.writes if write[0] == MEMORY_RECLAIM]
    assert len(reclaims) == 8  # two ticks of four 256 MiB writes
    assert sim.reclaimable == 128 * MIB


def test_the_wsl2_baselines_do_not_count_the_agents_own_cpu_either(sim):
    # An otherwise idle guest whose only activity is the agent itself: 0.1 s of CPU a tick,
    # 2.5 % of a 2 s tick on this 2-CPU-equivalent guest, five times WSL2's idle threshold.
    spent = [0.0]
    agent = make_agent(sim, "gradual", busy_ratio=0.0)
    advance = sim.sleep

    def sleep_and_spend(seconds: float) -> None:
        spent[0] += 0.1
        sim.cpu["system"] += 10
        advance(seconds)

    agent._sleep = sleep_and_spend
    agent._own_cpu = lambda: (0.0, spent[0])
    agent.run(duration_s=200)
    reclaims = [write for write in sim.writes if write[0] == MEMORY_RECLAIM]
    assert reclaims, "gradual never saw the guest idle"


def test_a_reclaim_on_a_swap_on_kernel_without_the_key_holds_swappiness_and_says_so(sim, caplog):
    caplog.set_level(logging.INFO)
    sim.swap_on(1 << 30)
    make_agent(sim).run(duration_s=4)
    swappiness = "/proc/sys/vm/swappiness"
    assert [w for w in sim.writes if w[0] == swappiness] == [(swappiness, "0"), (swappiness, "60")]
    reclaims = [m for m in info_messages(caplog) if m.startswith("reclaim ")]
    assert "done, vm.swappiness held at 0)" in reclaims[0]


def test_the_guests_setup_is_read_again_once_a_minute(sim):
    """Kernel, reclaim knobs and reporting path are read at the first tick and every
    SETUP_REFRESH_S after: an administrator's change shows within a minute, not at once."""
    agent = make_agent(sim)
    assert agent.tick().before.reclaim.vm_swappiness == 60
    sim.root.write("/proc/sys/vm/swappiness", "10\n")
    sim.advance(SETUP_REFRESH_S - 1)
    assert agent.tick().before.reclaim.vm_swappiness == 60
    sim.advance(1)
    assert agent.tick().before.reclaim.vm_swappiness == 10
