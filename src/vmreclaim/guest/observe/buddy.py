"""/proc/buddyinfo: free memory by block size, and how much of it free page reporting can return.

Free page reporting hands only free blocks of at least the reporting order to the host
(mm/page_reporting.c); free memory in smaller blocks stays on the host until compaction merges it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vmreclaim.guest.observe._files import read_text

# "Node 0, zone   Normal   1218   1023    635 ..." : one count of free blocks per order from 0.
_ZONE_LINE = re.compile(r"^Node\s+(\d+),\s+zone\s+(\S+)\s+((?:\d+\s*)+)$")


@dataclass(frozen=True)
class BuddyZone:
    """One zone's free lists: `free_blocks[order]` free blocks of `2**order` pages each."""

    node: int
    zone: str
    free_blocks: tuple[int, ...]


@dataclass(frozen=True)
class BuddyInfo:
    zones: tuple[BuddyZone, ...]

    @property
    def orders(self) -> int:
        """How many orders the kernel lists (11 on x86-64: 0..10)."""
        return max((len(zone.free_blocks) for zone in self.zones), default=0)

    def free_bytes_by_order(self, page_size: int) -> tuple[int, ...]:
        """Free bytes in blocks of each order, summed over nodes and zones."""
        totals = [0] * self.orders
        for zone in self.zones:
            for order, blocks in enumerate(zone.free_blocks):
                totals[order] += blocks * (page_size << order)
        return tuple(totals)


@dataclass(frozen=True)
class FreeSplit:
    """Free memory split at the reporting order: what free page reporting can and cannot return."""

    reporting_order: int
    reportable_bytes: int  # in free blocks of order >= reporting_order
    unreportable_bytes: int  # in smaller blocks: needs compaction first
    by_order_bytes: tuple[int, ...]


def parse_buddyinfo(text: str) -> BuddyInfo:
    zones = []
    for line in text.splitlines():
        match = _ZONE_LINE.match(line.strip())
        if match is not None:
            node, zone, counts = match.groups()
            zones.append(BuddyZone(int(node), zone, tuple(int(n) for n in counts.split())))
    return BuddyInfo(tuple(zones))


def read_buddyinfo(root: Path = Path("/")) -> BuddyInfo | None:
    """/proc/buddyinfo under `root`; None when absent, unreadable or holding no zone."""
    text = read_text(root, "/proc/buddyinfo")
    if text is None:
        return None
    info = parse_buddyinfo(text)
    return info if info.zones else None


def split_free(buddy: BuddyInfo, reporting_order: int, page_size: int) -> FreeSplit:
    """Split free memory into blocks at or above `reporting_order` and blocks below it."""
    by_order = buddy.free_bytes_by_order(page_size)
    return FreeSplit(
        reporting_order=reporting_order,
        reportable_bytes=sum(by_order[reporting_order:]),
        unreportable_bytes=sum(by_order[:reporting_order]),
        by_order_bytes=by_order,
    )
