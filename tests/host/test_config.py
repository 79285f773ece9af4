"""The TOML configuration: defaults, and errors that name the file, the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmreclaim.errors import ConfigError
from vmreclaim.host.config import load_config, parse_config

MIB = 1 << 20


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "host.toml"
    path.write_text(text)
    return path


def test_a_minimal_config_gets_the_documented_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'qmp = ["/run/*.qmp"]\n[host]\nkeep_available = "2G"\n'))
    assert config.qmp == ("/run/*.qmp",)
    assert config.metrics_address == "127.0.0.1"
    assert config.policy.keep_available_bytes == 2 << 30
    assert config.policy.release_available_bytes > config.policy.keep_available_bytes
    assert config.policy.max_step_bytes == 100 * MIB
    assert config.policy.max_step_fraction == pytest.approx(0.05)


def test_per_vm_rules_override_minimum_and_shares(tmp_path: Path) -> None:
    text = """
        [host]
        keep_available = "1G"
        [vm_defaults]
        minimum = "300M"
        [[vm]]
        name = "db-*"
        minimum = "2G"
        shares = 3000
    """
    policy = load_config(write(tmp_path, text)).policy
    assert policy.minimum_for("db-1") == 2 << 30
    assert policy.shares_for("db-1") == 3000
    assert policy.minimum_for("web") == 300 * MIB
    assert policy.shares_for("web") == 1000


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        (
            '[host]\nkeep_available = "2G"\nkeep_avialable = 1\n',
            "host.keep_avialable",
            "allowed here: keep_available",
        ),
        ("[host]\n", "host.keep_available", "missing"),
        ('[host]\nkeep_available = "lots"\n', "host.keep_available", "bad size"),
        (
            '[host]\nkeep_available = "2G"\nrelease_available = "1G"\n',
            "host.release_available",
            "below keep_available",
        ),
        (
            '[host]\nkeep_available = "2G"\n[balloon]\nmax_step_percent = 500\n',
            "balloon.max_step_percent",
            "0.1 to 100",
        ),
        (
            '[host]\nkeep_available = "2G"\n[metrics]\nport = "http"\n',
            "metrics.port",
            "whole number",
        ),
        ('qmp = 5\n[host]\nkeep_available = "2G"\n', "qmp", "list of socket paths"),
        ('[host]\nkeep_available = "2G"\n[[vm]]\nminimum = "1G"\n', "vm[0].name", "missing"),
        ('[host]\nkeep_available = "2G"\nhost = 1\n', None, "unknown key"),
    ],
)
def test_a_bad_value_names_the_file_and_key(tmp_path: Path, text: str, key, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    assert error.path == str(path)
    if key is not None:
        assert error.key == key
    assert words in f"{error.message} {error.hint}"


def test_a_file_that_is_not_toml_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[host\nkeep_available = 2G\n"))


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_the_hosts_memory_is_read_under_proc_unless_host_proc_says_otherwise(
    tmp_path: Path,
) -> None:
    plain = load_config(write(tmp_path, 'proc = "/p"\n[host]\nkeep_available = "1G"\n'))
    assert plain.host_proc is None
    assert plain.host_memory_proc == Path("/p")
    text = f'proc = "/p"\n[host]\nkeep_available = "1G"\nproc = "{tmp_path}"\n'
    config = load_config(write(tmp_path, text))
    assert config.proc == Path("/p")  # the VMs' processes are still read there
    assert config.host_memory_proc == tmp_path


def test_agent_channels_are_a_list_of_sockets_or_globs() -> None:
    config = parse_config(
        {"agent": ["/run/vms/*.agent"], "host": {"keep_available": "1G"}}, "host.toml"
    )
    assert config.agent == ("/run/vms/*.agent",)
    assert parse_config({"host": {"keep_available": "1G"}}, "host.toml").agent == ()


def test_agent_of_the_wrong_type_names_the_key() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({"agent": [1], "host": {"keep_available": "1G"}}, "host.toml")
    assert raised.value.key == "agent"
