"""The runner's phases on the guest's clock, against a guest whose clock runs slow, and
its wait for the agent's start."""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vmreclaim.bench import runner
from vmreclaim.bench.scenarios import Phase
from vmreclaim.errors import GuestCommandTimeout, VmreclaimError
from vmreclaim.lab.channel import CommandResult


@dataclass
class SlowGuest:
    """A guest whose /proc/uptime advances `pace` s per host second of a fake host clock."""

    pace: float
    host: float = 0.0

    def check(self, command: str) -> object:
        assert command == "cut -d' ' -f1 /proc/uptime"
        return type("Result", (), {"text": f"{100.0 + self.pace * self.host:.2f}\n"})()

    def sleep(self, seconds: float) -> None:
        self.host += seconds

    def monotonic(self) -> float:
        return self.host


@pytest.fixture
def guest(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> SlowGuest:
    slow = SlowGuest(pace=request.param)
    # The runner's module reads the clock through `time`, the one module object.
    monkeypatch.setattr(time, "sleep", slow.sleep)
    monkeypatch.setattr(time, "monotonic", slow.monotonic)
    return slow


@pytest.mark.parametrize("guest", [1 / 3], indirect=True)
def test_a_guest_clock_phase_lasts_its_seconds_on_the_guests_clock(guest: SlowGuest) -> None:
    seen: list[tuple[str, float, float]] = []
    planned = runner._sleep_guest(
        guest,  # type: ignore[arg-type]
        Phase("cold-write", 150.0, guest_clock=True),
        started=0.0,
        total=164.0,
        progress=lambda phase, done, total: seen.append((phase, done, total)),
    )
    # 150 guest s at a third of the host's pace: 450 host s, overshooting by one read at most.
    assert 450.0 <= guest.host <= 455.0
    # The run's plan grew from 164 s to what the guest's pace needs: 14 + 450.
    assert planned == pytest.approx(464.0, abs=6.0)
    assert seen[-1][0] == "cold-write"
    assert seen[-1][2] == pytest.approx(464.0, abs=6.0)


@pytest.mark.parametrize("guest", [0.01], indirect=True)
def test_a_guest_clock_phase_gives_up_when_the_host_is_far_too_busy(
    guest: SlowGuest, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        runner._sleep_guest(
            guest,  # type: ignore[arg-type]
            Phase("cold-write", 100.0, guest_clock=True),
            started=0.0,
            total=100.0,
            progress=lambda phase, done, total: None,
        )
    cap = runner.GUEST_CLOCK_MAX_HOST_RATIO * 100.0
    assert cap <= guest.host <= cap + 5.0
    assert "the host is too busy" in caplog.text


def _run_local(script: str, timeout: float = 10.0) -> int:
    return subprocess.run(["sh", "-c", script], timeout=timeout, check=False).returncode


def test_the_agent_counts_as_started_once_it_logs_its_start_line(tmp_path: Path) -> None:
    log_file, pid_file = tmp_path / "agent.log", tmp_path / "agent.pid"
    # An agent that takes a while to import, then logs its start line and keeps running.
    agent = subprocess.Popen(
        [
            "sh",
            "-c",
            f"echo 'DEBUG importing' >>{log_file}; sleep 0.6; "
            f"echo '2026-12-02T05:21:37 INFO vmreclaim: starting: policy adaptive' >>{log_file}; "
            "sleep 30",
        ]
    )
    try:
        pid_file.write_text(f"{agent.pid}\n")
        started = time.monotonic()
        assert _run_local(runner.agent_ready_script(str(log_file), str(pid_file))) == 0
        assert time.monotonic() - started >= 0.4  # it waited for the line
    finally:
        agent.kill()
        agent.wait()


def test_an_agent_that_dies_before_its_start_line_is_reported_not_waited_for(
    tmp_path: Path,
) -> None:
    log_file, pid_file = tmp_path / "agent.log", tmp_path / "agent.pid"
    agent = subprocess.Popen(["sh", "-c", f"echo 'Traceback: ImportError' >>{log_file}"])
    agent.wait()
    pid_file.write_text(f"{agent.pid}\n")
    assert _run_local(runner.agent_ready_script(str(log_file), str(pid_file))) == 4


@dataclass
class FakeGuest:
    """Answers the agent's launch, its readiness wait (with `ready`) and the log's tail."""

    ready: CommandResult | Exception
    commands: list[str] = field(default_factory=list)

    def check(self, command: str) -> CommandResult:
        self.commands.append(command)
        return CommandResult(0, b"", b"", 0.0)

    def run(self, command: str, timeout: float = 120.0) -> CommandResult:
        self.commands.append(command)
        if command.startswith("tail "):
            return CommandResult(0, b"ImportError: no module named vmreclaim\n", b"", 0.0)
        if isinstance(self.ready, Exception):
            raise self.ready
        return self.ready


@pytest.mark.parametrize(
    ("ready", "why"),
    [
        (CommandResult(4, b"", b"", 1.0), "exited before it started"),
        (GuestCommandTimeout("killed"), "had not started after 300 s"),
    ],
)
def test_an_agent_that_does_not_start_stops_the_run_with_its_log(
    ready: CommandResult | Exception, why: str
) -> None:
    guest = FakeGuest(ready)
    with pytest.raises(VmreclaimError) as err:
        runner.start_agent(guest, "adaptive")  # type: ignore[arg-type]
    assert why in err.value.message
    assert "ImportError: no module named vmreclaim" in err.value.message
    assert "guest run --policy adaptive" in guest.commands[0]


def test_a_started_agent_lets_the_run_go_on() -> None:
    guest = FakeGuest(CommandResult(0, b"", b"", 3.0))
    runner.start_agent(guest, "adaptive")  # type: ignore[arg-type]
    assert len(guest.commands) == 2  # the launch and the wait, no log read
