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


def peer_pid(sock: socket.socket) -> int:
    """The pid of the process at the other end of a connected unix socket (SO_PEERCRED: the
    kernel records the pid of the process that called listen())."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, _uid, _gid = struct.unpack("3i", creds)
    return int(pid)


class FootprintSampler:
    """A VMM's footprint every cycle, at a fraction of smaps' cost.

    /proc/PID/smaps costs the kernel a walk of every mapping (about 8,000 lines and 7 ms of
    CPU for a small paused QEMU here), which polled once a second for 50 VMs is 30 % of a CPU.
    So the exact guest-RAM figure is read every `exact_every` seconds (the first time at once,
    then at a random phase so VMs spread out), and in between the guest RAM moves with the RSS
    from /proc/PID/statm (one short line): whatever the process gains or loses between two
    exact readings is guest RAM, to within the VMM's own small allocations.
    """

    def __init__(
        self,
        pid: int,
        ram_bytes: int | None,
        proc: Path,
        *,
        exact_every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._exact_sampler = ProcessFootprint(pid, ram_bytes, proc)
        self._statm = proc / str(pid) / "statm"
        self._exact_every = exact_every
        self._clock = clock
        self._exact: Footprint | None = None
        self._next_exact = 0.0
        self.exact_at: float | None = None
        """Wall-clock time of the last exact reading."""

    def sample(self) -> Footprint:
        """Raises ProcessLookupError when the process is gone."""
        now = self._clock()
        if self._exact is None or now >= self._next_exact:
            self._exact = self._exact_sampler.sample()
            self.exact_at = self._exact.timestamp
            first = self._next_exact == 0.0
            self._next_exact = now + self._exact_every * (random.random() if first else 1.0)
            return self._exact
        try:
            rss = int(self._statm.read_text().split()[1]) * _PAGE_SIZE
        except FileNotFoundError as err:
            raise ProcessLookupError(f"{self._statm} is gone") from err
        exact = self._exact
        guest = exact.guest_ram_bytes
        if guest is not None:
            guest = min(rss, max(0, guest + rss - exact.rss_bytes))
        return Footprint(time.time(), rss, guest)


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
