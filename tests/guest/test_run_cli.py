"""`vmreclaim guest run` through vmreclaim.cli.main, and its configuration errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vmreclaim.cli import main
from vmreclaim.errors import UsageError
from vmreclaim.guest.cli import require_root
from vmreclaim.guest.config import AgentConfig, knob_kind, load_settings, read_config_file
from vmreclaim.guest.policies import POLICIES, AdaptiveConfig

EXAMPLE = Path(__file__).parents[2] / "src/vmreclaim/guest/vmreclaim-guest.example.ini"


def run_main(*argv: str) -> int:
    return main(["guest", "run", *argv])


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "guest.ini"
    path.write_text(text)
    return path


def test_run_once_on_a_fake_tree_exits_0(debian, caplog):
    caplog.set_level("INFO")
    assert run_main("--once", "--root", str(debian.path)) == 0
    assert any(m.startswith("stopped after 1 tick(s); CPU ") for m in caplog.messages)


def test_run_once_with_a_config_file_uses_its_policy(debian, tmp_path, caplog):
    caplog.set_level("INFO")
    path = config_file(tmp_path, "[agent]\npolicy = gradual\n[gradual]\nfloor_bytes = 256M\n")
    assert run_main("--once", "--config", str(path), "--root", str(debian.path)) == 0
    assert any(
        m.startswith("gradual config: ") and "floor_bytes=256.0 MiB" in m for m in caplog.messages
    )


def test_an_unknown_policy_is_exit_2_with_the_valid_names(debian, capsys):
    assert run_main("--policy", "fast", "--root", str(debian.path)) == 2
    err = capsys.readouterr().err
    assert "error: unknown policy 'fast'" in err
    assert "hint: use one of: adaptive, gradual, dropcache, off" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[adaptive]\nmin_floor_bytes = lots\n", "[adaptive] min_floor_bytes = 'lots': bad size"),
        ("[adaptive]\nfloor = 128M\n", "unknown key 'floor' in [adaptive]"),
        ("[wsl]\npolicy = gradual\n", "unknown section [wsl]"),
        ("[agent]\npolicy = fast\n", "[agent] policy = 'fast': unknown policy 'fast'"),
        ("[agent]\ninterval_s = soon\n", "[agent] interval_s = 'soon': bad value 'soon'"),
        ("[agent]\ninterval_s = 0\n", "[agent] interval_s must be above 0"),
        ("[gradual]\nidle_busy_ratio = 5\n", "[gradual] idle_busy_ratio = '5': bad value '5'"),
        ("[DEFAULT]\npolicy = off\n", "unknown section [DEFAULT]"),
        ("policy = off\n", "is not a valid INI file"),
    ],
)
def test_a_bad_config_file_is_exit_2_naming_the_file_and_key(
    debian, tmp_path, capsys, text, message
):
    path = config_file(tmp_path, text)
    assert run_main("--config", str(path), "--root", str(debian.path)) == 2
    err = capsys.readouterr().err
    assert f"error: {path}" in err or f"config file {path}" in err
    assert message in err
    assert "hint: " in err


def test_an_unknown_key_hint_lists_the_allowed_keys(tmp_path):
    with pytest.raises(UsageError) as caught:
        read_config_file(config_file(tmp_path, "[agent]\ninterval = 2\n"))
    assert caught.value.hint == (
        "[agent] takes policy, interval_s, reclaim_time_limit_s, textfile_path, channel_path"
    )


def test_an_unreadable_config_file_is_exit_2(debian, tmp_path, capsys):
    missing = tmp_path / "nowhere.ini"
    assert run_main("--config", str(missing), "--root", str(debian.path)) == 2
    assert (
        f"cannot read config file {missing}: No such file or directory" in capsys.readouterr().err
    )
    assert run_main("--config", str(tmp_path), "--root", str(debian.path)) == 2
    assert f"cannot read config file {tmp_path}: Is a directory" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--interval", "--duration"])
@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_a_bad_number_of_seconds_is_exit_2(debian, capsys, option, value):
    assert run_main(option, value, "--root", str(debian.path)) == 2
    assert f"bad {option} '{value}'" in capsys.readouterr().err


def test_run_on_the_real_system_requires_root():
    with pytest.raises(UsageError) as caught:
        require_root(Path("/"), euid=1000, command="run")
    assert "`vmreclaim guest run`" in caught.value.message


def test_command_line_options_override_the_file(tmp_path):
    path = config_file(tmp_path, "[agent]\npolicy = gradual\ninterval_s = 5\n")
    assert load_settings(path).agent == AgentConfig("gradual", 5.0)
    assert load_settings(path, "dropcache", 1.0).agent == AgentConfig("dropcache", 1.0)


def test_sizes_in_the_file_are_binary_units(tmp_path):
    path = config_file(tmp_path, "[adaptive]\nmin_floor_bytes = 1.5G  # a comment\n")
    config = load_settings(path).policy_config()
    assert config == dataclasses.replace(AdaptiveConfig(), min_floor_bytes=3 << 29)


def test_the_example_config_holds_the_defaults():
    settings = read_config_file(EXAMPLE)
    assert settings.agent == AgentConfig()
    for name, policy in POLICIES.items():
        if name in settings.policy_configs:
            example = dataclasses.asdict(settings.policy_configs[name])
            default = dataclasses.asdict(policy.config_type())
            assert example == pytest.approx(default, rel=1e-4), name


def test_every_knob_has_a_unit_the_parser_knows():
    for policy in POLICIES.values():
        for field in dataclasses.fields(policy.config_type()):
            assert knob_kind(field.name) is not None, (policy.name, field.name)
