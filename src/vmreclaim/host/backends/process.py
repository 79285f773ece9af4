"""The VMM process behind a backend: found from its socket's peer, and its footprint.

Every backend with a local process (QEMU, libvirt's QEMU, Cloud Hypervisor, Firecracker) reads
the same /proc files, so this module knows no hypervisor and imports no hypervisor library.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

from vmreclaim.errors import VmUnreachableError
from vmreclaim.qemu.footprint import Footprint, ProcessFootprint

log = logging.getLogger(__name__)

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

EXACT_FOOTPRINT_EVERY = 300.0
"""Seconds between two exact (smaps) readings of a VMM's footprint; see FootprintSampler. At
about 3 ms of CPU a reading, 500 VMs cost 0.5 % of a CPU; the statm readings between follow
the guest RAM to within the VMM's own anonymous memory."""


def peer_pid(sock: socket.socket) -> int:
    """The pid of the process at the other end of a connected unix socket (SO_PEERCRED: the
    kernel records the pid of the process that called listen())."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, _uid, _gid = struct.unpack("3i", creds)
    return int(pid)


def read_statm(path: Path) -> tuple[int, int]:
    """The resident and the shared (file and shmem) bytes of /proc/PID/statm: seven numbers in
    pages, the kernel's task_statm. Read with os calls: pathlib's read_text costs twice as much
    (16 against 8 us here), and this runs for every VM at every poll. Raises
    ProcessLookupError when the process is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError as err:
        raise ProcessLookupError(f"{path} is gone") from err
    try:
        fields = os.read(fd, 256).split()
    finally:
        os.close(fd)
    return int(fields[1]) * _PAGE_SIZE, int(fields[2]) * _PAGE_SIZE


class FootprintSampler:
    """A VMM's footprint every cycle, at a fraction of smaps' cost.

    /proc/PID/smaps costs the kernel a walk of every mapping: about 8,000 lines, 2 ms of kernel
    time and 1 ms of parsing for a small paused QEMU here, so read for 500 VMs every 30 s it
    alone would cost 5 % of a CPU. So the exact guest-RAM figure is read every `exact_every`
    seconds (the first time at once, then at a random phase so VMs spread out), and in between
    the guest RAM moves with the process's anonymous resident memory from /proc/PID/statm (one
    short line, resident minus shared): guest RAM is the largest anonymous mapping
    (footprint.guest_ram_mapping), and whatever anonymous memory the process gains or loses
    between two exact readings is guest RAM, to within the VMM's own allocations. File pages
    (the VMM's binary and libraries, which the host may evict and fault back) do not move it.
    """

    def __init__(
        self,
        pid: int,
        ram_bytes: int | None,
        proc: Path,
        *,
        exact_every: float = EXACT_FOOTPRINT_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._exact_sampler = ProcessFootprint(pid, ram_bytes, proc)
        self._statm = proc / str(pid) / "statm"
        self._exact_every = exact_every
        self._clock = clock
        self._exact: Footprint | None = None
        self._exact_anon_bytes = 0
        self._next_exact = 0.0
        self.exact_at: float | None = None
        """Wall-clock time of the last exact reading."""

    def sample(self) -> Footprint:
        """Raises ProcessLookupError when the process is gone."""
        now = self._clock()
        if self._exact is None or now >= self._next_exact:
            self._exact = self._exact_sampler.sample()
            resident, shared = read_statm(self._statm)
            self._exact_anon_bytes = resident - shared
            self.exact_at = self._exact.timestamp
            first = self._next_exact == 0.0
            self._next_exact = now + self._exact_every * (random.random() if first else 1.0)
            return self._exact
        resident, shared = read_statm(self._statm)
        exact = self._exact
        guest = exact.guest_ram_bytes
        if guest is not None:
            guest = min(resident, max(0, guest + resident - shared - self._exact_anon_bytes))
        return Footprint(time.time(), resident, guest)


def sample_footprint(
    sampler: FootprintSampler | None, name: str, pid: int | None
) -> Footprint | None:
    """The process's footprint now; None when there is no process to read (a remote VM) or
    /proc/PID is not ours to read (another user's VMM: its API works, its smaps does not). A
    process that is gone means the VM went away."""
    if sampler is None:
        return None
    try:
        return sampler.sample()
    except ProcessLookupError as err:
        raise VmUnreachableError(f"{name}: VMM process {pid} is gone") from err
    except PermissionError:
        log.debug("%s: cannot read /proc/%s", name, pid)
        return None
