"""The command's logging: -v and -q on either side of the subcommand; daemons stamp time and
level, or the journal's priority under systemd; one-shot commands stay terse."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from vmreclaim.cli import build_parser

from .guest.fakeroot import debian_guest

SRC = Path(__file__).parents[1] / "src"


def test_v_and_q_count_after_the_subcommand_too() -> None:
    parser = build_parser()
    args = parser.parse_args(["-v", "guest", "run", "-v", "--once"])
    assert args.verbose + args.verbose_after == 2
    args = parser.parse_args(["top", "-q"])
    assert args.quiet_after is True
    assert args.verbose == 0
    args = parser.parse_args(["lab", "run", "--", "ls", "-v"])
    # After --, -v is the guest command's.
    assert args.command == ["--", "ls", "-v"]
    assert not hasattr(args, "verbose_after")


def _guest_run(tmp_path: Path, env: dict[str, str], *options: str) -> list[str]:
    """`guest run --once` on a fake guest tree; the lines it logged."""
    root = debian_guest(tmp_path / "root").path
    stderr_path = tmp_path / "stderr"
    with stderr_path.open("wb") as stderr:
        if "JOURNAL_STREAM" in env:
            stat = os.fstat(stderr.fileno())
            env = {**env, "JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "vmreclaim",
                "guest",
                "run",
                "--once",
                "--root",
                str(root),
                *options,
            ],
            stderr=stderr,
            env={**os.environ, "PYTHONPATH": str(SRC), **env},
            timeout=60,
        )
    assert done.returncode == 0, stderr_path.read_text()
    return stderr_path.read_text().splitlines()


def test_a_daemon_stamps_time_and_level(tmp_path: Path) -> None:
    lines = _guest_run(tmp_path, {})
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d INFO vmreclaim: starting: policy adaptive .*", lines[0]
    ), lines


def test_under_journald_a_daemon_prefixes_the_priority_and_leaves_the_time_to_it(
    tmp_path: Path,
) -> None:
    lines = _guest_run(tmp_path, {"JOURNAL_STREAM": ""}, "-v", "-v")
    assert lines[0].startswith("<6>vmreclaim: starting: policy adaptive ")
    assert any(line.startswith("<7>vmreclaim: ") for line in lines), lines


def test_a_one_shot_command_stays_terse(tmp_path: Path) -> None:
    root = debian_guest(tmp_path).path
    done = subprocess.run(
        [sys.executable, "-m", "vmreclaim", "guest", "status", "--root", str(root), "-q"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert not re.search(r"^\d{4}-", done.stderr, re.MULTILINE)


def test_a_reader_that_leaves_early_gets_no_traceback(tmp_path: Path) -> None:
    root = debian_guest(tmp_path).path
    done = subprocess.run(
        # The reader closes the pipe before anything is written.
        f"{sys.executable} -m vmreclaim guest status --root {root} | {{ exec <&-; sleep 2; }}",
        shell=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        timeout=60,
    )
    assert "Traceback" not in done.stderr
    assert "BrokenPipeError" not in done.stderr
