"""vmreclaim in a real Prometheus: it scrapes `host run` over paused QEMUs and finds the per-VM
series with their labels and types; the shipped rules pass promtool's checks and unit tests
and load in that Prometheus; every metric the rules and the Grafana dashboard name exists."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from vmreclaim.agent_protocol import AgentReport
from vmreclaim.bench.polling_cost import paused_qemus
from vmreclaim.errors import MissingDependencyError
from vmreclaim.guest.textfile import GuestMetrics
from vmreclaim.host.history import track
from vmreclaim.host.metrics import MetricsView, _Collector
from vmreclaim.host.records import AgentStatus, BalloonState, GuestStats, HostMemory, VmSample
from vmreclaim.lab.qemu_command import find_qemu
from vmreclaim.qemu.footprint import Footprint

from .daemon_process import DaemonProcess, free_port, host_daemon
from .prometheus_server import (
    NOT_INSTALLED,
    PROMETHEUS,
    PROMTOOL,
    Prometheus,
    prometheus,
)

ROOT = Path(__file__).parents[2]
RULES = ROOT / "deploy" / "prometheus" / "vmreclaim-rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "vmreclaim-rules.test.yml"
DASHBOARD = ROOT / "docs" / "grafana" / "vmreclaim.json"
MIB = 1 << 20

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason=NOT_INSTALLED)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=RULES.parent
    )


@needs_promtool
def test_the_rules_pass_promtool_check() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@needs_promtool
def test_the_rules_pass_their_unit_tests() -> None:
    done = promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr


# -- every name the rules and the dashboard use exists -------------------------------------


def exporter_names() -> set[str]:
    """Every sample name `host run` exports, from a view in which every value is known."""
    stats = GuestStats(1.0, 1024 * MIB, 300 * MIB, 600 * MIB, 200 * MIB, 5, 100)
    footprint = Footprint(0.0, 900 * MIB, 800 * MIB)
    balloon = BalloonState(1024 * MIB, 1000 * MIB, True)
    sample = VmSample("db", "/run/db.qmp", 7, footprint, balloon, stats)
    _, observation = track(None, sample, 2.0)
    report = AgentReport(1, "0.1.0", "adaptive", 2.0, MIB, 2 * MIB, MIB, 0, "none", None)
    agent = AgentStatus(
        "/run/db.agent", True, report, 1.0, 1, (("too_long", 0),), requests=(("released", 1),)
    )
    observation = dataclasses.replace(observation, balloon_target_bytes=1000 * MIB, agent=agent)
    host = HostMemory(8 << 30, 4 << 30, 1.0, 0.5)
    collector = _Collector()
    collector.publish(MetricsView(host, "hold", (observation,), 0, 2))
    families = list(collector.collect())
    assert all(family.samples for family in families), "the view leaves a family empty"
    return {point.name for family in families for point in family.samples}


def guest_names() -> set[str]:
    """Every sample name the guest agent's textfile holds once each value is known."""
    metrics = GuestMetrics(
        "adaptive", ticks=1, last_action_at={"reclaim": 1.0}, cache_returned_bytes=1,
        floor_bytes=1, refaulted_bytes=1, reclaimable_cache_bytes=1, unreportable_free_bytes=1,
        last_tick_at=1.0, cpu_seconds={"observing": 0.1},
    )  # fmt: skip
    return {
        point.name
        for family in text_string_to_metric_families(metrics.render())
        for point in family.samples
    }


def recorded_names() -> set[str]:
    return set(re.findall(r"^\s*- record: (\S+)$", RULES.read_text(), re.MULTILINE))


def referenced_names(expression: str) -> set[str]:
    """The vmreclaim series a PromQL expression reads: its own metrics and recorded ones."""
    names = re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expression)
    return {name for name in names if name.startswith("vmreclaim_") or ":vmreclaim_" in name}


