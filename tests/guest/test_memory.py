from __future__ import annotations

from vmreclaim.guest.observe.memory import parse_meminfo, parse_vmstat, read_meminfo

from . import kernel_text as k
from .fakeroot import FakeRoot


def test_meminfo_converts_kilobytes_to_bytes():
    info = parse_meminfo(k.MEMINFO_DEBIAN_6_1)
    assert info.total_bytes == 4012148 * k.KIB
    assert info.available_bytes == 2191304 * k.KIB
    assert info.anon_bytes == 75380 * k.KIB
    assert info.swap_total_bytes == 0


def test_meminfo_of_a_6_1_kernel_lacks_nothing():
    assert parse_meminfo(k.MEMINFO_DEBIAN_6_1).missing == ()


def test_reclaimable_cache_is_file_lrus_plus_reclaimable_slab():
    info = parse_meminfo(k.MEMINFO_DEBIAN_6_1)
    assert info.reclaimable_cache_bytes == (181180 + 528476 + 52180) * k.KIB


def test_meminfo_before_3_14_names_memavailable_missing():
    info = parse_meminfo(k.MEMINFO_3_13)
    assert info.available_bytes is None
    assert info.missing == ("MemAvailable",)
    assert info.reclaimable_cache_bytes == (202652 + 229352 + 33664) * k.KIB


def test_meminfo_without_sreclaimable_has_no_reclaimable_cache():
    text = "".join(
        line + "\n" for line in k.MEMINFO_DEBIAN_6_1.splitlines() if "SReclaimable" not in line
    )
    info = parse_meminfo(text)
    assert info.reclaimable_cache_bytes is None
    assert "SReclaimable" in info.missing


def test_swap_active_follows_swap_total():
    assert not parse_meminfo(k.MEMINFO_DEBIAN_6_1).swap_active
    assert parse_meminfo(k.MEMINFO_DEBIAN_6_1_SWAP).swap_active


def test_read_meminfo_returns_none_when_the_file_is_absent(tmp_path):
    assert read_meminfo(tmp_path) is None


def test_read_meminfo_reads_under_the_given_root(tmp_path):
    FakeRoot(tmp_path).write("/proc/meminfo", k.MEMINFO_DEBIAN_6_1)
    info = read_meminfo(tmp_path)
    assert info is not None
    assert info.free_bytes == 1503212 * k.KIB


def test_vmstat_reads_file_refaults_and_major_faults():
    stat = parse_vmstat(k.VMSTAT_DEBIAN_6_1)
    assert stat.workingset_refault_file == 5211
    assert stat.workingset_activate_file == 1034
    assert stat.pgmajfault == 2281
    assert stat.missing == ()


def test_vmstat_before_5_9_takes_file_refaults_from_the_unsuffixed_counter():
    stat = parse_vmstat(k.VMSTAT_5_4_EXCERPT)
    assert stat.workingset_refault_file == 7321
    assert stat.workingset_activate_file == 2210


def test_vmstat_before_5_9_names_the_anon_refault_counter_missing():
    stat = parse_vmstat(k.VMSTAT_5_4_EXCERPT)
    assert stat.workingset_refault_anon is None
    assert stat.missing == ("workingset_refault_anon",)
