from __future__ import annotations

import dataclasses

import pytest

from vmreclaim.guest.observe import observe

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
