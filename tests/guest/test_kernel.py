from __future__ import annotations

from vmreclaim.guest.observe.kernel import (
    parse_cgroup_mode,
    parse_release,
    read_cgroup_mode,
    read_reclaim_interface,
)

from . import kernel_text as k
from .fakeroot import FakeRoot


def test_release_keeps_the_text_and_the_version_numbers():
    release = parse_release(k.OSRELEASE_DEBIAN_6_1)
    assert release is not None
    assert (release.text, release.major, release.minor) == ("6.1.0-18-amd64", 6, 1)


def test_release_that_is_not_a_version_gives_none():
    assert parse_release("unknown\n") is None


def test_debian_12_mounts_cgroup2_at_sys_fs_cgroup():
    assert parse_cgroup_mode(k.MOUNTS_DEBIAN_12) == "unified"


def test_cgroup2_only_under_unified_with_v1_controllers_is_hybrid():
    assert parse_cgroup_mode(k.MOUNTS_HYBRID) == "hybrid"


def test_centos_7_has_cgroup_v1_only():
    assert parse_cgroup_mode(k.MOUNTS_CENTOS_7) == "legacy"


def test_without_a_mount_table_cgroup_controllers_means_unified(tmp_path):
    FakeRoot(tmp_path).write("/sys/fs/cgroup/cgroup.controllers", k.CGROUP_CONTROLLERS)
    assert read_cgroup_mode(tmp_path) == "unified"


def test_linux_6_1_has_memory_reclaim_but_no_swappiness_key(debian):
    interface = read_reclaim_interface(debian.path, parse_release(k.OSRELEASE_DEBIAN_6_1))
    assert interface.memory_reclaim
    assert not interface.swappiness_key


def test_linux_6_11_takes_the_swappiness_key(debian):
    interface = read_reclaim_interface(debian.path, parse_release(k.OSRELEASE_6_11))
    assert interface.swappiness_key


def test_linux_6_10_does_not_take_the_swappiness_key(debian):
    interface = read_reclaim_interface(debian.path, parse_release("6.10.14-200.fc40.x86_64"))
    assert not interface.swappiness_key


def test_cgroup2_without_memory_reclaim_offers_neither_reclaim_nor_key(tmp_path):
    root = FakeRoot(tmp_path)
    root.cgroup2(memory_reclaim=False)
    root.vm_sysctls()
    interface = read_reclaim_interface(tmp_path, parse_release(k.OSRELEASE_6_11))
    assert interface.cgroup_mode == "unified"
    assert not interface.memory_reclaim
    assert not interface.swappiness_key
    assert interface.drop_caches


def test_cgroup_v1_has_no_memory_reclaim(tmp_path):
    root = FakeRoot(tmp_path)
    root.write("/proc/self/mounts", k.MOUNTS_CENTOS_7)
    root.write("/sys/fs/cgroup/memory/memory.usage_in_bytes", "811802624\n")
    root.vm_sysctls()
    interface = read_reclaim_interface(tmp_path, parse_release(k.OSRELEASE_CENTOS_7))
    assert interface.cgroup_mode == "legacy"
    assert not interface.memory_reclaim


def test_reclaim_interface_reads_vm_swappiness_and_the_sysctls(tmp_path):
    FakeRoot(tmp_path).vm_sysctls(swappiness=0)
    interface = read_reclaim_interface(tmp_path, None)
    assert interface.vm_swappiness == 0
    assert interface.drop_caches
    assert interface.compact_memory


def test_kernel_without_compaction_has_no_compact_memory(tmp_path):
    root = FakeRoot(tmp_path)
    root.vm_sysctls()
    root.remove("/proc/sys/vm/compact_memory")
    assert not read_reclaim_interface(tmp_path, None).compact_memory
