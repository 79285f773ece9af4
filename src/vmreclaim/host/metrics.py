"""Prometheus exposition of the daemon's latest cycle.

A custom collector renders the last published `MetricsView` at scrape time, so a VM that is no
longer observed has no series at all: its metrics go away with it, with no stale gauges to
remove by hand. Binds to 127.0.0.1 unless the configuration says otherwise.

Names follow Prometheus conventions: counters end in `_total` and are typed counter, amounts are
`_bytes`, times `_seconds`, shares `_ratio` (0-1). The rules and the Grafana dashboard that
read them are in deploy/prometheus/ and docs/grafana/; tests/host/test_prometheus.py checks
every name they use against this module.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vmreclaim.errors import HostError
from vmreclaim.host.records import HostMemory, VmObservation

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry


@dataclass(frozen=True)
class MetricsView:
    host: HostMemory | None
    mode: str
    vms: tuple[VmObservation, ...]
    unreachable: int
    cycles: int
    max_stats_age_s: float = 3.0
    """Guest statistics older than this are stale (the policy's threshold)."""


GAUGE = "gauge"
COUNTER = "counter"

_VM_METRICS: tuple[tuple[str, str, str], ...] = (
    ("host_bytes", GAUGE, "Guest RAM resident on the host (RSS if the mapping is unknown)"),
    ("rss_bytes", GAUGE, "Resident set of the VM's process"),
    ("balloon_actual_bytes", GAUGE, "Guest size as the balloon sees it"),
    ("balloon_target_bytes", GAUGE, "Balloon target set by this daemon"),
    ("ram_bytes", GAUGE, "Configured RAM of the VM"),
    ("guest_available_bytes", GAUGE, "MemAvailable reported by the guest"),
    ("guest_free_bytes", GAUGE, "Free memory reported by the guest"),
    ("guest_cache_bytes", GAUGE, "Page cache reported by the guest"),
    ("guest_used_bytes", GAUGE, "Guest memory neither free nor cache"),
    ("guest_major_faults_total", COUNTER, "Major faults in the guest since it booted"),
    ("host_unused_bytes", GAUGE, "Memory the host holds that the guest does not use"),
    (
        "returned_bytes_total",
        COUNTER,
        "Memory the VM returned to the host since this daemon first saw its process",
    ),
    ("free_page_reporting", GAUGE, "1 when the balloon accepts free page reports"),
    ("guest_stats_age_seconds", GAUGE, "Seconds since the guest last reported its statistics"),
    (
        "guest_stats_stale",
        GAUGE,
        "1 when the guest's statistics are missing or older than the staleness threshold: "
        "the VM is neither shrunk nor judged in need",
    ),
    (
        "agent_reclaimable_bytes",
        GAUGE,
        "What the guest agent says could come back: its reclaimable cache above its floor "
        "(the guest's word, unverified)",
    ),
    ("agent_floor_bytes", GAUGE, "Reclaimable cache the guest agent's policy keeps"),
    (
        "agent_report_age_seconds",
        GAUGE,
        "Seconds since the guest agent's latest valid report arrived",
    ),
    ("agent_connected", GAUGE, "1 while the daemon holds the agent channel's socket"),
    ("agent_reports_total", COUNTER, "Valid reports received from the guest agent"),
)
"""Per-VM metrics, each named `vmreclaim_vm_<name>` with the labels `vm` and `address`.
Counters end in `_total` and start again from 0 with a new VM process (a restarted guest, a
new QEMU), which Prometheus' rate() and increase() treat as a counter reset."""

VM_LABELS = ("vm", "address")
DROPPED = "agent_messages_dropped_total"
REQUESTS = "agent_requests_total"


def vm_values(vm: VmObservation, max_stats_age_s: float) -> dict[str, float | None]:
    sample = vm.sample
    guest = sample.guest
    balloon = sample.balloon
    reporting = balloon.free_page_reporting if balloon else None
    return {
        "host_bytes": sample.host_bytes,
        "rss_bytes": sample.footprint.rss_bytes if sample.footprint else None,
        "balloon_actual_bytes": balloon.actual_bytes if balloon else None,
        "balloon_target_bytes": vm.balloon_target_bytes,
        "ram_bytes": balloon.ram_bytes if balloon else None,
        "guest_available_bytes": guest.available_bytes if guest else None,
        "guest_free_bytes": guest.free_bytes if guest else None,
        "guest_cache_bytes": guest.cache_bytes if guest else None,
        "guest_used_bytes": guest.used_bytes if guest else None,
        "guest_major_faults_total": guest.major_faults if guest else None,
        "host_unused_bytes": vm.host_unused_bytes,
        "returned_bytes_total": vm.returned_bytes,
        "free_page_reporting": None if reporting is None else float(reporting),
        "guest_stats_age_seconds": vm.stats_age_s,
        "guest_stats_stale": float(vm.stats_stale(max_stats_age_s)) if balloon else None,
        **_agent_values(vm),
    }


def _agent_values(vm: VmObservation) -> dict[str, float | None]:
    agent = vm.agent
    report = agent.report if agent else None
    return {
        "agent_reclaimable_bytes": report.reclaimable_bytes if report else None,
        "agent_floor_bytes": report.floor_bytes if report else None,
        "agent_report_age_seconds": agent.report_age_s if agent else None,
        "agent_connected": float(agent.connected) if agent else None,
        "agent_reports_total": agent.reports if agent else None,
    }


def _family(name: str, kind: str, text: str, labels: Sequence[str] = ()) -> Any:
    """A metric family of `kind`; a counter's `_total` is added back by prometheus_client."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    if kind == COUNTER:
        return CounterMetricFamily(name, text, labels=labels)
    return GaugeMetricFamily(name, text, labels=labels)


def _host_values(view: MetricsView) -> tuple[tuple[str, str, str, float | None], ...]:
    host = view.host
    pressure = host.psi_some_avg10 if host else None
    return (
        (
            "host_available_bytes",
            GAUGE,
            "Host MemAvailable",
            host.available_bytes if host else None,
        ),
        (
            "host_memory_pressure_some_avg10_ratio",
            GAUGE,
            "Share of the last 10 s in which some task stalled on memory (PSI some avg10, 0-1)",
            None if pressure is None else pressure / 100,
        ),
        ("vms", GAUGE, "VMs answering", len(view.vms)),
        ("vms_unreachable", GAUGE, "VM sockets that do not answer", view.unreachable),
        ("cycles_total", COUNTER, "Control cycles run", view.cycles),
    )


class _Collector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._view = MetricsView(None, "no-data", (), 0, 0)

    def publish(self, view: MetricsView) -> None:
        with self._lock:
            self._view = view

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        with self._lock:
            view = self._view
        families = {
            name: _family(f"vmreclaim_vm_{name}", kind, text, VM_LABELS)
            for name, kind, text in _VM_METRICS
        }
        for vm in view.vms:
            for name, value in vm_values(vm, view.max_stats_age_s).items():
                if value is not None:
                    families[name].add_metric([vm.sample.name, vm.sample.address], value)
        yield from families.values()
        yield _dropped(view.vms)
        yield _requests(view.vms)
        for name, kind, text, value in _host_values(view):
            if value is not None:
                family = _family(f"vmreclaim_{name}", kind, text)
                family.add_metric([], float(value))
                yield family
        mode = GaugeMetricFamily("vmreclaim_policy_mode", "Current policy mode", labels=["mode"])
        mode.add_metric([view.mode], 1.0)
        yield mode


def _dropped(vms: Sequence[VmObservation]) -> Any:
    return _agent_counts(
        DROPPED,
        "Messages from the guest agent's channel dropped, by reason: too_long (over 4 KiB), "
        "not_json, invalid (unknown type or version, a key of the wrong type or range), "
        "rate_limited",
        "reason",
        vms,
        lambda agent: agent.dropped,
    )


def _requests(vms: Sequence[VmObservation]) -> Any:
    return _agent_counts(
        REQUESTS,
        "Requests to the guest agent to release cold cache that ended, by result: released "
        "(the agent said it did), refused (it said why, or released nothing), expired (no "
        "answer by the deadline)",
        "result",
        vms,
        lambda agent: agent.requests,
    )


def _agent_counts(
    name: str,
    help_text: str,
    label: str,
    vms: Sequence[VmObservation],
    counts: Callable[[Any], Iterable[tuple[str, int]]],
) -> Any:
    """A per-VM counter of the agent channel, one series per value of `label`."""
    family = _family(f"vmreclaim_vm_{name}", COUNTER, help_text, (*VM_LABELS, label))
    for vm in vms:
        if vm.agent is not None:
            for value, count in counts(vm.agent):
                family.add_metric([vm.sample.name, vm.sample.address, value], float(count))
    return family


class MetricsServer:
    """The HTTP endpoint, running on its own thread until `close()`."""

    def __init__(self, address: str, port: int) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        self.collector = _Collector()
        registry: CollectorRegistry = CollectorRegistry(auto_describe=False)
        registry.register(self.collector)
        try:
            self._server, self._thread = start_http_server(port, address, registry=registry)
        except OSError as err:
            raise HostError(
                f"cannot serve metrics on {address}:{port}: {err.strerror}",
                hint="choose another [metrics] port, or port = 0 to turn metrics off",
            ) from err
        self.port = int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
