"""The daemon's view as top reads it: the JSON round trip, the VMs a user names, and a socket
that answers with something else."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from vmreclaim.errors import HostError
from vmreclaim.host import top_view
from vmreclaim.host.fleet import FleetPoll, VmFailure
from vmreclaim.host.history import track
from vmreclaim.host.records import BalloonState, GuestStats, HostMemory, VmSample
from vmreclaim.host.sources import SourceList
from vmreclaim.host.top import snapshot_json, view_from_json
from vmreclaim.host.top_view import restricted, settled_view
from vmreclaim.host.view import NoDaemon, read_view
from vmreclaim.qemu.footprint import Footprint

MIB = 1 << 20


def view() -> dict[str, object]:
    stats = GuestStats(1000.0, 700 * MIB, 300 * MIB, 400 * MIB, 50 * MIB, 3, 9)
    sample = VmSample(
        "db",
        "/run/vms/db.qmp",
        42,
        Footprint(1000.0, 500 * MIB, 450 * MIB),
        BalloonState(768 * MIB, 640 * MIB, True),
        stats,
    )
    _, observation = track(None, sample, 1005.0)
    poll = FleetPoll((observation,), (VmFailure("/run/vms/web.qmp", "no answer", True),))
    return snapshot_json(poll, HostMemory(8 << 30, 2 << 30, 1.5, None), 1005.0, 3.0)


def test_the_published_view_reads_back_as_the_records_it_came_from() -> None:
    published = view_from_json(view())
    (vm,) = published.poll.vms
    assert (vm.sample.name, vm.sample.pid, vm.sample.host_bytes) == ("db", 42, 450 * MIB)
    assert vm.sample.balloon == BalloonState(768 * MIB, 640 * MIB, True)
    assert vm.stats_age_s == 5.0
    assert vm.stats_stale(published.max_stats_age_s)
    assert published.poll.unreachable == (VmFailure("/run/vms/web.qmp", "no answer", True),)
    assert published.host is not None
    assert published.host.available_bytes == 2 << 30


def test_a_vm_still_connecting_reads_back_as_connecting() -> None:
    entry: dict[str, object] = {"address": "/run/vms/new.qmp", "error": "connecting"}
    document = {**view(), "unreachable": [{**entry, "hung": False, "connecting": True}]}
    (failure,) = view_from_json(document).poll.unreachable
    assert failure.connecting
    # A view from a daemon before the field: not connecting.
    older = {**document, "unreachable": [{**entry, "hung": False}]}
    assert not view_from_json(older).poll.unreachable[0].connecting


def test_top_once_waits_for_a_new_daemons_first_connections(monkeypatch) -> None:
    connecting = {"address": "/run/vms/db.qmp", "error": "connecting", "hung": False}
    first: dict[str, Any] = {"vms": [], "unreachable": [{**connecting, "connecting": True}]}
    later: list[dict[str, Any]] = [first, first, {"vms": [{"name": "db"}], "unreachable": []}]
    reads: list[int] = []

    def read(socket: Path, timeout: float) -> dict[str, Any]:
        reads.append(1)
        return later[len(reads)]

    monkeypatch.setattr(top_view, "read_view", read)
    settled = settled_view(Path("/run/host.sock"), first, wait=5.0, timeout=1.0)
    assert settled == later[2]
    assert len(reads) == 2
    # A VM that never connects: the view as it is once `wait` is over.
    monkeypatch.setattr(top_view, "read_view", lambda socket, timeout: first)
    assert settled_view(Path("/run/host.sock"), first, wait=0.5, timeout=1.0) == first


def test_top_shows_only_the_vms_it_names_and_says_which_the_daemon_does_not_watch() -> None:
    sources = SourceList(qmp=("/run/vms/d*.qmp", "/run/other.qmp"))
    shown = restricted(view(), sources, Path("/run/vmreclaim-host/host.sock"))
    assert [vm["address"] for vm in shown["vms"]] == ["/run/vms/db.qmp"]
    (missing,) = shown["unreachable"]
    assert missing["address"] == "/run/other.qmp"
    assert "not watched by the daemon" in missing["error"]


def test_a_socket_that_answers_garbage_is_an_error_and_a_missing_one_no_daemon(
    tmp_path: Path,
) -> None:
    path = tmp_path / "garbage.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        listener.listen(1)

        def answer() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.sendall(b"HTTP/1.0 200 OK\r\n\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        with pytest.raises(HostError, match="not JSON"):
            read_view(path, 2.0)
        thread.join(5)
    with pytest.raises(NoDaemon) as missing:
        read_view(tmp_path / "absent.sock", 2.0)
    assert missing.value.stale is False
