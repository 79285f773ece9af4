"""The runner's phases on the guest's clock, against a guest whose clock runs slow."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import pytest

from vmreclaim.bench import runner
from vmreclaim.bench.scenarios import Phase


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
