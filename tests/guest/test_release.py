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


def _buddyinfo(normal_order0: int, normal_order10: int) -> str:
    """The Debian 6.1 guest's buddyinfo with the Normal zone's single pages and 4 MiB blocks
    set."""
    return (
        "Node 0, zone      DMA      1      1      1      0      2      1      1      0      1"
        "      1      3 \n"
        "Node 0, zone    DMA32    518    402    291    163     97     54     31     17     12"
        "      8    212 \n"
        f"Node 0, zone   Normal {normal_order0:>6}   1023    635    433    223    103     40     15"
        f"      6      3 {normal_order10:>6} \n"
    )


def test_a_release_left_in_blocks_too_small_to_report_is_compacted(
    sim: SimGuest,
    port: tuple[int, Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # As on a guest whose free memory a deflated balloon scattered: the reclaimed pages land
    # as single pages, which free page reporting cannot hand back until compaction joins them.
    caplog.set_level("INFO")
    host, device = port
    kernel = sim.kernel_writer
    sim.root.write("/proc/buddyinfo", _buddyinfo(1218, 109))
    single_pages = [1218]

    def scattering(path: Path, text: str) -> None:
        kernel(path, text)
        if str(path).endswith("memory.reclaim"):
            single_pages[0] += int(text.split(maxsplit=1)[0]) // 4096
            sim.root.write("/proc/buddyinfo", _buddyinfo(single_pages[0], 109))
        elif str(path).endswith("compact_memory"):
            sim.root.write("/proc/buddyinfo", _buddyinfo(1218, 109 + 300 * MIB // (4 * MIB)))

    monkeypatch.setattr(sim, "kernel_writer", scattering)
    with HostReporter(device, "adaptive", 2.0, clock=sim.clock) as reporter:
        agent = make_agent(sim, reporter)
        os.write(host, encode_request(REQUEST))
        agent.run(max_ticks=1)
        (answer,) = answers(host)
    assert answer.released_bytes == 300 * MIB
    written = [path for path, _ in sim.writes]
    assert written[-1] == "/proc/sys/vm/compact_memory"
    (line,) = [r.getMessage() for r in caplog.records if "host asked" in r.getMessage()]
    assert "300.0 MiB of it in blocks too small to report: compacted" in line


def test_a_release_in_reportable_blocks_is_not_compacted(
    sim: SimGuest, port: tuple[int, Path]
) -> None:
    host, device = port
    sim.root.write("/proc/buddyinfo", _buddyinfo(1218, 109))  # reclaim leaves it as it was
    with HostReporter(device, "adaptive", 2.0, clock=sim.clock) as reporter:
        agent = make_agent(sim, reporter)
        os.write(host, encode_request(REQUEST))
        agent.run(max_ticks=1)
        (answer,) = answers(host)
    assert answer.released_bytes == 300 * MIB
    assert "/proc/sys/vm/compact_memory" not in [path for path, _ in sim.writes]
