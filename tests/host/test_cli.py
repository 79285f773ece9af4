"""`vmreclaim top` and `vmreclaim host run` fail clearly, with a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from vmreclaim.cli import main

from .silent_socket import silent_socket


def test_a_bad_config_names_file_and_key(tmp_path: Path, capsys) -> None:
    config = tmp_path / "host.toml"
    config.write_text('[host]\nkeep_available = "2G"\n[balloon]\nmax_stepp = "1G"\n')
    assert main(["host", "run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}: balloon.max_stepp: unknown key" in err
    assert "hint: allowed here:" in err


def test_check_prints_the_effective_configuration(tmp_path: Path, capsys) -> None:
    config = tmp_path / "host.toml"
    config.write_text('qmp = ["/run/*.qmp"]\n[host]\nkeep_available = "2G"\n')
    assert main(["host", "run", "--config", str(config), "--check"]) == 0
    assert "keep host MemAvailable >= 2.0 GiB" in capsys.readouterr().out


def test_an_unreachable_socket_is_an_error(tmp_path: Path, capsys) -> None:
    code = main(["top", "--once", "--json", "--qmp", str(tmp_path / "absent.qmp")])
    assert code == 1
    err = capsys.readouterr().err
    assert "cannot connect to QMP socket" in err
    assert "hint:" in err


def top_once(socket_path: Path, *verbosity: str) -> subprocess.CompletedProcess[str]:
    command = ["top", "--once", "--interval", "1", "--qmp", str(socket_path)]
    return subprocess.run(
        [sys.executable, "-m", "vmreclaim", *verbosity, *command],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_socket_that_never_answers_is_reported_hung(tmp_path: Path) -> None:
    with silent_socket(tmp_path / "silent.sock") as path:
        done = top_once(path)
    assert done.returncode == 1  # nothing answered
    assert "no answer within 0.5 s to the QMP greeting" in done.stderr
    assert "one client at a time" in done.stderr
    assert "Greeting:" not in done.stderr  # qemu.qmp's own line ("Failed to receive Greeting")


def test_qemu_qmp_speaks_at_debug_verbosity(tmp_path: Path) -> None:
    with silent_socket(tmp_path / "silent.sock") as path:
        done = top_once(path, "-vv")
    assert "Failed to receive Greeting" in done.stderr


def test_a_timeout_of_zero_is_a_usage_error(capsys) -> None:
    assert main(["top", "--once", "--timeout", "0", "--qmp", "/run/vm.qmp"]) == 2
    assert "--timeout 0" in capsys.readouterr().err


def test_top_with_no_vm_named_and_none_found_says_so(capsys, tmp_path: Path) -> None:
    # A /proc with no process: nothing on this machine is probed.
    (tmp_path / "proc").mkdir()
    config = tmp_path / "top.toml"
    config.write_text(f'proc = "{tmp_path / "proc"}"\n[host]\nkeep_available = "1G"\n')
    assert main(["top", "--once", "--no-daemon", "--wait", "0", "--config", str(config)]) == 0
    assert "found no VM on this host" in capsys.readouterr().err


def test_building_the_command_loads_no_host_library() -> None:
    # The guest agent builds the same parser: in a small VM every imported module costs RSS.
    code = (
        "import sys; from vmreclaim.cli import build_parser; build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('rich', 'prometheus_client', 'qemu', 'asyncio', 'ssl')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr
