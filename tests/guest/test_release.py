"""The host asks, the agent gives: a request read from the port without waiting, planned above
the policy's floor, carried out by the reclaim action and answered; refused, with a reason,
under memory pressure, within the floor, or without a bounded reclaim. A raw pseudo-terminal
stands in for the virtio-serial port: a character device both ends read and write."""

from __future__ import annotations

import os
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmreclaim.agent_protocol import (
    ReleaseAnswer,
    ReleaseRequest,
    encode_request,
    parse_guest_message,
)
from vmreclaim.guest.hostport import HostReporter
from vmreclaim.guest.release import (
    CANNOT_RECLAIM,
    MEMORY_PRESSURE,
    WITHIN_FLOOR,
    cold_bytes,
    plan_release,
)

from .simguest import MIB, SimGuest
from .test_hostport import make_agent

REQUEST = ReleaseRequest(id=4, release_bytes=300 * MIB, deadline_s=3.0)


# -- the plan, pure ------------------------------------------------------------------------


def test_the_plan_gives_what_is_asked_when_it_lies_above_the_floor(sim: SimGuest) -> None:
    plan = plan_release(REQUEST, sim.observe(), 128 * MIB, None)
    assert (plan.reclaim_bytes, plan.refused) == (300 * MIB, "")


def test_the_plan_never_goes_below_the_floor(sim: SimGuest) -> None:
    # 950 MiB reclaimable, a 800 MiB floor: 150 MiB may go, whatever the host asks.
    plan = plan_release(REQUEST, sim.observe(), 800 * MIB, None)
    assert plan.reclaim_bytes == 150 * MIB


def test_within_the_floor_the_agent_refuses(sim: SimGuest) -> None:
    sim.set_cache(active=60 * MIB, inactive=60 * MIB, slab=10 * MIB)
    plan = plan_release(REQUEST, sim.observe(), 128 * MIB, None)
    assert (plan.reclaim_bytes, plan.refused) == (0, WITHIN_FLOOR)
    assert "floor" in plan.why


def test_a_guest_whose_cache_is_all_hot_refuses_and_keeps_it(sim: SimGuest) -> None:
    # 692 MiB above the floor, but 400 MiB of the cache on the active list: under 1 GiB of file
    # cache the kernel keeps as much inactive, and reclaiming more would take the hot set.
    sim.set_cache(active=400 * MIB, inactive=410 * MIB, slab=10 * MIB)
    plan = plan_release(REQUEST, sim.observe(), 128 * MIB, None)
    assert (plan.reclaim_bytes, plan.refused) == (0, WITHIN_FLOOR)
    assert "active list" in plan.why
    assert cold_bytes(sim.observe().memory, 128 * MIB) == 10 * MIB


def test_the_plan_gives_the_cold_part_only(sim: SimGuest) -> None:
    sim.set_cache(active=200 * MIB, inactive=350 * MIB, slab=10 * MIB)
    plan = plan_release(REQUEST, sim.observe(), 128 * MIB, None)
    assert plan.reclaim_bytes == 150 * MIB


def test_over_a_gib_of_file_cache_the_kernel_keeps_less_inactive(sim: SimGuest) -> None:
    # 2 GiB on the file lists: inactive_is_low()'s ratio is isqrt(10 * 2) = 4.
    sim.set_cache(active=1024 * MIB, inactive=1024 * MIB, slab=0)
    assert cold_bytes(sim.observe().memory, 128 * MIB) == 768 * MIB


def test_a_policy_holding_back_after_pressure_refuses(sim: SimGuest) -> None:
    plan = plan_release(REQUEST, sim.observe(), 128 * MIB, "paused after memory pressure")
    assert (plan.reclaim_bytes, plan.refused) == (0, MEMORY_PRESSURE)


def test_stalls_on_memory_now_refuse(sim: SimGuest) -> None:
    sim.root.write(
        "/proc/pressure/memory",
        "some avg10=4.20 avg60=1.00 avg300=0.20 total=9000000\n"
        "full avg10=1.00 avg60=0.50 avg300=0.10 total=4000000\n",
    )
    plan = plan_release(REQUEST, sim.observe(), 128 * MIB, None)
    assert plan.refused == MEMORY_PRESSURE
    assert "4.20" in plan.why


