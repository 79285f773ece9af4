"""Memory held in huge pages that processes partly freed: what the agent reads, decides and does."""

from __future__ import annotations

import json
import logging

from vmreclaim.guest import oneshot, status
from vmreclaim.guest.observe import observe
from vmreclaim.guest.observe.memory import parse_meminfo
from vmreclaim.guest.observe.thp import parse_thp_mode
from vmreclaim.guest.policies import POLICIES, Decision
from vmreclaim.guest.policies.adaptive import ADAPTIVE

from . import kernel_text as k
from .simguest import MIB, PolicyDriver, SimGuest
from .test_daemon import make_agent

BUSY = 0.05
DROP_CACHES = "/proc/sys/vm/drop_caches"
COMPACT = "/proc/sys/vm/compact_memory"


def test_held_memory_is_the_unmapped_anon_on_the_lru_in_verbatim_kernel_text():
    # 5508 + 525772 - 36088 - 5592 - 0 kB: 255 huge pages with 128 KiB of each still mapped
    memory = parse_meminfo(k.MEMINFO_THP_HELD_6_1)
    assert memory.unmapped_anon_bytes == 489600 * k.KIB


def test_nothing_is_held_after_the_shrinker_split_them():
    memory = parse_meminfo(k.MEMINFO_THP_SPLIT_6_1)
    assert memory.unmapped_anon_bytes is not None
    assert memory.unmapped_anon_bytes < 1 * MIB


def test_the_snapshot_reports_held_memory_the_mode_and_the_counters(debian):
    debian.write("/proc/meminfo", k.MEMINFO_THP_HELD_6_1)
    debian.write("/proc/vmstat", k.VMSTAT_THP_HELD_6_1)
    thp = observe(debian.path).huge_pages
    assert (thp.mode, thp.partly_freed_bytes) == ("always", 489600 * k.KIB)
    assert (thp.deferred_splits, thp.splits) == (255, 0)


def test_the_thp_mode_is_the_bracketed_word():
    assert parse_thp_mode(k.THP_ENABLED_ALWAYS) == "always"
    assert parse_thp_mode(k.THP_ENABLED_MADVISE) == "madvise"
    assert parse_thp_mode("garbage\n") is None


def test_a_kernel_without_thp_holds_nothing_and_is_not_incomplete(debian):
    debian.remove("/sys/kernel/mm/transparent_hugepage/enabled")
    debian.write("/proc/vmstat", k.VMSTAT_5_4_EXCERPT)
    obs = observe(debian.path)
    assert obs.huge_pages.mode is None
    assert obs.huge_pages.partly_freed_bytes == 0
    assert not any("thp" in part for part in obs.incomplete)


def test_status_says_how_much_is_held_and_what_returns_it(debian):
    debian.write("/proc/meminfo", k.MEMINFO_THP_HELD_6_1)
    debian.write("/proc/vmstat", k.VMSTAT_THP_HELD_6_1)
    obs = observe(debian.path)
    problems = status.diagnose(obs)
    assert "thp-held" in [problem.code for problem in problems]
    text = status.render_text(obs, problems)
    assert "held in partly freed huge pages  478.1 MiB" in text
    document = json.loads(status.render_json(obs, problems))
    assert document["huge_pages"]["partly_freed_bytes"] == 489600 * k.KIB
    assert document["huge_pages"]["mode"] == "always"


def test_status_of_a_guest_holding_nothing_raises_no_thp_problem(debian):
    assert "thp-held" not in [p.code for p in status.diagnose(observe(debian.path))]


# adaptive


def splits(log: list[tuple[float, Decision]]) -> list[tuple[float, Decision]]:
    return [(t, d) for t, d in log if d.split_huge_pages]


def test_adaptive_splits_and_compacts_when_huge_pages_hold_memory_while_busy(sim: SimGuest):
    sim.partly_free_huge_pages(400 * MIB)
    log = PolicyDriver(sim, ADAPTIVE).run(20, busy_ratio=BUSY)
    done = splits(log)
    assert len(done) == 1
    decision = done[0][1]
    assert decision.compact
    assert "400.0 MiB held in partly freed huge pages" in decision.split_reason
    assert sim.thp_held == 0


def test_adaptive_leaves_a_little_held_memory_alone(sim: SimGuest):
    sim.partly_free_huge_pages(32 * MIB)
    assert splits(PolicyDriver(sim, ADAPTIVE).run(120, busy_ratio=BUSY)) == []


def test_adaptive_splits_again_when_more_is_freed_after_its_interval(sim: SimGuest):
    driver = PolicyDriver(sim, ADAPTIVE)
    sim.partly_free_huge_pages(200 * MIB)
    driver.run(10, busy_ratio=BUSY)
    sim.partly_free_huge_pages(200 * MIB)
    later = splits(driver.run(60, busy_ratio=BUSY))
    assert len(later) == 1
    assert later[0][0] >= 30  # thp_split_interval_s after the first