def rule_expressions() -> list[str]:
    """Every `expr` of the rules file, on one line or folded (`expr: >` and the lines indented
    under it)."""
    expressions = []
    lines = RULES.read_text().splitlines()
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped.startswith("expr:"):
            continue
        rest = stripped.removeprefix("expr:").strip()
        if rest not in (">", "|"):
            expressions.append(rest)
            continue
        indent = len(line) - len(line.lstrip())
        folded = []
        for following in lines[index + 1 :]:
            if len(following) - len(following.lstrip()) <= indent:
                break
            folded.append(following.strip())
        expressions.append(" ".join(folded))
    return expressions


def dashboard_expressions(node: object) -> Iterator[str]:
    """Every `expr` of the dashboard's panels and the queries of its variables."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            else:
                yield from dashboard_expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_expressions(item)


def test_the_exporter_knows_every_name_these_tests_check_against() -> None:
    names = exporter_names()
    assert "vmreclaim_vm_returned_bytes_total" in names
    assert "vmreclaim_vm_returned_bytes" not in names
    assert "vmreclaim_guest_last_tick_timestamp_seconds" in guest_names()
    assert "vm:vmreclaim_guest_need_bytes" in recorded_names()
    assert referenced_names("rate(vmreclaim_vm_x_total[5m]) - vm:vmreclaim_y") == {
        "vmreclaim_vm_x_total",
        "vm:vmreclaim_y",
    }


def test_every_metric_the_rules_read_exists() -> None:
    known = exporter_names() | guest_names() | recorded_names()
    expressions = rule_expressions()
    assert len(expressions) == 10  # 4 recording rules, 6 alerts
    used = set().union(*(referenced_names(expression) for expression in expressions))
    assert used - known == set()
    assert "vmreclaim_guest_last_tick_timestamp_seconds" in used


def test_the_dashboard_is_json_and_every_metric_it_plots_exists() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "vmreclaim"
    expressions = list(dashboard_expressions(dashboard["panels"]))
    expressions += list(dashboard_expressions(dashboard["templating"]))
    used = set().union(*(referenced_names(expression) for expression in expressions))
    known = exporter_names() | guest_names() | recorded_names()
    assert used - known == set()
    # What the issue asks it to plot: footprint against need, returned memory, balloons.
    for name in (
        "vmreclaim_vm_host_bytes",
        "vmreclaim_vm_guest_available_bytes",
        "vmreclaim_vm_returned_bytes_total",
        "vmreclaim_vm_balloon_actual_bytes",
        "vmreclaim_vm_balloon_target_bytes",
    ):
        assert name in used


# -- a real Prometheus scrapes `host run` -----------------------------------------------------


@dataclasses.dataclass
class Scraped:
    """`host run` over two paused QEMUs (one with free page reporting, one without), and a
    Prometheus scraping it every second with the shipped rules."""

    reporting: Path
    silent: Path
    daemon: DaemonProcess
    instance: str
    """The daemon's metrics endpoint, host:port: the `instance` label."""
    prometheus: Prometheus


@pytest.fixture
def scraped(tmp_path: Path) -> Iterator[Scraped]:
    if PROMETHEUS is None:
        pytest.skip(NOT_INSTALLED)
    try:
        find_qemu()
    except MissingDependencyError as err:
        pytest.skip(err.message)
    port = free_port()
    (tmp_path / "prometheus").mkdir()
    with contextlib.ExitStack() as owned:  # closed in reverse: Prometheus, daemon, QEMUs
        (reporting,) = owned.enter_context(paused_qemus(1))
        (silent,) = owned.enter_context(paused_qemus(1, reporting=False))
        config = tmp_path / "host.toml"
        socket = tmp_path / "run" / "host.sock"
        config.write_text(
            f'qmp = ["{reporting}", "{silent}"]\nsocket = "{socket}"\n'
            f'[metrics]\nport = {port}\n[host]\nkeep_available = "1G"\n'
        )
        instance = f"127.0.0.1:{port}"
        daemon = owned.enter_context(host_daemon(config, socket))
        server = owned.enter_context(prometheus(tmp_path / "prometheus", [instance], [RULES]))
        yield Scraped(reporting, silent, daemon, instance, server)


