"""`vmreclaim top --libvirt`, `host libvirt enable-reporting` and the configuration's VM keys,
against libvirt's built-in test driver (test:///default: one running domain called "test",
in-process, no daemon)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vmreclaim.cli import main
from vmreclaim.errors import ConfigError
from vmreclaim.host.config import parse_config

pytest.importorskip("libvirt", reason="libvirt-python is not installed (scripts/setup)")

TEST_URI = "test:///default"


def test_top_lists_the_domains_of_a_uri(capsys) -> None:
    assert main(["top", "--once", "--json", "--wait", "0", "--libvirt", TEST_URI]) == 0
    vms = json.loads(capsys.readouterr().out)["vms"]
    assert [vm["address"] for vm in vms] == [f"libvirt:{TEST_URI}#test"]
    balloon = vms[0]["balloon"]
    assert balloon["ram_bytes"] == 8 << 30
    assert vms[0]["free_page_reporting"] is False
    assert vms[0]["pid"] is None  # the test driver has no process


def test_a_uri_that_does_not_answer_is_an_error(capsys) -> None:
    uri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
    assert main(["top", "--once", "--libvirt", uri]) == 1
    err = capsys.readouterr().err
    assert f"cannot connect to libvirt at {uri}" in err
    assert "hint: is libvirtd" in err


def test_enable_reporting_says_it_applies_on_the_next_start(capsys) -> None:
    assert main(["host", "libvirt", "enable-reporting", "test", "--uri", TEST_URI]) == 0
    out = capsys.readouterr().out
    assert "set freePageReporting='on' in its persistent XML" in out
    assert "applies from its next start" in out


def test_enable_reporting_adds_autodeflate_and_the_agents_channel(capsys) -> None:
    command = ["host", "libvirt", "enable-reporting", "test", "--uri", TEST_URI]
    assert main([*command, "--agent-channel", "/run/vms/test.agent"]) == 0
    out = capsys.readouterr().out
    assert "set autodeflate='on'" in out
    assert "added the guest agent's channel org.vmreclaim.agent.0 at /run/vms/test.agent" in out


def test_enable_reporting_wants_an_absolute_channel_path(capsys) -> None:
    command = ["host", "libvirt", "enable-reporting", "test", "--uri", TEST_URI]
    assert main([*command, "--agent-channel", "test.agent"]) == 2
    err = capsys.readouterr().err
    assert "--agent-channel test.agent: libvirt needs an absolute path" in err


def test_enable_reporting_names_a_missing_domain(capsys) -> None:
    assert main(["host", "libvirt", "enable-reporting", "nope", "--uri", TEST_URI]) == 2
    assert "no domain 'nope'" in capsys.readouterr().err


def test_the_config_takes_every_kind_of_vm() -> None:
    config = parse_config(
        {
            "libvirt": ["qemu:///system"],
            "cloud_hypervisor": "/run/ch/*.sock",
            "firecracker": ["/run/fc/a.sock"],
            "host": {"keep_available": "1G"},
        },
        "host.toml",
    )
    assert config.qmp == ()
    assert config.libvirt == ("qemu:///system",)
    assert config.cloud_hypervisor == ("/run/ch/*.sock",)
    assert config.firecracker == ("/run/fc/a.sock",)
    assert config.has_vms


def test_a_bad_libvirt_key_names_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"libvirt": [3], "host": {"keep_available": "1G"}}, "host.toml")
    assert caught.value.key == "libvirt"


def test_host_run_check_shows_the_libvirt_uris(tmp_path: Path, capsys) -> None:
    config = tmp_path / "host.toml"
    config.write_text('libvirt = ["qemu:///system"]\n[host]\nkeep_available = "2G"\n')
    assert main(["host", "run", "--config", str(config), "--check"]) == 0
    assert "libvirt ['qemu:///system']" in capsys.readouterr().out
