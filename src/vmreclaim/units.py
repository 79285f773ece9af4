"""Memory sizes: parsing what users type and printing bytes for people.

All amounts inside vmreclaim are bytes (ints); these two functions are the only boundary.
Suffixes are binary, as in QEMU's `-m` and the kernel's `memory.reclaim`: 1K = 1024 bytes.
Standard library only: the guest agent imports this module.
"""

from __future__ import annotations

import re

from vmreclaim.errors import UsageError

_SHIFTS = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Parse "512M", "2G", "1.5GiB", "4096" or "300MB" into bytes (binary units)."""
    match = _SIZE.match(text)
    if match is None:
        raise UsageError(
            f"bad size {text!r}",
            hint="write a number with an optional K, M, G or T suffix (binary units), "
            "e.g. 512M or 2G",
        )
    number, suffix = match.groups()
    value = int(float(number) * (1 << _SHIFTS[suffix.upper()]))
    return value


def format_size(num_bytes: int | float) -> str:
    """Bytes for people: 1536 MiB -> "1.5 GiB", 300 -> "300 B", -2048 -> "-2.0 KiB"."""
    sign = "-" if num_bytes < 0 else ""
    value = float(abs(num_bytes))
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{sign}{value:.0f} {unit}" if unit == "B" else f"{sign}{value:.1f} {unit}"
        value /= 1024
    return f"{sign}{value:.1f} TiB"
