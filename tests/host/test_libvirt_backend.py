"""The libvirt backend's pure parts: the domain XML, memory statistics, addresses, pid files."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from vmreclaim.host.backends.libvirt import (
    balloon_reporting,
    domain_address,
    enable_reporting_xml,
    guest_stats,
    pid_file,
    qemu_pid,
    split_address,
    stats_period,
)

DOMAIN = """<domain type='kvm'>
  <name>db</name>
  <memory unit='KiB'>2097152</memory>
  <devices>
    <disk type='file' device='disk'><source file='/var/lib/libvirt/images/db.qcow2'/></disk>
    {balloon}
  </devices>
</domain>"""


def test_reporting_is_read_from_the_memballoon_element() -> None:
    on = "<memballoon model='virtio' freePageReporting='on'/>"
    off = "<memballoon model='virtio' autodeflate='on'/>"
    assert balloon_reporting(DOMAIN.format(balloon=on)) is True
    assert balloon_reporting(DOMAIN.format(balloon=off)) is False
    assert balloon_reporting(DOMAIN.format(balloon="<memballoon model='none'/>")) is None
    assert balloon_reporting(DOMAIN.format(balloon="")) is None


def test_the_statistics_period_is_read_from_the_memballoon_element() -> None:
    with_stats = "<memballoon model='virtio'><stats period='5'/></memballoon>"
    assert stats_period(DOMAIN.format(balloon=with_stats)) == 5
    assert stats_period(DOMAIN.format(balloon="<memballoon model='virtio'/>")) == 0
    assert stats_period(DOMAIN.format(balloon="")) == 0
    odd = "<memballoon model='virtio'><stats period='soon'/></memballoon>"
    assert stats_period(DOMAIN.format(balloon=odd)) == 0


def test_enabling_sets_the_attribute_and_keeps_the_rest() -> None:
    edit = enable_reporting_xml(
        DOMAIN.format(balloon="<memballoon model='virtio'><stats period='5'/></memballoon>"),
        deflate_on_oom=False,
    )
    assert edit.changed
    assert edit.notes == ()
    balloon = ET.fromstring(edit.xml).find("./devices/memballoon")
    assert balloon is not None
    assert balloon.get("freePageReporting") == "on"
    assert balloon.find("stats") is not None
    assert ET.fromstring(edit.xml).find("./devices/disk") is not None


def test_enabling_adds_a_balloon_or_replaces_model_none() -> None:
    added = enable_reporting_xml(DOMAIN.format(balloon=""), deflate_on_oom=False)
    assert added.notes == ("added a virtio memballoon device",)
    assert balloon_reporting(added.xml) is True
    replaced = enable_reporting_xml(DOMAIN.format(balloon="<memballoon model='none'/>"))
    assert "from 'none' to 'virtio'" in replaced.notes[0]
    assert balloon_reporting(replaced.xml) is True


def test_enabling_twice_changes_nothing() -> None:
    xml = DOMAIN.format(balloon="<memballoon model='virtio' freePageReporting='on'/>")
    assert enable_reporting_xml(xml, deflate_on_oom=False).changed is False
    once = enable_reporting_xml(xml, agent_channel="/run/vms/db.agent")
    assert once.changed
    assert enable_reporting_xml(once.xml, agent_channel="/run/vms/db.agent").changed is False


def element(root: ET.Element, path: str) -> ET.Element:
    found = root.find(path)
    assert found is not None, path
    return found


def test_enabling_sets_autodeflate_as_launch_options_prints_it() -> None:
    xml = DOMAIN.format(balloon="<memballoon model='virtio' freePageReporting='on'/>")
    edit = enable_reporting_xml(xml)
    assert edit.changed
    assert "autodeflate='on'" in edit.notes[0]
    balloon = ET.fromstring(edit.xml).find("./devices/memballoon")
    assert balloon is not None
    assert balloon.get("autodeflate") == "on"
    # --no-deflate-on-oom leaves an operator's autodeflate='off' as it is
    off = DOMAIN.format(balloon="<memballoon model='virtio' autodeflate='off'/>")
    kept = ET.fromstring(enable_reporting_xml(off, deflate_on_oom=False).xml)
    assert element(kept, "./devices/memballoon").get("autodeflate") == "off"


def test_enabling_adds_the_agents_channel_once() -> None:
    edit = enable_reporting_xml(DOMAIN.format(balloon=""), agent_channel="/run/vms/db.agent")
    (channel,) = ET.fromstring(edit.xml).findall("./devices/channel")
    assert channel.get("type") == "unix"
    assert element(channel, "source").attrib == {"mode": "bind", "path": "/run/vms/db.agent"}
    assert element(channel, "target").attrib == {"type": "virtio", "name": "org.vmreclaim.agent.0"}
    assert "added the guest agent's channel" in edit.notes[-1]
    # A channel already there, wherever its host end, is left alone.
    again = enable_reporting_xml(edit.xml, agent_channel="/elsewhere.agent")
    assert len(ET.fromstring(again.xml).findall("./devices/channel")) == 1


def test_memory_statistics_are_converted_from_kib() -> None:
    # What virDomainMemoryStats returned for the lab guest under libvirt 9.0 here.
    stats = {
        "actual": 1048576,
        "swap_in": 0,
        "swap_out": 0,
        "major_fault": 43,
        "minor_fault": 2955,
        "unused": 919264,
        "available": 981844,
        "usable": 857364,
        "last_update": 1795680992,
        "disk_caches": 14564,
        "hugetlb_pgalloc": 0,
        "hugetlb_pgfail": 0,
        "rss": 287228,
    }
    guest = guest_stats(stats)
    assert guest is not None
    assert guest.updated_at == 1795680992.0
    assert guest.total_bytes == 981844 * 1024
    assert guest.available_bytes == 857364 * 1024
    assert guest.free_bytes == 919264 * 1024
    assert guest.cache_bytes == 14564 * 1024
    assert (guest.major_faults, guest.minor_faults) == (43, 2955)


def test_no_statistics_before_the_guest_reports() -> None:
    assert guest_stats({"actual": 1048576, "rss": 287228}) is None


def test_addresses_carry_uri_and_domain() -> None:
    address = domain_address("qemu+ssh://root@host/system", "db")
    assert address == "libvirt:qemu+ssh://root@host/system#db"
    assert split_address(address) == ("qemu+ssh://root@host/system", "db")
    assert split_address("libvirt:qemu:///system") == ("qemu:///system", None)


def test_pid_files_are_local_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert pid_file("qemu:///system", "db") == Path("/run/libvirt/qemu/db.pid")
    assert pid_file("qemu:///session", "db") == Path("/run/user/1000/libvirt/qemu/run/db.pid")
    assert pid_file("qemu+ssh://host/system", "db") is None
    assert pid_file("xen:///system", "db") is None


def test_a_pid_file_is_trusted_only_for_that_domains_qemu(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    run = tmp_path / "libvirt" / "qemu" / "run"
    run.mkdir(parents=True)
    (run / "db.pid").write_text("4242\n")
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    cmdline = b"/usr/bin/qemu-system-x86_64\0-name\0guest=db,debug-threads=on\0"
    (proc / "4242" / "cmdline").write_bytes(cmdline)
    assert qemu_pid("qemu:///session", "db", proc) == 4242
    (proc / "4242" / "cmdline").write_bytes(b"/usr/bin/sleep\0" + b"100\0")
    assert qemu_pid("qemu:///session", "db", proc) is None
    assert qemu_pid("qemu:///session", "other", proc) is None
    assert os.getpid() > 0