def test_without_a_bounded_reclaim_the_agent_refuses_rather_than_drop_the_hot_set(
    sim: SimGuest,
) -> None:
    (sim.path / "sys/fs/cgroup/memory.reclaim").unlink()
    plan = plan_release(REQUEST, sim.observe(), 128 * MIB, None)
    assert plan.refused == CANNOT_RECLAIM


# -- the agent over a port -----------------------------------------------------------------


@pytest.fixture
def port() -> Iterator[tuple[int, Path]]:
    """(the host's end, the guest's device): a pseudo-terminal in raw mode, no echo."""
    host, guest = os.openpty()
    tty.setraw(guest)
    os.set_blocking(host, False)
    try:
        yield host, Path(os.ttyname(guest))
    finally:
        os.close(host)
        os.close(guest)


def answers(host: int) -> list[ReleaseAnswer]:
    data = b""
    while True:
        try:
            chunk = os.read(host, 1 << 16)
        except (BlockingIOError, OSError):
            break
        if not chunk:
            break
        data += chunk
    messages = [parse_guest_message(line) for line in data.splitlines() if line.strip()]
    return [message for message in messages if isinstance(message, ReleaseAnswer)]


def test_the_agent_releases_what_the_host_asks_and_answers(
    sim: SimGuest, port: tuple[int, Path]
) -> None:
    host, device = port
    with HostReporter(device, "adaptive", 2.0, clock=sim.clock) as reporter:
        agent = make_agent(sim, reporter)
        os.write(host, encode_request(REQUEST))
        agent.run(max_ticks=1)  # the policy's first tick only measures
        (answer,) = answers(host)
    assert answer == ReleaseAnswer(4, 300 * MIB, "")
    # memory.reclaim, in writes of at most 256 MiB, as for the policy's own reclaims.
    writes = [int(text.split()[0]) for path, text in sim.writes if path.endswith("memory.reclaim")]
    assert writes == [256 * MIB, 44 * MIB]


def test_the_agent_refuses_within_its_floor_and_says_so(
    sim: SimGuest, port: tuple[int, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    host, device = port
    sim.set_cache(active=60 * MIB, inactive=60 * MIB, slab=10 * MIB)
    with HostReporter(device, "adaptive", 2.0, clock=sim.clock) as reporter:
        agent = make_agent(sim, reporter)
        os.write(host, encode_request(REQUEST))
        agent.run(max_ticks=1)
        (answer,) = answers(host)
    assert answer == ReleaseAnswer(4, 0, WITHIN_FLOOR)
    assert not [path for path, _ in sim.writes if path.endswith("memory.reclaim")]
    (line,) = [r.getMessage() for r in caplog.records if "host asked" in r.getMessage()]
    assert "request 4" in line
    assert "refused, within_floor" in line


def test_the_agent_refuses_while_its_policy_pauses_after_pressure(
    sim: SimGuest, port: tuple[int, Path]
) -> None:
    host, device = port
    with HostReporter(device, "adaptive", 2.0, clock=sim.clock) as reporter:
        agent = make_agent(sim, reporter)
        agent.tick()
        sim.advance(2.0, stall_us=500_000)  # half a second stalled on memory
        agent.tick()
        os.write(host, encode_request(REQUEST))
        agent.tick()
        (answer,) = answers(host)
    assert answer.refused == MEMORY_PRESSURE


def test_only_the_latest_request_of_a_tick_is_handled_and_garbage_is_skipped(
    sim: SimGuest, port: tuple[int, Path]
) -> None:
    host, device = port
    with HostReporter(device, "adaptive", 2.0, clock=sim.clock) as reporter:
        agent = make_agent(sim, reporter)
        older = ReleaseRequest(3, 100 * MIB, 3.0)
        os.write(host, encode_request(older) + b"\x00junk\n" + encode_request(REQUEST))
        agent.run(max_ticks=1)
        assert [answer.id for answer in answers(host)] == [4]
        assert reporter.bad_requests == 1


def test_a_host_that_floods_the_port_costs_a_tick_a_bounded_read(
    sim: SimGuest, port: tuple[int, Path]
) -> None:
    host, device = port
    with HostReporter(device, "adaptive", 2.0, clock=sim.clock) as reporter:
        agent = make_agent(sim, reporter)
        flood = b"x" * 3000 + b"\n"
        sent = 0
        while sent < 60_000:
            try:
                sent += os.write(host, flood)
            except BlockingIOError:
                break
        started = time.monotonic()
        agent.run(max_ticks=1)
        assert time.monotonic() - started < 2
        assert answers(host) == []
