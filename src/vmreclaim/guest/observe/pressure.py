"""Pressure stall information: /proc/pressure/{memory,io} (Linux 4.20+, CONFIG_PSI, psi=1).

When PSI is compiled out or disabled at boot the kernel does not create /proc/pressure at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vmreclaim.guest.observe._files import read_text


@dataclass(frozen=True)
class PressureLine:
    """Share of wall time (percent) some/all tasks stalled, averaged over 10/60/300 s."""

    avg10: float
    avg60: float
    avg300: float
    total_us: int  # cumulative stall time in microseconds: diff two snapshots for a rate


@dataclass(frozen=True)
class Pressure:
    some: PressureLine
    full: PressureLine | None  # absent in /proc/pressure/cpu before 5.13; present for memory, io


def _parse_line(fields: list[str]) -> PressureLine | None:
    values = dict(field.partition("=")[::2] for field in fields)
    try:
        return PressureLine(
            avg10=float(values["avg10"]),
            avg60=float(values["avg60"]),
            avg300=float(values["avg300"]),
            total_us=int(values["total"]),
        )
    except (KeyError, ValueError):
        return None


def parse_pressure(text: str) -> Pressure | None:
    """Parse "some avg10=0.00 avg60=0.00 avg300=0.00 total=0" and the `full` line."""
    lines: dict[str, PressureLine | None] = {}
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] in ("some", "full"):
            lines[fields[0]] = _parse_line(fields[1:])
    some = lines.get("some")
    if some is None:
        return None
    return Pressure(some=some, full=lines.get("full"))


def read_pressure(resource: str, root: Path = Path("/")) -> Pressure | None:
    """/proc/pressure/<resource> ("memory", "io", "cpu") under `root`, or None."""
    text = read_text(root, f"/proc/pressure/{resource}")
    return None if text is None else parse_pressure(text)
