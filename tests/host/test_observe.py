"""Host readers on verbatim kernel text, the history of a VM, and the metrics it exposes."""

from __future__ import annotations

from pathlib import Path

from vmreclaim.host.backends.process import FootprintSampler
from vmreclaim.host.history import track
from vmreclaim.host.hostmem import read_host_memory
from vmreclaim.host.metrics import MetricsView, _Collector
from vmreclaim.host.records import VmSample
from vmreclaim.qemu.footprint import Footprint

MEMINFO = """\
MemTotal:       24683868 kB
MemFree:        23226284 kB
MemAvailable:   24044160 kB
Buffers:           55072 kB
Cached:           995060 kB
"""
PRESSURE = """\
some avg10=1.25 avg60=0.50 avg300=0.10 total=123456
full avg10=0.75 avg60=0.20 avg300=0.05 total=65432
"""


def test_host_memory_reads_available_and_pressure(tmp_path: Path) -> None:
    (tmp_path / "pressure").mkdir()
    (tmp_path / "meminfo").write_text(MEMINFO)
    (tmp_path / "pressure" / "memory").write_text(PRESSURE)
    host = read_host_memory(tmp_path)
    assert host is not None
    assert host.available_bytes == 24044160 * 1024
    assert host.psi_some_avg10 == 1.25
    assert host.psi_full_avg10 == 0.75


def test_host_memory_without_psi_has_no_pressure(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text(MEMINFO)
    host = read_host_memory(tmp_path)
    assert host is not None
    assert host.psi_some_avg10 is None


def test_host_memory_without_memavailable_is_unknown(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemTotal: 1000 kB\n")
    assert read_host_memory(tmp_path) is None


def sample(host_bytes: int, pid: int = 7) -> VmSample:
    return VmSample("vm", "/run/vm.qmp", pid, Footprint(0.0, host_bytes, host_bytes), None, None)


def test_returned_memory_adds_up_every_drop_since_first_seen() -> None:
    history = None
    for host_bytes in (1000, 1500, 900, 1200, 700):
        history, observation = track(history, sample(host_bytes), 5.0)
    assert observation.returned_bytes == 600 + 500
    assert observation.trend == (1000, 1500, 900, 1200, 700)


def test_a_restarted_vm_starts_a_new_history() -> None:
    history, _ = track(None, sample(1000), 1.0)
    history, _ = track(history, sample(500), 2.0)
    history, observation = track(history, sample(300, pid=8), 3.0)
    assert observation.returned_bytes == 0
    assert observation.first_seen == 3.0


def exact_then_between(tmp_path: Path, statm_before: str, statm_after: str) -> list[Footprint]:
    """An exact reading (400 MiB resident, 300 MiB of it guest RAM), then one from statm."""
    pid_dir = tmp_path / "42"
    pid_dir.mkdir()
    (pid_dir / "status").write_text("VmRSS:\t  409600 kB\n")
    (pid_dir / "smaps").write_text(
        "7f0000000000-7f0040000000 rw-p 00000000 00:00 0 \nSize: 1048576 kB\nRss: 307200 kB\n"
    )
    (pid_dir / "statm").write_text(statm_before)
    now = [0.0]
    sampler = FootprintSampler(42, 1 << 30, tmp_path, exact_every=300, clock=lambda: now[0])
    exact = sampler.sample()
    (pid_dir / "statm").write_text(statm_after)
    now[0] = 1.0
    return [exact, sampler.sample()]


def test_footprint_between_exact_readings_moves_with_the_anonymous_rss(tmp_path: Path) -> None:
    # Pages of 4 KiB: 102400 resident = 400 MiB, 2560 shared = 10 MiB; then 200 MiB resident.
    exact, between = exact_then_between(
        tmp_path, "900000 102400 2560 1 0 80000 0\n", "900000 51200 2560 1 0 80000 0\n"
    )
    assert exact.guest_ram_bytes == 300 << 20
    assert between.rss_bytes == 200 << 20
    assert between.guest_ram_bytes == 100 << 20


def test_file_pages_leaving_the_vmm_do_not_move_its_guest_ram(tmp_path: Path) -> None:
    # The host evicted 8 MiB of the VMM's libraries: resident and shared both fall by 2048 pages.
    _exact, between = exact_then_between(
        tmp_path, "900000 102400 2560 1 0 80000 0\n", "900000 100352 512 1 0 80000 0\n"
    )
    assert between.rss_bytes == 392 << 20
    assert between.guest_ram_bytes == 300 << 20


def test_a_vm_no_longer_observed_has_no_metrics() -> None:
    collector = _Collector()
    _, observation = track(None, sample(1000), 0.0)
    collector.publish(MetricsView(None, "hold", (observation,), 0, 1))
    before = [s for family in collector.collect() for s in family.samples if s.labels.get("vm")]
    collector.publish(MetricsView(None, "hold", (), 1, 2))
    after = [s for family in collector.collect() for s in family.samples if s.labels.get("vm")]
    assert before
    assert after == []


def test_counters_are_exported_as_counters_ending_in_total() -> None:
    collector = _Collector()
    _, observation = track(None, sample(1000), 0.0)
    collector.publish(MetricsView(None, "hold", (observation,), 0, 5))
    kinds = {point.name: family.type for family in collector.collect() for point in family.samples}
    assert kinds["vmreclaim_vm_returned_bytes_total"] == "counter"
    assert kinds["vmreclaim_cycles_total"] == "counter"
    assert all(kind == "gauge" for name, kind in kinds.items() if not name.endswith("_total"))
