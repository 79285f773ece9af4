"""Shared fixtures. Tests marked `vm` boot real QEMU guests; every test checks afterwards that no
lab QEMU it started is left running."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


def lab_qemu_pids() -> set[int]:
    """PIDs of running lab QEMUs (they are named vmreclaim-lab on their command line)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system" in cmdline and b"vmreclaim-lab" in cmdline:
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