def test_a_real_prometheus_scrapes_the_per_vm_series(scraped: Scraped) -> None:
    server = scraped.prometheus
    up = server.wait_for('up{job="vmreclaim"} == 1')
    assert up[0]["metric"]["instance"] == scraped.instance
    series = server.wait_for('count by (address) ({__name__=~"vmreclaim_vm_.+"})')
    addresses = {entry["metric"]["address"] for entry in series}
    assert addresses == {str(scraped.reporting), str(scraped.silent)}
    found = server.query('{__name__=~"vmreclaim_vm_.+"}')
    names = {entry["metric"]["__name__"] for entry in found}
    # A paused guest never reports statistics: what the host and the balloon know, no more.
    assert {
        "vmreclaim_vm_host_bytes",
        "vmreclaim_vm_rss_bytes",
        "vmreclaim_vm_ram_bytes",
        "vmreclaim_vm_balloon_actual_bytes",
        "vmreclaim_vm_free_page_reporting",
        "vmreclaim_vm_guest_stats_stale",
        "vmreclaim_vm_returned_bytes_total",
    } <= names
    assert {name for name in names if name.startswith("vmreclaim_vm_guest_")} == {
        "vmreclaim_vm_guest_stats_stale"
    }
    for entry in found:
        labels = entry["metric"]
        assert set(labels) == {"__name__", "job", "instance", "vm", "address"}, labels
        assert (labels["job"], labels["instance"]) == ("vmreclaim", scraped.instance)
        assert labels["vm"] == "bench000"  # QEMU's -name
    values = {
        (entry["metric"]["__name__"], entry["metric"]["address"]): float(entry["value"][1])
        for entry in found
    }
    assert values[("vmreclaim_vm_ram_bytes", str(scraped.reporting))] == 64 * MIB
    assert values[("vmreclaim_vm_free_page_reporting", str(scraped.reporting))] == 1
    assert values[("vmreclaim_vm_free_page_reporting", str(scraped.silent))] == 0
    assert values[("vmreclaim_vm_guest_stats_stale", str(scraped.silent))] == 1


def test_prometheus_takes_the_counters_for_counters(scraped: Scraped) -> None:
    server = scraped.prometheus
    server.wait_for("rate(vmreclaim_cycles_total[5s]) > 0")
    metadata = server.api("metadata")
    # Prometheus asks for OpenMetrics, which names a counter's family without `_total`; its
    # samples keep it (the rate above is of vmreclaim_cycles_total).
    for family in ("vmreclaim_cycles", "vmreclaim_vm_returned_bytes"):
        assert [entry["type"] for entry in metadata.get(family, [])] == ["counter"], metadata
    assert [entry["type"] for entry in metadata["vmreclaim_vm_host_bytes"]] == ["gauge"]
    assert server.query("vmreclaim_vm_returned_bytes_total")


def test_the_shipped_alerts_match_the_real_series(scraped: Scraped) -> None:
    server = scraped.prometheus
    groups = server.api("rules")["groups"]
    assert {group["name"] for group in groups} == {"vmreclaim-recording", "vmreclaim-alerts"}
    # Pending, not firing: each waits its `for`, but the expressions match the real series.
    off = server.wait_for('ALERTS{alertname="VmreclaimFreePageReportingOff"}')
    assert [entry["metric"]["address"] for entry in off] == [str(scraped.silent)]
    stale = server.wait_for('ALERTS{alertname="VmreclaimVmStatsStale"}')
    addresses = {entry["metric"]["address"] for entry in stale}
    assert addresses == {str(scraped.reporting), str(scraped.silent)}
    assert {entry["metric"]["alertstate"] for entry in off + stale} == {"pending"}
    # Every rule evaluates without error against what this Prometheus holds.
    unhealthy = [
        (rule["name"], rule.get("lastError"))
        for group in server.api("rules")["groups"]
        for rule in group["rules"]
        if rule["health"] == "err"
    ]
    assert unhealthy == []
    # The daemon gone, its scrapes fail: the daemon-down alert is pending.
    assert scraped.daemon.stop(signal.SIGTERM)[0] == 0, scraped.daemon.log_text()
    down = server.wait_for('ALERTS{alertname="VmreclaimDaemonDown"}')
    assert down[0]["metric"]["instance"] == scraped.instance
