"""The agent's reports to the host: found on the virtio-serial port by name, one line per tick,
and never a stalled tick when the host is not there or does not read. A FIFO under a temporary
directory stands in for /dev/virtio-ports/...: a writer without a reader fails to open
(ENXIO) as a port fails to write without a host, and a reader that does not read fills it.

The vsock channel is tested with stand-ins only: these machines have no /dev/vhost-vsock (and
no VMM to carry a guest's AF_VSOCK stream), so the agent connects an AF_UNIX stream to a
listener at the path the host would listen on, `<uds_path>_VSOCK_PORT`, or a TCP stream where
the test needs connect() to complete after EINPROGRESS as it does on vsock."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from vmreclaim.agent_protocol import (
    PORT_NAME,
    VSOCK_PORT,
    ReleaseRequest,
    encode_request,
    parse_report,
)
from vmreclaim.cli import main
from vmreclaim.guest.daemon import Agent
from vmreclaim.guest.hostport import HostReporter, Vsock, find_port, find_vsock, parse_vsock
from vmreclaim.guest.policies import POLICIES

from .simguest import MIB, SimGuest


def make_agent(sim: SimGuest, reporter: HostReporter) -> Agent:
    sim.busy_ratio = 0.05
    policy = POLICIES["adaptive"]
    return Agent(
        sim.path,
        policy,
        policy.config_type(),
        interval_s=2.0,
        clock=sim.clock,
        sleep=sim.sleep,
        writer=sim.kernel_writer,
        own_cpu=lambda: (0.0, 0.0),
        user_hz=100,
        reporter=reporter,
    )


@contextmanager
def reading(fifo: Path) -> Iterator[int]:
    """The host's end: the FIFO opened for reading, without blocking."""
    descriptor = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        yield descriptor
    finally:
        os.close(descriptor)


