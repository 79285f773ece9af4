"""The host end of the agent channels: the latest valid report kept, the rest counted; a guest
that floods, sends garbage or never sends costs the daemon a bounded amount and no other VM
anything. Small unix-socket servers stand in for QEMU's chardev sockets, and unix-socket
clients for the guests whose vsock connections Cloud Hypervisor and Firecracker carry."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from vmreclaim.agent_protocol import (
    VSOCK_PORT,
    AgentReport,
    ReleaseAnswer,
    ReleaseRequest,
    encode_answer,
    encode_report,
    parse_request,
)
from vmreclaim.guest.hostport import HostReporter, Vsock
from vmreclaim.host.agents import (
    AgentChannels,
    AgentLink,
    ChannelLimits,
    TokenBucket,
    VsockLink,
    listened_on,
    vm_stem,
)
from vmreclaim.host.fleet import FleetPoll
from vmreclaim.host.history import track
from vmreclaim.host.metrics import MetricsView, _Collector
from vmreclaim.host.records import VmSample
from vmreclaim.host.top import snapshot_json, view_from_json
from vmreclaim.qemu.footprint import Footprint

MIB = 1 << 20
REPORT = AgentReport(
    seq=1,
    version="0.1.0",
    policy="adaptive",
    interval_s=2.0,
    reclaimable_bytes=300 * MIB,
    cache_bytes=428 * MIB,
    floor_bytes=128 * MIB,
    refaulted_bytes=0,
    last_action="none",
    last_action_age_s=None,
)


def report_line(seq: int, **changes: object) -> bytes:
    return encode_report(dataclasses.replace(REPORT, seq=seq, **changes))  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def dropped(link: AgentLink) -> dict[str, int]:
    return {reason: count for reason, count in link.dropped.items() if count}


def test_the_bucket_allows_a_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate=5, burst=10, now=0.0)
    assert sum(bucket.try_take(1, 0.0) for _ in range(20)) == 10
    assert sum(bucket.try_take(1, 1.0) for _ in range(20)) == 5
    assert bucket.try_take(1, 1.0) is False


def test_the_bucket_says_how_long_a_debt_takes_to_pay() -> None:
    bucket = TokenBucket(rate=1000, burst=1000, now=0.0)
    assert bucket.take_owing(500, 0.0) == 0.0
    assert bucket.take_owing(1500, 0.0) == pytest.approx(1.0)


def test_the_latest_valid_report_is_kept() -> None:
    link = AgentLink("/run/vms/db.agent", clock=Clock())
    link.receive(report_line(1) + report_line(2)[:20])
    assert link.report is not None
    assert link.report.seq == 1
    link.receive(report_line(2)[20:])
    assert link.report.seq == 2
    assert link.reports == 2
    assert dropped(link) == {}


def test_garbage_is_counted_by_reason_and_the_good_report_stays() -> None:
    link = AgentLink("/run/vms/db.agent", clock=Clock())
    link.receive(report_line(1))
    link.receive(b"\x00\xff garbage\n" + b"[1]\n" + report_line(2, policy="$(reboot)"))
    link.receive(b"y" * 10_000 + b"\n\n")
    assert link.report is not None
    assert link.report.seq == 1
    assert dropped(link) == {"not_json": 1, "invalid": 2, "too_long": 1}


def test_a_stream_joined_mid_message_resyncs_at_the_next_newline() -> None:
    link = AgentLink("/run/vms/db.agent", clock=Clock())
    link.receive(report_line(1)[40:] + report_line(2))
    assert link.report is not None
    assert link.report.seq == 2
    assert sum(link.dropped.values()) == 1


def test_messages_over_the_rate_are_dropped_and_counted() -> None:
    clock = Clock()
    link = AgentLink("/run/vms/db.agent", clock=clock)
    link.receive(b"".join(report_line(seq) for seq in range(1, 101)))
    assert link.reports == 10  # the burst
    assert dropped(link) == {"rate_limited": 90}
    clock.now += 1.0
    link.receive(b"".join(report_line(seq) for seq in range(101, 201)))
    assert link.reports == 15  # the burst spent: 5 a second
    assert link.report is not None
    assert link.report.seq == 105


def test_a_vm_is_paired_with_the_agent_socket_of_the_same_stem() -> None:
    assert vm_stem("/run/vms/db.qmp") == ("db", "/run/vms")
    assert vm_stem("libvirt:qemu:///system#db") == ("db", None)
    assert vm_stem("cloud-hypervisor:/run/ch/db.sock") == ("db", "/run/ch")
    assert vm_stem("libvirt:qemu:///system") is None


async def channels_over(paths: list[str]) -> AgentChannels:
    channels = AgentChannels(paths)
    for path in paths:  # without starting their tasks
        channels._links[path] = AgentLink(path)
    return channels


def test_several_sockets_of_one_stem_go_by_directory() -> None:
    async def main() -> None:
        channels = await channels_over(["/a/db.agent", "/b/db.agent", "/b/web.agent"])
        link = channels.link_for("/b/db.qmp")
        assert link is not None
        assert link.path == "/b/db.agent"
        assert channels.link_for("/c/db.qmp") is None  # ambiguous: none
        web = channels.link_for("/c/web.qmp")
        assert web is not None
        assert web.path == "/b/web.agent"  # the only one of that stem
        assert channels.link_for("libvirt:qemu:///system#web") is web
        assert channels.link_for("/b/other.qmp") is None

    asyncio.run(main())


@asynccontextmanager
async def fake_port(
    path: Path, talk: Callable[[asyncio.StreamWriter], Awaitable[None]]
) -> AsyncIterator[None]:
    """A unix socket server that, as QEMU's chardev socket, streams what `talk` writes to the
    client that connects; its conversations are cancelled when the block ends."""
    talking: set[asyncio.Task[Any]] = set()

    async def serve(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        talking.add(task)
        try:
            await talk(writer)
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_unix_server(serve, path=str(path))
    try:
        yield
    finally:
        server.close()
        for task in talking:
            task.cancel()
        if talking:
            await asyncio.wait(talking)


async def wait_for(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.02)
    return check()


def test_reports_arrive_over_the_socket(tmp_path: Path) -> None:
    async def agent(writer: asyncio.StreamWriter) -> None:
        for seq in range(1, 4):
            writer.write(report_line(seq))
            await writer.drain()
            await asyncio.sleep(0.05)
        await asyncio.sleep(10)

    async def main() -> None:
        path = tmp_path / "db.agent"
        async with fake_port(path, agent):
            channels = AgentChannels([str(tmp_path / "*.agent")])
            await channels.refresh()
            try:
                link = channels.link_for(str(tmp_path / "db.qmp"))
                assert link is not None
                assert await wait_for(lambda: link.reports == 3, 5)
                assert link.connected
                status = link.status()
                assert status.report is not None
                assert status.report.seq == 3
                assert status.report_age_s is not None
                assert status.report_age_s < 5
            finally:
                await channels.close()

    asyncio.run(main())


def test_a_flood_is_throttled_and_stalls_neither_the_loop_nor_another_vm(tmp_path: Path) -> None:
    """One guest writes garbage without pause, another reports and a third never sends: the
    event loop keeps its pace, the good reports arrive, and the flood is read no faster than
    the byte rate allows (the rest waits in the socket, and in QEMU, the guest's problem)."""
    limits = ChannelLimits(bytes_per_s=256 << 10, byte_burst=256 << 10)
    sent = [0]

    async def flood(writer: asyncio.StreamWriter) -> None:
        chunk = (b"x" * 5000 + b"\n{not json}\n") * 20
        while True:
            writer.write(chunk)
            sent[0] += len(chunk)
            await writer.drain()

    async def honest(writer: asyncio.StreamWriter) -> None:
        for seq in range(1, 1000):
            writer.write(report_line(seq))
            await writer.drain()
            await asyncio.sleep(0.25)  # 4 a second: under the rate

    async def silent(_writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(60)

    async def main() -> None:
        async with (
            fake_port(tmp_path / "bad.agent", flood),
            fake_port(tmp_path / "good.agent", honest),
            fake_port(tmp_path / "mute.agent", silent),
        ):
            channels = AgentChannels([str(tmp_path / "*.agent")], limits=limits)
            await channels.refresh()
            try:
                worst = 0.0
                started = time.monotonic()
                while time.monotonic() - started < 2.0:
                    before = time.monotonic()
                    await asyncio.sleep(0.01)
                    worst = max(worst, time.monotonic() - before)
                elapsed = time.monotonic() - started
                links = {Path(link.path).stem: link for link in channels.links}
                bad, good, mute = links["bad"], links["good"], links["mute"]
                assert worst < 0.25
                assert good.reports >= 5
                assert dict(good.status().dropped) == dict.fromkeys(good.dropped, 0)
                assert mute.connected
                assert mute.report is None
                assert bad.report is None
                assert bad.dropped["too_long"] > 0
                assert bad.dropped["rate_limited"] > 0
                read = bad.dropped["too_long"] * 5001  # at least this much was read
                assert read <= 256 * 1024 * (1 + elapsed) + 64 * 1024 * 4
                assert sent[0] > read  # the flood is held back, not swallowed
                assert bad._splitter.held_bytes <= 4096
            finally:
                await channels.close()

    asyncio.run(main())


def test_a_socket_nobody_listens_on_is_retried_quietly(tmp_path: Path) -> None:
    async def main() -> None:
        path = tmp_path / "dead.agent"
        path.touch()  # a stale file where a socket was
        channels = AgentChannels([str(path)])
        await channels.refresh()
        try:
            await asyncio.sleep(0.2)
            (link,) = channels.links
            assert not link.connected
            assert not link.awaited
        finally:
            await channels.close()

    asyncio.run(main())


def observed(address: str = "/run/vms/db.qmp") -> object:
    sample = VmSample("db", address, 7, Footprint(0.0, 1000, 1000), None, None)
    return track(None, sample, 0.0)[1]


def test_the_report_reaches_the_metrics_and_the_view() -> None:
    async def main() -> None:
        channels = await channels_over(["/run/vms/db.agent"])
        link = channels.links[0]
        link.receive(report_line(5) + b"junk\n")
        (vm,) = channels.attach([observed()])  # type: ignore[list-item]
        collector = _Collector()
        collector.publish(MetricsView(None, "hold", (vm,), 0, 1))
        values = {
            (point.name, point.labels.get("reason", "")): point.value
            for family in collector.collect()
            for point in family.samples
        }
        assert values[("vmreclaim_vm_agent_reclaimable_bytes", "")] == 300 * MIB
        assert values[("vmreclaim_vm_agent_floor_bytes", "")] == 128 * MIB
        assert values[("vmreclaim_vm_agent_reports_total", "")] == 1
        assert values[("vmreclaim_vm_agent_messages_dropped_total", "not_json")] == 1
        assert values[("vmreclaim_vm_agent_messages_dropped_total", "rate_limited")] == 0
        assert ("vmreclaim_vm_agent_report_age_seconds", "") in values
        view = json.loads(json.dumps(snapshot_json(FleetPoll((vm,)), None, 0.0, 3.0)))
        agent = view["vms"][0]["agent"]
        assert agent["report"]["reclaimable_bytes"] == 300 * MIB
        assert agent["dropped"]["not_json"] == 1
        back = view_from_json(view).poll.vms[0].agent
        assert back == vm.agent

    asyncio.run(main())


def test_a_vm_without_an_agent_channel_has_no_agent_series() -> None:
    collector = _Collector()
    collector.publish(MetricsView(None, "hold", (observed(),), 0, 1))  # type: ignore[arg-type]
    names = {point.name for family in collector.collect() for point in family.samples}
    assert not [name for name in names if "agent" in name]


def test_the_daemon_pairs_a_vm_with_its_agent_and_publishes_the_report(tmp_path: Path) -> None:
    """host run end to end over a fake QEMU (QMP) and a fake agent port of the same stem."""
    from vmreclaim.host.config import parse_config
    from vmreclaim.host.daemon import Daemon
    from vmreclaim.host.sources import SourceList, VmSources
    from vmreclaim.host.view import ViewServer, read_view

    from .fake_qmp import FakeQemu

    config = parse_config(
        {
            "qmp": [str(tmp_path / "*.qmp")],
            "agent": [str(tmp_path / "*.agent")],
            "socket": "",
            "metrics": {"port": 0},
            "host": {"keep_available": "1M"},
        },
        "host.toml",
    )

    async def agent(writer: asyncio.StreamWriter) -> None:
        for seq in range(1, 100):
            writer.write(report_line(seq))
            await writer.drain()
            await asyncio.sleep(0.1)

    async def main() -> dict[str, Any]:
        sources = VmSources(SourceList(config.qmp))
        daemon = Daemon(config, sources.backend, discoverer=sources.discover)
        daemon.view = ViewServer(tmp_path / "run" / "host.sock")
        await daemon.view.start()
        try:
            async with (
                FakeQemu(tmp_path / "db.qmp"),
                fake_port(tmp_path / "db.agent", agent),
            ):
                for _ in range(20):
                    await daemon.cycle()
                    await asyncio.sleep(0.1)
                    view = await asyncio.get_running_loop().run_in_executor(
                        None, read_view, tmp_path / "run" / "host.sock", 2.0
                    )
                    if view["vms"] and (view["vms"][0]["agent"] or {}).get("report"):
                        return view
                raise AssertionError(f"no report in the view: {view}")
        finally:
            await daemon.view.close()
            await daemon.agents.close()
            await daemon.fleet.close()
            sources.close()

    view = asyncio.run(main())
    (vm,) = view["vms"]
    assert vm["address"] == str(tmp_path / "db.qmp")
    assert vm["agent"]["path"] == str(tmp_path / "db.agent")
    assert vm["agent"]["connected"] is True
    assert vm["agent"]["report"]["reclaimable_bytes"] == 300 * MIB


def test_top_without_a_daemon_reads_the_agent_itself(tmp_path: Path, capsys) -> None:
    """`top --once --json --no-daemon --agent GLOB`: the fake QEMU and agent port run on a loop
    of their own in a thread, as a real VM would beside the command."""
    import threading

    from vmreclaim.cli import main

    from .fake_qmp import FakeQemu

    ready = threading.Event()
    done: asyncio.Future[None] | None = None
    loop = asyncio.new_event_loop()

    async def agent(writer: asyncio.StreamWriter) -> None:
        for seq in range(1, 1000):
            writer.write(report_line(seq))
            await writer.drain()
            await asyncio.sleep(0.2)

    async def serve() -> None:
        nonlocal done
        done = loop.create_future()
        async with FakeQemu(tmp_path / "db.qmp"), fake_port(tmp_path / "db.agent", agent):
            ready.set()
            await done

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(5)
        argv = ["top", "--once", "--json", "--no-daemon", "--wait", "5"]
        argv += ["--qmp", str(tmp_path / "db.qmp"), "--agent", str(tmp_path / "*.agent")]
        assert main(argv) == 0
    finally:
        assert done is not None
        loop.call_soon_threadsafe(done.set_result, None)
        thread.join(5)
        loop.close()
    (vm,) = json.loads(capsys.readouterr().out)["vms"]
    assert vm["agent"]["report"]["reclaimable_bytes"] == 300 * MIB


# Hybrid vsock (Cloud Hypervisor, Firecracker): the daemon listens at <uds_path>_VSOCK_PORT and
# the fake guests below connect there as the VMM would for a guest connecting to the host's
# port. Real AF_VSOCK is not exercised: these machines have no /dev/vhost-vsock.


async def guest_connects(uds: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A guest's connection as the VMM makes it, once the daemon listens for it."""
    listener = f"{uds}_{VSOCK_PORT}"
    assert await wait_for(lambda: listened_on(listener), 5)
    return await asyncio.open_unix_connection(listener)


def test_a_vm_is_paired_with_the_listener_beside_its_vsock_socket(tmp_path: Path) -> None:
    async def main() -> None:
        (tmp_path / "db.vsock").touch()  # the VMM's socket; a file will do for the glob
        channels = AgentChannels([], vsock=[str(tmp_path / "*.vsock*")])
        await channels.refresh()
        try:
            (link,) = channels.links
            assert link.path == f"{tmp_path / 'db.vsock'}_{VSOCK_PORT}"
            assert await wait_for(lambda: listened_on(link.path), 5)
            await channels.refresh()  # its own listener matches the glob: not a VM
            assert channels.links == (link,)
            assert channels.link_for(str(tmp_path / "db.sock")) is link
            assert channels.link_for(f"cloud-hypervisor:{tmp_path / 'db.sock'}") is link
            assert channels.link_for(f"firecracker:{tmp_path / 'db.sock'}") is link
            assert channels.link_for(str(tmp_path / "web.sock")) is None
        finally:
            await channels.close()
        assert not Path(link.path).exists()  # the listening socket is removed on exit

    asyncio.run(main())


def test_reports_and_requests_go_over_a_guests_vsock_connection(tmp_path: Path) -> None:
    async def main() -> None:
        uds = tmp_path / "db.vsock"
        channels = AgentChannels([], vsock=[str(uds)])
        await channels.refresh()
        try:
            (link,) = channels.links
            reader, writer = await guest_connects(uds)
            writer.write(report_line(1) + report_line(2))
            assert await wait_for(lambda: link.reports == 2, 5)
            assert link.connected
            assert link.send(ReleaseRequest(3, 64 * MIB, 5.0))
            assert parse_request((await reader.readline()).rstrip(b"\n")).id == 3
            writer.write(encode_answer(ReleaseAnswer(3, 60 * MIB, "")))
            assert await wait_for(lambda: link.answer == ReleaseAnswer(3, 60 * MIB, ""), 5)
            writer.close()
            assert await wait_for(lambda: not link.connected, 5)
        finally:
            await channels.close()

    asyncio.run(main())


def test_the_guest_agents_reporter_reaches_the_listener(tmp_path: Path) -> None:
    """The guest's HostReporter (an AF_UNIX stream standing in for AF_VSOCK) and the daemon's
    listener: the first report after the listener comes arrives, the request goes back."""

    async def main() -> None:
        uds = tmp_path / "db.vsock"
        listener = f"{uds}_{VSOCK_PORT}"
        stand_in = Vsock(
            make_socket=lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM),
            address=listener,
        )
        channels = AgentChannels([], vsock=[str(uds)])
        with HostReporter(stand_in, "adaptive", 2.0) as reporter:
            assert not reporter.send(report_line(1))  # no listener yet: dropped, not waited
            await channels.refresh()
            try:
                (link,) = channels.links
                assert await wait_for(lambda: listened_on(listener), 5)
                assert reporter.send(report_line(2))
                assert await wait_for(lambda: link.reports == 1, 5)
                assert link.report is not None
                assert link.report.seq == 2
                assert link.send(ReleaseRequest(4, 64 * MIB, 5.0))
                assert await wait_for(lambda: reporter.poll_request() is not None, 5)
                assert reporter.dropped == 1
            finally:
                await channels.close()

    asyncio.run(main())


def test_a_new_vsock_connection_replaces_the_old(tmp_path: Path) -> None:
    async def main() -> None:
        uds = tmp_path / "db.vsock"
        channels = AgentChannels([], vsock=[str(uds)])
        await channels.refresh()
        try:
            (link,) = channels.links
            old_reader, old_writer = await guest_connects(uds)
            old_writer.write(report_line(1) + b'{"type":"rep')  # and half a line
            assert await wait_for(lambda: link.reports == 1, 5)
            reader, writer = await guest_connects(uds)  # the agent restarted
            writer.write(report_line(7))
            assert await wait_for(lambda: link.reports == 2, 5)
            assert link.report is not None
            assert link.report.seq == 7
            assert dropped(link) == {}  # the old half line was not joined to the new line
            assert await asyncio.wait_for(old_reader.read(), 5) == b""  # closed by the daemon
            assert link.connected
            assert link.send(ReleaseRequest(9, MIB, 5.0))
            assert parse_request((await reader.readline()).rstrip(b"\n")).id == 9
            old_writer.close()
            writer.close()
        finally:
            await channels.close()

    asyncio.run(main())


async def flooding_guest(uds: Path, sent: list[int]) -> None:
    """Garbage without pause, as fast as the daemon takes it."""
    _reader, writer = await guest_connects(uds)
    chunk = (b"x" * 5000 + b"\n{not json}\n") * 20
    with contextlib.suppress(ConnectionError):
        while True:
            writer.write(chunk)
            sent[0] += len(chunk)
            await writer.drain()


async def churning_guest(uds: Path) -> None:
    """Connects again and again, a line of garbage each time."""
    while True:
        _reader, writer = await guest_connects(uds)
        writer.write(b"\x00\xff garbage\n")
        await asyncio.sleep(0.01)
        writer.close()


async def honest_guest(uds: Path) -> None:
    """A report four times a second: under the rate."""
    _reader, writer = await guest_connects(uds)
    for seq in range(1, 1000):
        writer.write(report_line(seq))
        await writer.drain()
        await asyncio.sleep(0.25)


def test_a_hostile_vsock_guest_stalls_neither_the_loop_nor_another_vm(tmp_path: Path) -> None:
    """One guest floods garbage, another connects again and again, a third reports: the loop
    keeps its pace, the honest reports arrive, the flood is read no faster than the byte rate."""
    limits = ChannelLimits(bytes_per_s=256 << 10, byte_burst=256 << 10)
    sent = [0]

    async def main() -> None:
        names: dict[str, Callable[[Path], Coroutine[Any, Any, None]]] = {
            "bad": lambda uds: flooding_guest(uds, sent),
            "busy": churning_guest,
            "good": honest_guest,
        }
        for name in names:
            (tmp_path / f"{name}.vsock").touch()
        channels = AgentChannels([], vsock=[str(tmp_path / "*.vsock")], limits=limits)
        await channels.refresh()
        guests = [
            asyncio.create_task(talk(tmp_path / f"{name}.vsock")) for name, talk in names.items()
        ]
        try:
            worst = 0.0
            started = time.monotonic()
            while time.monotonic() - started < 2.0:
                before = time.monotonic()
                await asyncio.sleep(0.01)
                worst = max(worst, time.monotonic() - before)
            elapsed = time.monotonic() - started
            links = {Path(link.stem).name: link for link in channels.links}
            bad, busy, good = links["bad"], links["busy"], links["good"]
            assert worst < 0.25
            assert good.reports >= 5
            assert dropped(good) == {}
            assert busy.report is None
            assert busy.dropped["not_json"] <= 3  # the connections read: a burst of them...
            assert isinstance(busy, VsockLink)
            assert busy.refused > 10  # ...the rest closed at once
            assert bad.report is None
            assert bad.dropped["too_long"] > 0
            read = bad.dropped["too_long"] * 5001
            assert read <= 256 * 1024 * (1 + elapsed) + 64 * 1024 * 4
            assert sent[0] > read  # the flood waits in the socket (and the VMM), not here
            assert bad._splitter.held_bytes <= 4096
        finally:
            for guest in guests:
                guest.cancel()
            await asyncio.wait(guests)
            await channels.close()
        assert not list(tmp_path.glob(f"*_{VSOCK_PORT}"))

    asyncio.run(main())


def test_a_socket_another_process_listens_on_is_not_taken(tmp_path: Path) -> None:
    async def main() -> None:
        uds = tmp_path / "db.vsock"
        listener = f"{uds}_{VSOCK_PORT}"
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        other.bind(listener)
        other.listen(1)
        made = os.stat(listener).st_ino
        channels = AgentChannels([], vsock=[str(uds)])
        await channels.refresh()
        try:
            (link,) = channels.links
            await asyncio.sleep(0.2)
            assert not link.awaited  # it says why it does not listen
            assert os.stat(listener).st_ino == made
        finally:
            await channels.close()
            assert os.stat(listener).st_ino == made  # and leaves the other's socket alone
            other.close()

    asyncio.run(main())


def test_a_stale_listener_socket_is_replaced(tmp_path: Path) -> None:
    async def main() -> None:
        uds = tmp_path / "db.vsock"
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(f"{uds}_{VSOCK_PORT}")
        stale.close()  # a daemon that died: the file stays, nobody listens
        channels = AgentChannels([], vsock=[str(uds)])
        await channels.refresh()
        try:
            (link,) = channels.links
            _reader, writer = await guest_connects(uds)
            writer.write(report_line(1))
            assert await wait_for(lambda: link.reports == 1, 5)
            writer.close()
        finally:
            await channels.close()

    asyncio.run(main())


def test_the_config_names_vsock_sockets_for_the_daemon(tmp_path: Path) -> None:
    from vmreclaim.host.config import parse_config
    from vmreclaim.host.daemon import Daemon

    config = parse_config(
        {
            "cloud_hypervisor": ["/run/vms/*.sock"],
            "agent_vsock": ["/run/vms/*.vsock"],
            "socket": "",
            "host": {"keep_available": "1M"},
        },
        "host.toml",
    )
    assert config.agent_vsock == ("/run/vms/*.vsock",)
    daemon = Daemon(config, lambda _address: None)  # type: ignore[arg-type,return-value]
    assert daemon.agents.vsock == ("/run/vms/*.vsock",)