def test_adaptive_backs_off_at_doubling_intervals_when_splits_free_nothing(sim: SimGuest):
    # pinned huge pages cannot be split: each split frees nothing
    sim.partly_free_huge_pages(200 * MIB, pinned=True)
    times = [t for t, _ in splits(PolicyDriver(sim, ADAPTIVE).run(500, busy_ratio=BUSY))]
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    assert gaps[:3] == [60.0, 120.0, 240.0]


def test_adaptive_does_not_split_under_memory_pressure(sim: SimGuest):
    sim.partly_free_huge_pages(400 * MIB)
    driver = PolicyDriver(sim, ADAPTIVE)
    driver.tick()
    sim.advance(2.0, BUSY, stall_us=200_000)
    assert not driver.tick().split_huge_pages


def test_the_wsl2_baselines_stay_faithful_and_never_split(sim: SimGuest):
    sim.partly_free_huge_pages(400 * MIB)
    for name in ("gradual", "dropcache"):
        log = PolicyDriver(sim, POLICIES[name]).run(60, busy_ratio=BUSY)
        assert splits(log) == []


# the daemon and the one-shot command


def test_the_daemon_splits_with_drop_caches_2_then_compacts_and_logs_it(sim, caplog):
    caplog.set_level(logging.INFO)
    sim.partly_free_huge_pages(400 * MIB)
    sim.set_cache(active=0, inactive=0, slab=0)  # nothing else to do
    make_agent(sim).run(duration_s=6)
    assert sim.writes[:2] == [(DROP_CACHES, "2"), (COMPACT, "1")]
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("split")]
    assert len(messages) == 1
    assert messages[0].startswith("split huge pages: held 400.0 MiB -> 0 B, free ")
    assert messages[0].endswith("why: 400.0 MiB held in partly freed huge pages")


def test_guest_reclaim_splits_before_it_reclaims_and_compacts(sim: SimGuest):
    sim.partly_free_huge_pages(300 * MIB)
    _fragment(sim, 100)
    report = oneshot.reclaim_once(sim.path, writer=sim.kernel_writer, sleep=lambda s: None)
    assert sim.writes[0] == (DROP_CACHES, "2")
    assert sim.writes[-1] == (COMPACT, "1")
    assert report.split is not None
    assert report.after.huge_pages.partly_freed_bytes == 0
    assert "held in partly freed huge pages: 300.0 MiB -> 0 B" in oneshot.render_text(report)
    document = json.loads(oneshot.render_json(report))
    assert document["split_huge_pages"] is True


def test_guest_reclaim_does_not_split_when_nothing_is_held(sim: SimGuest):
    report = oneshot.reclaim_once(sim.path, writer=sim.kernel_writer)
    assert (DROP_CACHES, "2") not in sim.writes
    assert report.split is None


def _fragment(sim: SimGuest, order0_pages: int) -> None:
    """Free memory mostly in order-0 pages, which free page reporting cannot return."""
    sim.root.write(
        "/proc/buddyinfo",
        f"Node 0, zone   Normal  {order0_pages}   2000    100      0      0      0      0      0"
        "      0      0     20 \n",
    )


def test_after_a_split_adaptive_compacts_again_soon_while_free_memory_stays_in_small_blocks(
    sim: SimGuest,
):
    sim.partly_free_huge_pages(400 * MIB)
    _fragment(sim, 50000)  # 195 MiB unreportable, as one pass can leave after a split
    driver = PolicyDriver(sim, ADAPTIVE)
    log = driver.run(16, busy_ratio=BUSY)
    (split_at,) = [t for t, d in log if d.split_huge_pages]
    compactions = [t - split_at for t, d in log if d.compact and t >= split_at]
    assert compactions == [0.0, 4.0, 8.0, 12.0]
    assert driver.state.compact_failures == 0  # those passes are not judged


def test_after_a_split_no_follow_up_compaction_once_free_memory_is_reportable(sim: SimGuest):
    sim.partly_free_huge_pages(400 * MIB)
    _fragment(sim, 100)
    log = PolicyDriver(sim, ADAPTIVE).run(16, busy_ratio=BUSY)
    assert [d.compact for _, d in log].count(True) == 1


def test_guest_reclaim_compacts_again_after_a_split_while_free_memory_stays_in_small_blocks(
    sim: SimGuest,
):
    sim.partly_free_huge_pages(300 * MIB)
    _fragment(sim, 50000)  # 195 MiB unreportable that compaction does not fix here
    pauses: list[float] = []
    oneshot.reclaim_once(sim.path, writer=sim.kernel_writer, sleep=pauses.append)
    assert [w for w in sim.writes if w[0] == COMPACT] == [(COMPACT, "1")] * 4
    assert pauses == [oneshot.SPLIT_FOLLOWUP_PAUSE_S] * 3


def test_guest_reclaim_compacts_once_when_free_memory_is_reportable(sim: SimGuest):
    sim.partly_free_huge_pages(300 * MIB)
    _fragment(sim, 100)
    oneshot.reclaim_once(sim.path, writer=sim.kernel_writer, sleep=lambda s: None)
    assert [w for w in sim.writes if w[0] == COMPACT] == [(COMPACT, "1")]
