"""`vmreclaim host launch-options`: the right switch for each hypervisor."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from vmreclaim.agent_protocol import VSOCK_PORT
from vmreclaim.cli import main
from vmreclaim.errors import UsageError
from vmreclaim.host.launch import launch_options


def test_qemu_gets_free_page_reporting_on_the_balloon_and_a_qmp_socket() -> None:
    snippet = launch_options("qemu", name="db").snippet
    assert "-device virtio-balloon-pci,id=balloon0,free-page-reporting=on" in snippet
    assert "-qmp unix:/run/vms/db.qmp,server=on,wait=off" in snippet


def test_libvirt_gets_a_memballoon_element_that_parses() -> None:
    element = ET.fromstring(launch_options("libvirt", deflate_on_oom=True).snippet)
    assert element.tag == "memballoon"
    assert element.attrib == {
        "model": "virtio",
        "autodeflate": "on",
        "freePageReporting": "on",
    }
    stats = element.find("stats")
    assert stats is not None
    assert stats.get("period") == "1"
    assert "next start" in launch_options("libvirt").note


def test_cloud_hypervisor_gets_the_balloon_option() -> None:
    snippet = launch_options("cloud-hypervisor", name="db").snippet
    assert "--balloon size=0,deflate_on_oom=on,free_page_reporting=on" in snippet
    assert "--api-socket path=/run/vms/db.sock" in snippet


def test_firecracker_gets_a_put_balloon_before_boot() -> None:
    options = launch_options("firecracker", stats_interval=2, deflate_on_oom=False)
    body = json.loads(options.snippet.split(" -d ", 1)[1].strip("'"))
    assert body == {
        "amount_mib": 0,
        "deflate_on_oom": False,
        "stats_polling_interval_s": 2,
        "free_page_reporting": True,
    }
    assert "-X PUT http://localhost/balloon" in options.snippet
    assert "before InstanceStart" in options.note


def test_deflate_on_oom_is_on_by_default_and_can_be_turned_off(capsys) -> None:
    assert "deflate-on-oom=on" in launch_options("qemu").snippet
    assert main(["host", "launch-options", "--hypervisor", "qemu", "--no-deflate-on-oom"]) == 0
    assert "deflate-on-oom=off" in capsys.readouterr().out
    assert main(["host", "launch-options", "--hypervisor", "libvirt"]) == 0
    assert "autodeflate='on'" in capsys.readouterr().out


def test_an_unknown_hypervisor_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        launch_options("xen")


def test_the_command_prints_the_snippet_on_stdout(capsys) -> None:
    assert main(["host", "launch-options", "--hypervisor", "cloud-hypervisor"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("--balloon size=0")
    assert "CONFIG_PAGE_REPORTING" in err


def test_qemu_gets_the_agent_channel_on_a_virtio_serial_port() -> None:
    options = launch_options("qemu", name="db")
    assert options.channel.split() == [
        "-device",
        "virtio-serial-pci,id=vmreclaim-serial",
        "-chardev",
        "socket,id=vmreclaim-agent,path=/run/vms/db.agent,server=on,wait=off",
        "-device",
        "virtserialport,bus=vmreclaim-serial.0,chardev=vmreclaim-agent,name=org.vmreclaim.agent.0",
    ]
    assert options.text() == f"{options.snippet} {options.channel}"
    assert 'agent = ["/run/vms/*.agent"]' in options.note


def test_libvirt_gets_a_channel_element_that_parses() -> None:
    options = launch_options("libvirt", name="db")
    channel = ET.fromstring(options.channel)
    assert channel.tag == "channel"
    assert channel.attrib == {"type": "unix"}
    source, target = channel.find("source"), channel.find("target")
    assert source is not None
    assert target is not None
    assert source.attrib == {"mode": "bind", "path": "/run/vms/db.agent"}
    assert target.attrib == {"type": "virtio", "name": "org.vmreclaim.agent.0"}
    first, second = options.text().split("\n<channel")
    assert ET.fromstring(first).tag == "memballoon"
    assert ET.fromstring("<channel" + second).tag == "channel"


def test_cloud_hypervisor_gets_the_agent_channel_on_vsock() -> None:
    options = launch_options("cloud-hypervisor", name="db")
    assert options.channel == "--vsock cid=3,socket=/run/vms/db.vsock"
    assert options.text() == f"{options.snippet} {options.channel}"
    assert 'agent_vsock = ["/run/vms/*.vsock"]' in options.note
    assert f"/run/vms/db.vsock_{VSOCK_PORT}" in options.note


def test_firecracker_gets_the_agent_channel_by_a_put_vsock() -> None:
    options = launch_options("firecracker", name="db")
    request, body = options.channel.split(" -d ", 1)
    assert request.startswith("curl --unix-socket /run/vms/db.sock -X PUT http://localhost/vsock")
    assert json.loads(body.strip("'")) == {"guest_cid": 3, "uds_path": "/run/vms/db.vsock"}
    # Two requests: one a line, each to paste whole.
    assert options.text() == f"{options.snippet}\n{options.channel}"
    assert 'agent_vsock = ["/run/vms/*.vsock"]' in options.note
    assert "not implemented" not in options.note


def test_the_command_prints_the_qemu_channel_on_the_same_line(capsys) -> None:
    assert main(["host", "launch-options", "--hypervisor", "qemu", "--name", "db"]) == 0
    out, _ = capsys.readouterr()
    assert out.count("\n") == 1
    assert "name=org.vmreclaim.agent.0" in out
