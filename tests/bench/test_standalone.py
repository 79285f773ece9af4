"""What the standalone benchmarks' main()s share (bench/standalone.py): the scratch folder, exit
statuses for errors, Ctrl-C and SIGTERM, and the results file."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vmreclaim.bench.standalone import run_standalone, write_results
from vmreclaim.errors import VmreclaimError


@pytest.fixture(autouse=True)
def sigterm_restored() -> Iterator[None]:
    """run_standalone installs its own SIGTERM handler: the test process gets its own back."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_the_work_gets_a_scratch_folder_that_is_gone_afterwards() -> None:
    seen: list[Path] = []

    def work(scratch: Path) -> str:
        (scratch / "daemon.log").write_text("log")
        seen.append(scratch)
        return "done"

    kept: list[str] = []
    result = run_standalone(
        "t", work, before_cleanup=lambda scratch: kept.append((scratch / "daemon.log").read_text())
    )
    assert result == "done"
    assert kept == ["log"]  # before_cleanup still sees the folder...
    assert not seen[0].exists()  # ...which is removed after it


def test_an_error_is_one_line_and_status_1_and_the_folder_still_goes(capsys) -> None:
    seen: list[Path] = []

    def work(scratch: Path) -> None:
        seen.append(scratch)
        raise VmreclaimError("no QEMU here")

    with pytest.raises(SystemExit) as stopped:
        run_standalone("soak", work, before_cleanup=seen.append)
    assert stopped.value.code == 1
    assert capsys.readouterr().err == "soak: error: no QEMU here\n"
    assert len(seen) == 2  # before_cleanup ran on the error path too
    assert not seen[0].exists()


def test_ctrl_c_exits_130() -> None:
    def work(scratch: Path) -> None:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stopped:
        run_standalone("t", work)
    assert stopped.value.code == 130


def test_sigterm_stops_the_work_like_an_exception_so_its_context_managers_run() -> None:
    cleaned: list[bool] = []

    def work(scratch: Path) -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0.1)  # let the handler run
        finally:
            cleaned.append(True)

    with pytest.raises(SystemExit) as stopped:
        run_standalone("t", work)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert cleaned == [True]


@dataclass
class Record:
    name: str
    seconds: float


def test_results_are_written_as_json_records(tmp_path: Path) -> None:
    write_results(tmp_path / "out/results.json", [Record("a", 1.5), Record("b", 2.0)])
    write_results(tmp_path / "out/result.json", Record("c", 3.0))
    assert json.loads((tmp_path / "out/results.json").read_text()) == [
        {"name": "a", "seconds": 1.5},
        {"name": "b", "seconds": 2.0},
    ]
    assert json.loads((tmp_path / "out/result.json").read_text()) == {"name": "c", "seconds": 3.0}