def read_lines(descriptor: int) -> list[bytes]:
    data = b""
    while True:
        try:
            chunk = os.read(descriptor, 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    return data.splitlines()


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "port"
    os.mkfifo(path)
    return path


def test_the_port_is_found_by_its_udev_link(tmp_path: Path) -> None:
    link = tmp_path / "dev" / "virtio-ports" / PORT_NAME
    link.parent.mkdir(parents=True)
    link.touch()
    assert find_port(tmp_path) == link


def test_without_udev_the_port_is_found_by_its_name_in_sysfs(tmp_path: Path) -> None:
    for port, name in (("vport1p1", "org.vmreclaim.cmd"), ("vport1p2", PORT_NAME)):
        (tmp_path / "sys/class/virtio-ports" / port).mkdir(parents=True)
        (tmp_path / "sys/class/virtio-ports" / port / "name").write_text(f"{name}\n")
        (tmp_path / "dev").mkdir(exist_ok=True)
        (tmp_path / "dev" / port).touch()
    assert find_port(tmp_path) == tmp_path / "dev" / "vport1p2"


def test_a_guest_without_the_port_has_none(tmp_path: Path) -> None:
    assert find_port(tmp_path) is None


def test_each_tick_writes_one_report_that_the_host_parses(sim: SimGuest, fifo: Path) -> None:
    with reading(fifo) as host, HostReporter(fifo, "adaptive", 2.0, clock=sim.clock) as port:
        make_agent(sim, port).run(max_ticks=3)
        lines = read_lines(host)
    reports = [parse_report(line) for line in lines]
    assert [report.seq for report in reports] == [1, 2, 3]
    last = reports[-1]
    assert last.policy == "adaptive"
    assert last.interval_s == 2.0
    assert last.floor_bytes == 128 * MIB
    assert last.cache_bytes is not None
    # What it would give: the inactive list beyond what the kernel keeps against the active
    # one (100 MiB), below the cache above the floor.
    inactive, active = sim.memory["Inactive(file)"], sim.memory["Active(file)"]
    assert last.reclaimable_bytes == min(last.cache_bytes - 128 * MIB, inactive - active)
    assert last.refaulted_bytes == sim.refault_pages * 4096
    # The first tick only measures; the busy ticks after it reclaim.
    assert (reports[0].last_action, reports[0].last_action_age_s) == ("none", None)
    assert last.last_action == "reclaim"
    assert last.last_action_age_s == 0.0


def test_without_a_host_reports_are_dropped_and_logged_once(
    sim: SimGuest, fifo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with HostReporter(fifo, "adaptive", 2.0, clock=sim.clock) as port:
        agent = make_agent(sim, port)
        started = time.monotonic()
        agent.run(max_ticks=3)
        assert time.monotonic() - started < 5
        assert (port.sent, port.dropped) == (0, 3)
        with reading(fifo) as host:
            agent.run(max_ticks=4)
            lines = read_lines(host)
    assert [parse_report(line).seq for line in lines] == [4]  # 1-3 were dropped: a gap
    messages = [r.getMessage() for r in caplog.records if "host channel" in r.getMessage()]
    assert len([m for m in messages if m.startswith("cannot open")]) == 1
    assert messages[-1] == f"host channel {fifo}: reports reach the host again"


def test_a_host_that_does_not_read_never_stalls_a_tick(sim: SimGuest, fifo: Path) -> None:
    with reading(fifo) as host, HostReporter(fifo, "adaptive", 2.0, clock=sim.clock) as port:
        line = b"x" * 4000 + b"\n"
        while port.send(line):  # fill the pipe as a host that stopped reading would
            pass
        agent = make_agent(sim, port)
        started = time.monotonic()
        agent.run(max_ticks=5)
        assert time.monotonic() - started < 5
        assert port.dropped >= 5
        read_lines(host)  # the host reads again
        agent.run(max_ticks=6)
        lines = read_lines(host)
    assert parse_report(lines[-1]).seq == 6


def test_a_port_that_goes_away_is_opened_again(sim: SimGuest, fifo: Path) -> None:
    with HostReporter(fifo, "adaptive", 2.0, clock=sim.clock) as port:
        agent = make_agent(sim, port)
        with reading(fifo):
            agent.run(max_ticks=1)
        # The reader closed: a write now fails with EPIPE (SIGPIPE is ignored by Python).
        agent.run(max_ticks=2)
        with reading(fifo) as host:
            agent.run(max_ticks=3)
            lines = read_lines(host)
    assert [parse_report(line).seq for line in lines] == [3]


def test_guest_run_without_a_port_says_so_once_and_runs(debian, caplog) -> None:
    caplog.set_level(logging.INFO)
    assert main(["guest", "run", "--once", "--root", str(debian.path)]) == 0
    said = [m for m in caplog.messages if m.startswith("host channel")]
    assert said == [
        f"host channel: no virtio-serial port {PORT_NAME} (the host did not add one) and no "
        "virtio-vsock device; not reporting to the host"
    ]


def test_guest_run_reports_on_the_port_it_finds(debian, caplog) -> None:
    caplog.set_level(logging.INFO)
    port = debian.path / "dev" / "virtio-ports" / PORT_NAME
    port.parent.mkdir(parents=True)
    os.mkfifo(port)
    with reading(port) as host:
        assert main(["guest", "run", "--once", "--root", str(debian.path)]) == 0
        lines = read_lines(host)
    assert parse_report(lines[0]).seq == 1
    assert f"host channel: a report after every tick on {port}" in caplog.messages


def unix_vsock(path: Path) -> Vsock:
    """The agent's vsock channel with an AF_UNIX stream to `path` standing in for AF_VSOCK."""
    return Vsock(
        make_socket=lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), address=str(path)
    )


@contextmanager
def listening(path: Path) -> Iterator[socket.socket]:
    """The host's end of a stand-in vsock: a unix listener at `path`, as `host run` makes."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    server.settimeout(5)
    try:
        yield server
    finally:
        server.close()
        path.unlink()


def receive_lines(connection: socket.socket) -> list[bytes]:
    connection.setblocking(False)
    data = b""
    while True:
        try:
            chunk = connection.recv(1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    return data.splitlines()


def add_virtio_device(root: Path, name: str, device_id: int) -> None:
    device = root / "sys/bus/virtio/devices" / name
    device.mkdir(parents=True)
    (device / "device").write_text(f"0x{device_id:04x}\n")


def test_a_virtio_vsock_device_is_found_by_its_id_in_sysfs(tmp_path: Path) -> None:
    add_virtio_device(tmp_path, "virtio0", 5)  # the balloon
    assert not find_vsock(tmp_path)
    add_virtio_device(tmp_path, "virtio1", 19)
    assert find_vsock(tmp_path)


def test_a_guest_without_virtio_has_no_vsock(tmp_path: Path) -> None:
    assert not find_vsock(tmp_path)


def test_the_vsock_channel_is_named_with_or_without_a_port() -> None:
    assert parse_vsock("vsock") == Vsock(VSOCK_PORT)
    assert parse_vsock("vsock:1234") == Vsock(1234)
    assert parse_vsock("/dev/vport1p1") is None
    assert parse_vsock("") is None
    for bad in ("vsock:", "vsock:x", "vsock:0", "vsock:-1", f"vsock:{0xFFFFFFFF}"):
        with pytest.raises(ValueError, match="is not a vsock port"):
            parse_vsock(bad)


def test_on_vsock_each_tick_writes_one_report_and_reads_the_hosts_request(
    sim: SimGuest, tmp_path: Path
) -> None:
    uds = tmp_path / f"vm1.vsock_{VSOCK_PORT}"
    with (
        listening(uds) as server,
        HostReporter(unix_vsock(uds), "adaptive", 2.0, clock=sim.clock) as reporter,
    ):
        make_agent(sim, reporter).run(max_ticks=2)
        connection, _ = server.accept()
        with connection:
            assert [parse_report(line).seq for line in receive_lines(connection)] == [1, 2]
            connection.sendall(encode_request(ReleaseRequest(7, 64 << 20, 5.0)))
            assert reporter.poll_request() == ReleaseRequest(7, 64 << 20, 5.0)


def test_on_vsock_without_a_listener_reports_are_dropped_until_it_comes(
    sim: SimGuest, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    uds = tmp_path / f"vm1.vsock_{VSOCK_PORT}"
    with HostReporter(unix_vsock(uds), "adaptive", 2.0, clock=sim.clock) as reporter:
        agent = make_agent(sim, reporter)
        started = time.monotonic()
        agent.run(max_ticks=3)
        assert time.monotonic() - started < 5
        assert (reporter.sent, reporter.dropped) == (0, 3)
        with listening(uds) as server:
            agent.run(max_ticks=4)
            connection, _ = server.accept()
            with connection:
                lines = receive_lines(connection)
    assert [parse_report(line).seq for line in lines] == [4]
    said = [m for m in caplog.messages if m.startswith("cannot connect")]
    assert len(said) == 1
    assert "no `vmreclaim host run` listening" in said[0]
    assert (
        f"host channel vsock port {VSOCK_PORT} of the host: reports reach the host again"
        in caplog.messages
    )


def test_on_vsock_a_host_that_closes_is_connected_to_again(sim: SimGuest, tmp_path: Path) -> None:
    uds = tmp_path / f"vm1.vsock_{VSOCK_PORT}"
    with (
        listening(uds) as server,
        HostReporter(unix_vsock(uds), "adaptive", 2.0, clock=sim.clock) as reporter,
    ):
        agent = make_agent(sim, reporter)
        agent.run(max_ticks=1)
        first, _ = server.accept()
        first.close()  # the host restarts
        agent.run(max_ticks=3)  # a tick sees the close, a later one connects again
        second, _ = server.accept()
        with second:
            lines = receive_lines(second)
    assert [parse_report(line).seq for line in lines][-1] == 3


def test_on_vsock_a_host_that_does_not_read_never_stalls_a_tick(
    sim: SimGuest, tmp_path: Path
) -> None:
    uds = tmp_path / f"vm1.vsock_{VSOCK_PORT}"
    with (
        listening(uds) as server,
        HostReporter(unix_vsock(uds), "adaptive", 2.0, clock=sim.clock) as reporter,
    ):
        reporter.send(b"\n")
        connection, _ = server.accept()
        with connection:
            while reporter.send(b"x" * 4000 + b"\n"):  # the host stops reading
                pass
            agent = make_agent(sim, reporter)
            started = time.monotonic()
            agent.run(max_ticks=5)
            assert time.monotonic() - started < 5
            assert reporter.dropped >= 5


def test_a_connect_that_completes_later_is_used_without_waiting(
    sim: SimGuest,
) -> None:
    # A non-blocking TCP connect to loopback returns EINPROGRESS, as an AF_VSOCK one does
    # until the VMM answers: the reporter must not wait, and must use it once it completes.
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(5)
        address = server.getsockname()
        channel = Vsock(make_socket=lambda: socket.socket(socket.AF_INET), address=address)
        with HostReporter(channel, "adaptive", 2.0, clock=sim.clock) as reporter:
            agent = make_agent(sim, reporter)
            agent.run(max_ticks=3)
            connection, _ = server.accept()
            with connection:
                time.sleep(0.05)
                seqs = [parse_report(line).seq for line in receive_lines(connection)]
    assert seqs[-1:] == [3]


def test_guest_run_uses_vsock_when_the_guest_has_it_and_no_port(debian, caplog) -> None:
    caplog.set_level(logging.INFO)
    add_virtio_device(debian.path, "virtio3", 19)
    # On this machine the AF_VSOCK connect fails (no VMM on the other end): the tick goes on.
    assert main(["guest", "run", "--once", "--root", str(debian.path)]) == 0
    assert (
        f"host channel: a report after every tick on vsock port {VSOCK_PORT} of the host"
        in caplog.messages
    )


def test_guest_run_rejects_a_bad_vsock_port(debian) -> None:
    assert main(["guest", "run", "--once", "--root", str(debian.path), "--channel", "vsock:x"]) == 2


def test_the_channel_option_keeps_vsock_as_said_and_a_device_absolute() -> None:
    from vmreclaim.guest.config import load_settings

    assert load_settings(None, channel="vsock:5").agent.channel_path == "vsock:5"
    assert load_settings(None, channel="vsock").agent.channel_path == "vsock"
    device = load_settings(None, channel="port").agent.channel_path
    assert device == str(Path("port").absolute())
