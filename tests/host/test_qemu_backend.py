"""The QEMU backend and the fleet against a fake QMP server on a real unix socket."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import Message

from vmreclaim.errors import QmpError, VmHungError, VmUnreachableError
from vmreclaim.host.backends.qemu import QemuVm, QuietClient, parse_guest_stats
from vmreclaim.host.config import STATS_PERIOD_S
from vmreclaim.host.fleet import Fleet
from vmreclaim.host.records import GuestStats
from vmreclaim.host.top import snapshot_json

from .fake_qmp import MIB, UNKNOWN, FakeQemu

STATUS = "Name:\tqemu-system-x86\nVmRSS:\t  307200 kB\n"
# The kernel prints a blank after an anonymous mapping's inode.
SMAPS = (
    "7f2a40000000-7f2a80000000 rw-p 00000000 00:00 0 \n"
    "Size:            1048576 kB\n"
    "Rss:              409600 kB\n"
    "7ffd1b7e0000-7ffd1b801000 rw-p 00000000 00:00 0                          [stack]\n"
    "Size:                132 kB\n"
    "Rss:                  40 kB\n"
)


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    """A /proc holding this process's QEMU-like status and smaps: the fake server runs in this
    process, so SO_PEERCRED names it."""
    pid_dir = tmp_path / "proc" / str(os.getpid())
    pid_dir.mkdir(parents=True)
    (pid_dir / "status").write_text(STATUS)
    (pid_dir / "smaps").write_text(SMAPS)
    (pid_dir / "statm").write_text("700000 76800 1000 1 0 70000 0\n")
    return tmp_path / "proc"


def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "vm.qmp"


def test_connect_finds_process_balloon_and_reporting(tmp_path: Path, proc: Path) -> None:
    async def scenario() -> None:
        async with FakeQemu(socket_path(tmp_path)) as fake:
            vm = QemuVm(socket_path(tmp_path), proc=proc)
            await vm.connect()
            sample = await vm.sample()
            await vm.close()
            assert fake.commands[0] == "qmp_capabilities"
            assert fake.polling_interval == STATS_PERIOD_S == 2
        assert vm.name == "fake-vm"
        assert sample.pid == os.getpid()
        assert sample.balloon is not None
        assert sample.balloon.ram_bytes == 1024 * MIB
        assert sample.balloon.free_page_reporting is True
        assert sample.footprint is not None
        assert sample.footprint.rss_bytes == 307200 * 1024
        assert sample.footprint.guest_ram_bytes == 400 * MIB
        assert sample.guest is not None
        assert sample.guest.available_bytes == 800 * MIB
        assert sample.guest.used_bytes == 250 * MIB

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("keep", "already", "after"),
    [
        (True, 5, (5, 0)),  # top, beside a VM whose statistics are on: left as they are
        (True, 0, (STATS_PERIOD_S, 1)),  # top, statistics off: on, or it would show nothing
        (False, 5, (STATS_PERIOD_S, 1)),  # the daemon: its own period, which it steers by
    ],
)
def test_an_onlooker_leaves_a_statistics_period_that_is_set(
    tmp_path: Path, proc: Path, keep: bool, already: int, after: tuple[int, int]
) -> None:
    async def scenario() -> None:
        async with FakeQemu(socket_path(tmp_path)) as fake:
            fake.polling_interval = already
            vm = QemuVm(socket_path(tmp_path), proc=proc, keep_stats_period=keep)
            await vm.connect()
            sample = await vm.sample()
            await vm.close()
            assert (fake.polling_interval, fake.polling_sets) == after
            assert sample.guest is not None

    asyncio.run(scenario())


def test_a_balloon_target_is_sent_and_actual_follows_events(tmp_path: Path, proc: Path) -> None:
    async def scenario() -> int | None:
        async with FakeQemu(socket_path(tmp_path)) as fake:
            vm = QemuVm(socket_path(tmp_path), proc=proc)
            await vm.connect()
            await vm.set_balloon_target(768 * MIB)
            await asyncio.sleep(0.05)  # the event arrives after the reply
            sample = await vm.sample()
            await vm.close()
            assert fake.actual == 768 * MIB
            assert "query-balloon" not in fake.commands[fake.commands.index("balloon") :]
        return sample.balloon.actual_bytes if sample.balloon else None

    assert asyncio.run(scenario()) == 768 * MIB


def test_reporting_off_is_reported_off(tmp_path: Path, proc: Path) -> None:
    async def scenario() -> bool | None:
        async with FakeQemu(socket_path(tmp_path), reporting=False):
            vm = QemuVm(socket_path(tmp_path), proc=proc)
            await vm.connect()
            sample = await vm.sample()
            await vm.close()
        return sample.balloon.free_page_reporting if sample.balloon else None

    assert asyncio.run(scenario()) is False


def test_a_missing_socket_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(VmUnreachableError, match="No such file"):
        asyncio.run(QemuVm(tmp_path / "absent.qmp").connect())


def test_a_socket_that_is_not_qmp_is_a_qmp_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        async def chatter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            await writer.drain()
            await reader.read()

        server = await asyncio.start_unix_server(chatter, path=str(socket_path(tmp_path)))
        try:
            await QemuVm(socket_path(tmp_path), timeout=2).connect()
        finally:
            server.close()

    with pytest.raises(QmpError, match="did not answer as a QMP monitor"):
        asyncio.run(scenario())


def test_a_silent_socket_is_hung(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(socket_path(tmp_path)))
    listener.listen(1)
    try:
        with pytest.raises(VmHungError, match=r"no answer within 0\.5 s to the QMP greeting"):
            asyncio.run(QemuVm(socket_path(tmp_path), timeout=0.5).connect())
    finally:
        listener.close()


def test_cancelling_a_connect_cancels_it_instead_of_failing_it(tmp_path: Path) -> None:
    # Ctrl-C, SIGTERM and the fleet forgetting a VM cancel a connect that waits for the
    # greeting: that must stay a cancellation, not become a QmpError the caller logs and retries.
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(socket_path(tmp_path)))
    listener.listen(1)

    async def scenario() -> asyncio.Task[None]:
        task = asyncio.create_task(QemuVm(socket_path(tmp_path), timeout=30).connect())
        await asyncio.sleep(0.2)
        task.cancel()
        await asyncio.wait([task])
        return task

    try:
        task = asyncio.run(scenario())
    finally:
        listener.close()
    assert task.cancelled()


class CountedMessage(Message):
    """A message that counts how often it is pretty-printed."""

    printed = 0

    def __str__(self) -> str:
        CountedMessage.printed += 1
        return super().__str__()


class Clocks:
    """A monotonic and a wall clock that the test moves together."""

    def __init__(self, wall: float) -> None:
        self.monotonic = 0.0
        self.wall = wall

    def advance(self, seconds: float) -> None:
        self.monotonic += seconds
        self.wall += seconds


def stats_reads(fake: FakeQemu) -> int:
    return fake.stats_reads


async def poll_every_second(vm: QemuVm, clocks: Clocks, fake: FakeQemu, seconds: int) -> list[int]:
    """Sample once a second; the guest-stats reads made so far after each sample."""
    reads = []
    for _ in range(seconds):
        await vm.sample()
        reads.append(stats_reads(fake))
        clocks.advance(1.0)
    return reads


def qemu_vm(tmp_path: Path, proc: Path, clocks: Clocks, stats_interval: int) -> QemuVm:
    return QemuVm(
        socket_path(tmp_path),
        proc=proc,
        stats_interval=stats_interval,
        clock=lambda: clocks.monotonic,
        wall_clock=lambda: clocks.wall,
    )


def test_guest_statistics_reported_every_second_are_read_at_every_poll(
    tmp_path: Path, proc: Path
) -> None:
    async def scenario() -> list[int]:
        async with FakeQemu(socket_path(tmp_path)) as fake:
            clocks = Clocks(fake.last_update + 0.3)
            vm = qemu_vm(tmp_path, proc, clocks, stats_interval=1)
            await vm.connect()
            reads = []
            for _ in range(4):
                reads += await poll_every_second(vm, clocks, fake, 1)
                fake.last_update += 1  # the guest answers every second
            await vm.close()
            return reads

    assert asyncio.run(scenario()) == [1, 2, 3, 4]


def test_guest_statistics_are_read_once_per_report(tmp_path: Path, proc: Path) -> None:
    async def scenario() -> tuple[list[int], GuestStats | None, GuestStats | None]:
        async with FakeQemu(socket_path(tmp_path)) as fake:
            clocks = Clocks(fake.last_update + 0.3)  # the report came 0.3 s ago
            vm = qemu_vm(tmp_path, proc, clocks, stats_interval=2)
            await vm.connect()
            reads = []
            first = second = None
            for second_index in range(6):
                sample = await vm.sample()
                reads.append(stats_reads(fake))
                if second_index == 0:
                    first = sample.guest
                if second_index == 1:
                    second = sample.guest
                clocks.advance(1.0)
                if second_index % 2 == 1:
                    fake.last_update += 2  # the guest answers every 2 s, before our poll
            await vm.close()
            return reads, first, second

    reads, first, second = asyncio.run(scenario())
    assert reads == [1, 1, 2, 2, 3, 3]
    assert second == first  # served from the last read


def test_a_late_report_is_read_at_every_poll_until_it_comes(tmp_path: Path, proc: Path) -> None:
    async def scenario() -> tuple[list[int], float | None]:
        async with FakeQemu(socket_path(tmp_path)) as fake:
            reported = fake.last_update
            clocks = Clocks(reported + 0.5)
            vm = qemu_vm(tmp_path, proc, clocks, stats_interval=2)
            await vm.connect()
            # +0.5 read, +1.5 not due, +2.5 and +3.5 due but nothing new yet
            reads = await poll_every_second(vm, clocks, fake, 4)
            fake.last_update = reported + 3  # came at +3.8, stamped in whole seconds
            sample = await vm.sample()  # +4.5
            reads.append(stats_reads(fake))
            await vm.close()
            return reads, sample.guest.updated_at if sample.guest else None

    reads, updated_at = asyncio.run(scenario())
    assert reads == [1, 1, 2, 3, 4]
    assert updated_at == 1_700_000_003


@pytest.mark.parametrize("last_update", [0, 1_700_000_000 - 3600], ids=["never", "stopped"])
def test_a_guest_that_does_not_report_is_read_once_per_interval(
    tmp_path: Path, proc: Path, last_update: int
) -> None:
    async def scenario() -> list[int]:
        async with FakeQemu(socket_path(tmp_path)) as fake:
            fake.last_update = last_update
            clocks = Clocks(1_700_000_000.0)
            vm = qemu_vm(tmp_path, proc, clocks, stats_interval=2)
            await vm.connect()
            reads = await poll_every_second(vm, clocks, fake, 6)
            await vm.close()
            return reads

    assert asyncio.run(scenario()) == [1, 1, 2, 2, 3, 3]


def test_a_monitor_that_closes_between_reads_is_unreachable(tmp_path: Path, proc: Path) -> None:
    async def scenario() -> None:
        async with FakeQemu(socket_path(tmp_path)) as fake:
            clocks = Clocks(fake.last_update + 0.3)
            vm = qemu_vm(tmp_path, proc, clocks, stats_interval=2)
            await vm.connect()
            await vm.sample()
            await fake.crash()
            await asyncio.sleep(0.05)
            clocks.advance(1.0)
            try:
                with pytest.raises(VmUnreachableError, match="lost"):
                    await vm.sample()
            finally:
                await vm.close()

    asyncio.run(scenario())


def test_messages_are_formatted_only_for_debug_logging() -> None:
    async def client() -> QuietClient:
        return QuietClient("quiet")  # in a loop, as the backend makes it: 3.9 needs one

    quiet = asyncio.run(client())
    message = CountedMessage({"execute": "qom-get"})
    quiet.logger.setLevel(logging.INFO)
    assert quiet._cb_outbound(message) is message
    assert quiet._cb_inbound(message) is message
    assert CountedMessage.printed == 0
    quiet.logger.setLevel(logging.DEBUG)
    quiet._cb_outbound(message)
    quiet._cb_inbound(message)
    assert CountedMessage.printed == 2


def test_unknown_guest_statistics_are_none() -> None:
    stats = parse_guest_stats(
        {"last-update": 0, "stats": {"stat-free-memory": UNKNOWN, "stat-total-memory": 5}}
    )
    assert stats is not None
    assert stats.free_bytes is None
    assert stats.total_bytes == 5
    assert stats.used_bytes is None


def test_the_fleet_drops_a_crashed_vm_and_picks_it_up_again(tmp_path: Path, proc: Path) -> None:
    now = [0.0]

    async def scenario() -> list[int]:
        fleet = Fleet(
            [str(tmp_path / "*.qmp")],
            lambda address: QemuVm(address, proc=proc),
            clock=lambda: now[0],
        )
        seen = []
        fake = FakeQemu(socket_path(tmp_path))
        await fake.__aenter__()
        await fleet.connect_all()
        seen.append(len((await fleet.poll()).vms))
        await fake.crash()
        await asyncio.sleep(0.05)  # the next poll comes an interval later
        seen.append(len((await fleet.poll()).vms))  # the poll notices; the VM is gone
        async with FakeQemu(socket_path(tmp_path)):
            now[0] += 2.0  # past the back-off
            await fleet.connect_all()
            seen.append(len((await fleet.poll()).vms))
        await fleet.close()
        return seen

    assert asyncio.run(scenario()) == [1, 0, 1]


def test_the_fleet_forgets_a_vm_whose_socket_disappears(tmp_path: Path, proc: Path) -> None:
    async def scenario() -> tuple[int, int]:
        fleet = Fleet([str(tmp_path / "*.qmp")], lambda address: QemuVm(address, proc=proc))
        async with FakeQemu(socket_path(tmp_path)):
            await fleet.connect_all()
            before = (await fleet.poll()).vms
        socket_path(tmp_path).unlink(missing_ok=True)  # 3.13 unlinks it when the server closes
        after = await fleet.poll()
        await fleet.close()
        return len(before), len(after.vms) + len(after.unreachable)

    assert asyncio.run(scenario()) == (1, 0)


def test_the_json_snapshot_has_one_entry_per_vm(tmp_path: Path, proc: Path) -> None:
    async def scenario() -> dict[str, Any]:
        fleet = Fleet(
            [str(socket_path(tmp_path)), str(tmp_path / "absent.qmp")],
            lambda address: QemuVm(address, proc=proc),
        )
        async with FakeQemu(socket_path(tmp_path)):
            await fleet.connect_all()
            poll = await fleet.poll()
        await fleet.close()
        return snapshot_json(poll, None, 123.0, 3.0)

    snapshot = asyncio.run(scenario())
    assert set(snapshot) == {"time", "stale_after_s", "host", "vms", "unreachable"}
    (entry,) = snapshot["vms"]
    assert entry["name"] == "fake-vm"
    assert entry["rss_bytes"] == 307200 * 1024
    assert entry["balloon"] == {
        "ram_bytes": 1024 * MIB,
        "actual_bytes": 1024 * MIB,
        "target_bytes": None,
    }
    assert entry["free_page_reporting"] is True
    assert entry["guest"]["available_bytes"] == 800 * MIB
    assert entry["host_unused_bytes"] == 400 * MIB - 250 * MIB
    assert [u["address"] for u in snapshot["unreachable"]] == [str(tmp_path / "absent.qmp")]
