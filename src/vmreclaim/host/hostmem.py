"""The host's own memory: MemAvailable from /proc/meminfo and memory PSI from
/proc/pressure/memory. The /proc root is a parameter so tests feed verbatim kernel text; the
parsers are the guest agent's public ones (the files are the same kernel's), the reading is
ours: the guest's file helpers are private to it."""

from __future__ import annotations

import logging
from pathlib import Path

from vmreclaim.guest.observe.memory import parse_meminfo
from vmreclaim.guest.observe.pressure import parse_pressure
from vmreclaim.host.records import HostMemory

log = logging.getLogger(__name__)


def _read(proc: Path, name: str) -> str | None:
    """A /proc file's text; None when it is absent (no PSI in this kernel) or unreadable."""
    path = proc / name
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError as err:
        log.debug("cannot read %s: %s", path, err)
        return None


def read_host_memory(proc: Path = Path("/proc")) -> HostMemory | None:
    """None when MemTotal or MemAvailable cannot be read: the policy then does nothing."""
    text = _read(proc, "meminfo")
    if text is None:
        return None
    meminfo = parse_meminfo(text)
    if meminfo.total_bytes is None or meminfo.available_bytes is None:
        log.debug("host meminfo lacks %s", ", ".join(meminfo.missing))
        return None
    pressure_text = _read(proc, "pressure/memory")
    pressure = parse_pressure(pressure_text) if pressure_text is not None else None
    return HostMemory(
        total_bytes=meminfo.total_bytes,
        available_bytes=meminfo.available_bytes,
        psi_some_avg10=pressure.some.avg10 if pressure else None,
        psi_full_avg10=pressure.full.avg10 if pressure and pressure.full else None,
    )
