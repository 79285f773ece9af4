from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from vmreclaim.guest.observe import _files, keep_tick_files_open, observe

from . import kernel_text as k
from .fakeroot import FakeRoot


def test_a_complete_guest_has_nothing_incomplete(debian):
    obs = observe(debian.path, lambda: 12.5)
    assert obs.incomplete == ()
    assert obs.is_complete()


def test_the_snapshot_is_stamped_by_the_given_clock(debian):
    assert observe(debian.path, lambda: 12.5).timestamp == 12.5


def test_the_snapshot_is_immutable(debian):
    obs = observe(debian.path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        obs.timestamp = 1.0  # type: ignore[misc]


def test_free_is_split_at_the_reporting_order(debian):
    obs = observe(debian.path)
    assert obs.free is not None
    assert obs.free.reporting_order == 9
    assert obs.free.reportable_bytes == 1320 * k.MIB


def test_page_size_scales_the_free_split(debian):
    small = observe(debian.path, page_size=4096).free
    large = observe(debian.path, page_size=16384).free
    assert small is not None
    assert large is not None
    assert large.reportable_bytes == 4 * small.reportable_bytes


def test_kernel_without_psi_is_incomplete_for_psi_only(debian):
    debian.remove("/proc/pressure/memory")
    debian.remove("/proc/pressure/io")
    obs = observe(debian.path)
    assert obs.incomplete == ("psi.memory", "psi.io")
    assert not obs.is_complete("psi.memory")
    assert obs.is_complete("meminfo", "cpu", "buddyinfo")


def test_a_missing_meminfo_key_makes_meminfo_incomplete(tmp_path):
    root = FakeRoot(tmp_path)
    root.write("/proc/meminfo", k.MEMINFO_3_13)
    obs = observe(tmp_path)
    assert "meminfo.MemAvailable" in obs.incomplete
    assert not obs.is_complete("meminfo")
    assert obs.memory.total_bytes == 2049988 * k.KIB


def test_an_empty_root_is_incomplete_everywhere_but_does_not_raise(tmp_path):
    obs = observe(tmp_path)
    for part in ("kernel", "meminfo", "vmstat", "cpu", "psi.memory", "psi.io", "buddyinfo"):
        assert part in obs.incomplete
    assert not obs.is_complete()
    assert obs.free is None
    assert obs.reclaimable_cache_bytes is None


def test_refaults_and_cpu_reach_the_snapshot(debian):
    obs = observe(debian.path)
    assert obs.vmstat.workingset_refault_file == 5211
    assert obs.cpu is not None
    assert obs.cpu.idle == 46828483
    assert obs.memory_pressure is not None


def test_kept_open_tick_files_are_read_afresh_each_time(debian):
    debian.remove("/proc/pressure/io")
    with keep_tick_files_open(debian.path):
        assert observe(debian.path).memory.free_bytes == 1503212 * 1024
        debian.write(
            "/proc/meminfo",
            k.MEMINFO_DEBIAN_6_1.replace("MemFree:         1503212 kB", "MemFree: 1000 kB"),
        )
        assert observe(debian.path).memory.free_bytes == 1000 * 1024
        # Absent when the block began: read the usual way, so it counts once it appears.
        assert observe(debian.path).io_pressure is None
        debian.write("/proc/pressure/io", k.PSI_IO_IDLE)
        assert observe(debian.path).io_pressure is not None
    assert _files._kept == {}


def test_a_kept_proc_file_shows_the_kernels_current_state() -> None:
    uptime = "/proc/uptime"
    with _files.keep_open(Path("/"), (uptime,)):
        assert Path(uptime) in _files._kept
        first = _files.read_text(Path("/"), uptime)
        time.sleep(0.02)
        second = _files.read_text(Path("/"), uptime)
    assert first is not None
    assert second is not None
    assert first != second
    assert _files._kept == {}
