"""The cooperative benchmark's pieces that need no guest: the host whose MemAvailable follows
the guests' footprints, the daemon's configuration per arm, and the summary table
(bench/cooperative.py; the single-guest asking runs on a real VM in tests/vm/test_agent_asks.py)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from types import SimpleNamespace

from vmreclaim.bench import cooperative
from vmreclaim.bench.cooperative import KEEP_AVAILABLE, SHORT, FeedbackHost, RunResult, summary
from vmreclaim.host.config import load_config

from .daemon_process import wait_until

MIB = 1 << 20


class ShrinkingGuests:
    """Three guests' footprints, in bytes, that the test lowers."""

    def __init__(self) -> None:
        self.total = 3000 * MIB

    def footprint(self) -> int:
        return self.total


def available(host: FeedbackHost) -> int:
    text = (host.proc.directory / "meminfo").read_text()
    match = re.search(r"^MemAvailable:\s+(\d+) kB$", text, re.MULTILINE)
    assert match is not None
    return int(match.group(1)) * 1024


def test_the_host_is_short_until_the_footprints_drop_by_the_shortfall(tmp_path: Path) -> None:
    guests = ShrinkingGuests()
    with FeedbackHost(tmp_path / "proc", guests) as host:  # type: ignore[arg-type]
        assert available(host) > KEEP_AVAILABLE  # calm until told
        host.short()
        assert wait_until(lambda: available(host) == KEEP_AVAILABLE - SHORT, 5, interval=0.05)
        # A balloon inflated over memory the host did not back: the footprint did not move.
        assert host.freed_after(1) is None
        guests.total -= SHORT // 2
        assert wait_until(lambda: available(host) == KEEP_AVAILABLE - SHORT // 2, 5, interval=0.05)
        guests.total -= SHORT // 2
        assert wait_until(lambda: host.freed_after(SHORT) is not None, 5, interval=0.05)
    assert available(host) == KEEP_AVAILABLE
    freed_half = host.freed_after(SHORT // 2)
    freed_all = host.freed_after(SHORT)
    assert freed_half is not None
    assert freed_all is not None
    assert 0 < freed_half <= freed_all


def test_each_arm_runs_the_real_daemon_with_asking_on_or_off(tmp_path: Path) -> None:
    vms = [
        SimpleNamespace(qmp_socket=tmp_path / f"{name}/qmp.sock", agent_socket=tmp_path / name)
        for name in ("busy", "cold-1", "cold-2")
    ]
    guests = SimpleNamespace(all=vms)
    host = SimpleNamespace(proc=SimpleNamespace(directory=tmp_path / "proc"))
    for arm, asks in (("balloon-only", False), ("cooperative", True)):
        path = cooperative.write_config(tmp_path, guests, host, arm)  # type: ignore[arg-type]
        config = load_config(path)
        assert config.policy.ask_agents is asks
        assert config.policy.keep_available_bytes == KEEP_AVAILABLE
        assert len(config.qmp) == 3
        assert len(config.agent) == 3


def run(arm: str, freed: float | None, refaults: int, kills: int = 0) -> RunResult:
    return RunResult(
        arm=arm,
        repeat=0,
        freed_s=freed,
        freed_90_s=freed,
        freed_bytes=SHORT,
        hot_refault_bytes=refaults,
        calm_refault_bytes=0,
        oom_kills=kills,
        median_pass_s=1.0,
        asks=2 if arm == "cooperative" else 0,
        balloon_moves=0 if arm == "cooperative" else 30,
    )


def test_the_summary_has_a_row_per_arm_with_median_spread_and_misses() -> None:
    table = summary(
        [
            run("balloon-only", 30.0, 900 * MIB),
            run("cooperative", 5.0, 0),
            run("balloon-only", None, 1000 * MIB, kills=1),
            run("cooperative", 7.0, 2 * MIB),
            run("balloon-only", 40.0, 1100 * MIB),
            run("cooperative", 6.0, 0),
        ]
    )
    balloon = next(line for line in table.splitlines() if line.startswith("| balloon-only"))
    together = next(line for line in table.splitlines() if line.startswith("| cooperative"))
    assert "35.0 s (30.0 - 40.0), never in 1" in balloon
    assert "1000.0 (900.0 - 1100.0)" in balloon
    assert "| 1 |" in balloon  # the OOM kill
    assert "6.0 s (5.0 - 7.0)" in together
    assert "0.0 (0.0 - 2.0)" in together


def test_the_plot_draws_each_run(tmp_path: Path) -> None:
    runs = [
        dataclasses.replace(run("balloon-only", 30.0, 0), freed=((0.0, 0), (30.0, SHORT))),
        dataclasses.replace(run("cooperative", 6.0, 0), freed=((0.0, 0), (6.0, SHORT))),
    ]
    cooperative.plot(runs, tmp_path / "cooperative.png")
    assert (tmp_path / "cooperative.png").read_bytes().startswith(b"\x89PNG")
