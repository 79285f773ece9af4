"""Shared fixtures. Tests marked `vm` boot real QEMU guests; every test checks afterwards that no
lab QEMU it started is left running."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rpartition(")")[2].split()[1])


def _foreign(pid: int) -> bool:
    """True for a QEMU that another living process tree owns (an experiment run beside the
    suite): its parent is alive and neither this process nor init. Ours, and orphans that a
    dead parent left behind, are not foreign."""
    parent = _parent(pid)
    if parent in (0, 1):
        return False
    ancestor = parent
    while ancestor not in (0, 1):
        if ancestor == os.getpid():
            return False
        ancestor = _parent(ancestor)
    return True


def lab_qemu_pids() -> set[int]:
    """PIDs of running lab QEMUs (they are named vmreclaim-lab on their command line), leaving
    out those that another process tree started and still owns."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ours = b"qemu-system" in cmdline and b"vmreclaim-lab" in cmdline
        if ours and not _foreign(int(entry.name)):
            pids.add(int(entry.name))
    return pids


@pytest.fixture(autouse=True)
def no_leftover_qemu() -> Iterator[None]:
    before = lab_qemu_pids()
    yield
    left = lab_qemu_pids() - before
    assert not left, f"the test left lab QEMU processes running: {sorted(left)}"


@pytest.fixture(scope="session")
def guest_image():
    """The lab's default guest image, built (or found in the cache) once per session."""
    from vmreclaim.lab import build_image

    return build_image()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="session", autouse=True)
def no_qemu_survives_the_suite() -> Iterator[None]:
    before = lab_qemu_pids()
    yield
    left = lab_qemu_pids() - before
    assert not left, f"lab QEMU processes survived the test suite: {sorted(left)}"


@pytest.fixture(autouse=True)
def _private_daemon_socket(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    """In-process `top` and `host run` use a socket of the test's own, not the one a real
    daemon on this machine may be serving at /run/vmreclaim-host/host.sock."""
    from vmreclaim.host import view

    socket = tmp_path_factory.mktemp("run") / view.SOCKET_NAME
    monkeypatch.setattr(view, "default_socket_path", lambda: socket)
