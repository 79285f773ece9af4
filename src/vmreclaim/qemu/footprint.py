"""A QEMU process's memory on the host: what the VM really costs.

Two figures: the process's resident set (VmRSS) and the resident size of the guest-RAM mapping
alone, from /proc/PID/smaps. Both are read with one file read each, cheap enough to sample at
10 Hz. The /proc root is a parameter so tests feed verbatim kernel text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

_KIB = 1024
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Footprint:
    """One sample. `guest_ram_bytes` is None when no guest-RAM mapping was found."""

    timestamp: float
    rss_bytes: int
    guest_ram_bytes: int | None


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    anonymous: bool

    @property
    def size(self) -> int:
        return self.end - self.start


def parse_status_rss(text: str) -> int:
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * _KIB
    raise ValueError("VmRSS missing from /proc/PID/status")


def _is_header(line: str) -> bool:
    return bool(line) and line[0] in _HEX and "-" in line.split(" ", 1)[0]


def parse_mappings(smaps_or_maps: str) -> list[Mapping]:
    """The mappings of a /proc/PID/maps or smaps text; anonymous = no path (or [anon:...])."""
    mappings = []
    for line in smaps_or_maps.splitlines():
        if not _is_header(line):
            continue
        fields = line.split(maxsplit=5)
        start, _, end = fields[0].partition("-")
        path = fields[5].strip() if len(fields) > 5 else ""
        anonymous = path == "" or path.startswith("[anon:")
        mappings.append(Mapping(int(start, 16), int(end, 16), anonymous))
    return mappings


def _merge_adjacent(mappings: list[Mapping]) -> list[Mapping]:
    """Anonymous regions that touch, as one: the kernel splits a region into several entries
    when part of it is madvised (THP, MADV_DONTDUMP), and QEMU's RAM block may already be split
    when it is first seen."""
    merged: list[Mapping] = []
    for mapping in sorted((m for m in mappings if m.anonymous), key=lambda m: m.start):
        if merged and merged[-1].end == mapping.start:
            merged[-1] = Mapping(merged[-1].start, mapping.end, anonymous=True)
        else:
            merged.append(mapping)
    return merged


def guest_ram_mapping(mappings: list[Mapping], ram_size: int | None) -> Mapping | None:
    """QEMU maps guest RAM as one anonymous region: the smallest at least `ram_size` long, or
    the largest anonymous one when the size is unknown."""
    anonymous = _merge_adjacent(mappings)
    if ram_size is not None:
        fitting = [m for m in anonymous if m.size >= ram_size]
        return min(fitting, key=lambda m: m.size) if fitting else None
    return max(anonymous, key=lambda m: m.size) if anonymous else None


def resident_in_range(smaps: str, start: int, end: int) -> int:
    """Sum of Rss over the smaps entries inside [start, end): the kernel may split one region
    into several entries (madvise, THP), and all of them are guest RAM."""
    total = 0
    inside = False
    for line in smaps.splitlines():
        if _is_header(line):
            low, _, high = line.split(" ", 1)[0].partition("-")
            inside = int(low, 16) >= start and int(high, 16) <= end
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1]) * _KIB
    return total


class ProcessFootprint:
    """Samples one QEMU process. The guest-RAM range is found once, at the first sample."""

    def __init__(self, pid: int, ram_size: int | None = None, proc: Path = Path("/proc")) -> None:
        self.pid = pid
        self.ram_size = ram_size
        self._dir = proc / str(pid)
        self._ram: Mapping | None = None

    def sample(self) -> Footprint:
        """Raises ProcessLookupError when the process is gone."""
        try:
            rss = parse_status_rss((self._dir / "status").read_text())
            smaps = (self._dir / "smaps").read_text()
        except FileNotFoundError as err:
            raise ProcessLookupError(f"process {self.pid} is gone") from err
        if self._ram is None:
            self._ram = guest_ram_mapping(parse_mappings(smaps), self.ram_size)
        guest = resident_in_range(smaps, self._ram.start, self._ram.end) if self._ram else None
        return Footprint(time.time(), rss, guest)
