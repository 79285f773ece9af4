"""Transparent huge pages: the mode, and memory held in huge pages that processes partly freed.

When a process releases less than a whole huge page (madvise(MADV_DONTNEED), munmap, as glibc's
trimming, Go's scavenger and the JVM's uncommit do), the kernel unmaps those pages but keeps the
whole 2 MiB folio allocated on its deferred split queue until a shrinker runs under memory
pressure (deferred_split_folio() and deferred_split_scan() in mm/huge_memory.c). Until then
MemFree does not rise and free page reporting cannot return any of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vmreclaim.guest.observe._files import read_text
from vmreclaim.guest.observe.memory import MemInfo, VmStat

THP_ENABLED_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"
ThpMode = Literal["always", "madvise", "never"]
_SELECTED = re.compile(r"\[(\w+)\]")


@dataclass(frozen=True)
class HugePages:
    """mode: the bracketed word of THP's `enabled` file; None without CONFIG_TRANSPARENT_HUGEPAGE.
    partly_freed_bytes: memory held whole by partly freed huge pages (MemInfo.unmapped_anon_bytes);
        0 without THP; None where meminfo lacks a key.
    deferred_splits, splits: /proc/vmstat's thp_deferred_split_page and thp_split_page since
        boot. Their difference is no measure of the queue: splits count every cause (swap-out,
        migration), and a queued page freed whole is never split.
    """

    mode: ThpMode | None
    partly_freed_bytes: int | None
    deferred_splits: int | None
    splits: int | None


def parse_thp_mode(text: str) -> ThpMode | None:
    """`always [madvise] never` -> "madvise"."""
    match = _SELECTED.search(text)
    if match is None or match.group(1) not in ("always", "madvise", "never"):
        return None
    mode: ThpMode = match.group(1)  # type: ignore[assignment]
    return mode


def huge_pages(root: Path, memory: MemInfo, vmstat: VmStat) -> HugePages:
    """The THP mode under `root`, and what meminfo says is held in partly freed huge pages."""
    text = read_text(root, THP_ENABLED_FILE)
    mode = None if text is None else parse_thp_mode(text)
    held = memory.unmapped_anon_bytes
    if held is not None and mode is None and not vmstat.thp_deferred_split_page:
        held = 0  # no huge pages here: what the formula sees is in flight, not held
    return HugePages(mode, held, vmstat.thp_deferred_split_page, vmstat.thp_split_page)
