"""`vmreclaim guest reclaim`: one shot of reclaim down to a floor, then compaction, measured.

`reclaim_once` observes, splits the huge pages processes partly freed, reclaims, compacts and
observes again; the report says what was freed and how free memory moved between reportable and
unreportable blocks.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vmreclaim.errors import VmreclaimError
from vmreclaim.guest.actions import (
    DEFAULT_TIME_LIMIT_S,
    CompactResult,
    ControlWriter,
    ReclaimResult,
    SplitResult,
    compact_memory,
    reclaim_cache,
    set_reporting_order,
    split_huge_pages,
    undo_unfinished_holds,
    write_control_file,
)
from vmreclaim.guest.observe import FreeSplit, Observation, observe
from vmreclaim.units import format_size

log = logging.getLogger(__name__)

# WSL2's gradual mode stops at 128 MiB of reclaimable cache: enough for the files every process
# keeps touching (libc, the shell, the agent itself) so that reclaim does not cause refaults.
DEFAULT_KEEP_BYTES = 128 << 20
# Split partly freed huge pages when they hold more than this: a few MiB of anonymous pages are
# always in flight between the per-CPU batches and the LRU, which the measure counts too.
SPLIT_MIN_BYTES = 16 << 20
# After a split, compact up to this many more times, this far apart, while more than
# 4 * SPLIT_MIN_BYTES of free memory stays unreportable (as adaptive does, at its tick).
SPLIT_FOLLOWUP_COMPACTIONS = 3
SPLIT_FOLLOWUP_PAUSE_S = 2.0


@dataclass(frozen=True)
class OneShotReport:
    keep_bytes: int
    before: Observation
    after: Observation
    reclaim: ReclaimResult | None  # None: the cache was already at or below keep_bytes
    compaction: CompactResult | None  # None: the kernel cannot compact
    reporting_order: int | None  # the order set before compacting, if asked to
    split: SplitResult | None = None  # None: too little held in partly freed huge pages

    @property
    def reclaimed_bytes(self) -> int | None:
        """How much reclaimable cache went away, measured from /proc/meminfo before and after."""
        before = self.before.reclaimable_cache_bytes
        after = self.after.reclaimable_cache_bytes
        return None if before is None or after is None else before - after


def reclaim_once(
    root: Path,
    keep_bytes: int = DEFAULT_KEEP_BYTES,
    *,
    page_size: int = 4096,
    allow_swap: bool = False,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    reporting_order: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    writer: ControlWriter = write_control_file,
    sleep: Callable[[float], None] = time.sleep,
) -> OneShotReport:
    """Split partly freed huge pages, reclaim cache down to `keep_bytes`, set the reporting order
    if given, then compact."""
    undo_unfinished_holds(root)
    before = observe(root, clock, page_size)
    cache = before.reclaimable_cache_bytes
    if cache is None:
        raise VmreclaimError(
            "cannot tell how much page cache there is: /proc/meminfo lacks "
            + ", ".join(before.memory.missing or ("everything",)),
            hint="run this inside a Linux guest with /proc mounted",
        )
    split = None
    held = before.huge_pages.partly_freed_bytes
    if held is not None and held >= SPLIT_MIN_BYTES and before.reclaim.drop_caches:
        split = split_huge_pages(root, clock=clock, writer=writer)
        log.info("split huge pages holding %s in %.2f s", format_size(held), split.elapsed_s)
    result = None
    if cache > keep_bytes:
        result = reclaim_cache(
            root,
            cache - keep_bytes,
            before.reclaim,
            swap_active=before.memory.swap_active,
            allow_swap=allow_swap,
            page_size=page_size,
            time_limit_s=time_limit_s,
            clock=clock,
            writer=writer,
        )
        log.info(
            "reclaim %s by %s: %s after %d writes",
            format_size(cache - keep_bytes),
            result.plan.method,
            result.stop,
            result.writes,
        )
    if reporting_order is not None:
        set_reporting_order(root, reporting_order, writer=writer)
    compaction = None
    after = before
    if before.reclaim.compact_memory:
        compaction = compact_memory(root, clock=clock, writer=writer)
        after = observe(root, clock, page_size)
        for _ in range(SPLIT_FOLLOWUP_COMPACTIONS if split else 0):
            if after.free is None or after.free.unreportable_bytes <= SPLIT_MIN_BYTES * 4:
                break
            # One pass right after a split can leave much of what it freed in small blocks,
            # and a pass at once after it moves nothing; a later one does (benchmark notes).
            sleep(SPLIT_FOLLOWUP_PAUSE_S)
            stuck = format_size(after.free.unreportable_bytes)
            log.info("compacting again: %s free in small blocks after the split", stuck)
            compaction = compact_memory(root, clock=clock, writer=writer)
            after = observe(root, clock, page_size)
    else:
        log.warning("not compacting: /proc/sys/vm/compact_memory is missing")
        after = observe(root, clock, page_size)
    return OneShotReport(keep_bytes, before, after, result, compaction, reporting_order, split)


def _free(split: FreeSplit | None) -> dict[str, int] | None:
    if split is None:
        return None
    return {
        "reportable_bytes": split.reportable_bytes,
        "unreportable_bytes": split.unreportable_bytes,
    }


def render_json(report: OneShotReport) -> str:
    """One JSON object with stable keys, bytes as ints, null where unknown or not done."""
    result = report.reclaim
    document = {
        "schema": 1,
        "keep_bytes": report.keep_bytes,
        "reclaimed_bytes": report.reclaimed_bytes,
        "reclaimable_cache_bytes": {
            "before": report.before.reclaimable_cache_bytes,
            "after": report.after.reclaimable_cache_bytes,
        },
        "free": {"before": _free(report.before.free), "after": _free(report.after.free)},
        "reclaim": None
        if result is None
        else {
            "method": result.plan.method,
            "swappiness_key": result.plan.swappiness_key,
            "reason": result.plan.reason,
            "requested_bytes": result.requested_bytes,
            "confirmed_bytes": result.confirmed_bytes,
            "writes": result.writes,
            "stop": result.stop,
            "elapsed_s": round(result.elapsed_s, 3),
        },
        "compacted": report.compaction is not None,
        "percpu_lists_flushed": report.compaction is not None and report.compaction.flushed,
        "partly_freed_huge_page_bytes": {
            "before": report.before.huge_pages.partly_freed_bytes,
            "after": report.after.huge_pages.partly_freed_bytes,
        },
        "split_huge_pages": report.split is not None,
        "reporting_order": report.reporting_order,
    }
    return json.dumps(document, indent=2, sort_keys=True)


def _change(before: int | None, after: int | None) -> str:
    if before is None or after is None:
        return "unknown"
    return f"{format_size(before)} -> {format_size(after)}"


def render_text(report: OneShotReport) -> str:
    result = report.reclaim
    before, after = report.before, report.after
    keep = format_size(report.keep_bytes)
    if result is None:
        lines = [f"nothing to reclaim: the cache is within the {keep} kept"]
    else:
        key = " swappiness=0" if result.plan.swappiness_key else ""
        lines = [
            f"reclaim: {result.plan.method}{key}, {result.writes} write(s), stopped: "
            f"{result.stop}, {result.elapsed_s:.1f} s ({result.plan.reason})"
        ]
    held = _change(before.huge_pages.partly_freed_bytes, after.huge_pages.partly_freed_bytes)
    if report.split is not None:
        lines.append(f"huge pages split: {report.split.elapsed_s:.1f} s")
    lines.append(f"held in partly freed huge pages: {held}")
    reclaimed = report.reclaimed_bytes
    cache = _change(before.reclaimable_cache_bytes, after.reclaimable_cache_bytes)
    lines.append(f"reclaimed: {'unknown' if reclaimed is None else format_size(reclaimed)}")
    lines.append(f"reclaimable cache: {cache} (keep {keep})")
    old, new = before.free, after.free
    if old is not None and new is not None:
        lines.append(f"free, reportable: {_change(old.reportable_bytes, new.reportable_bytes)}")
        lines.append(
            f"free, unreportable: {_change(old.unreportable_bytes, new.unreportable_bytes)}"
        )
    if report.compaction is None:
        lines.append("compaction: not available")
    else:
        flushed = (
            ", the per-CPU free lists flushed first (their pages count as free again, some of "
            "them in blocks too small to report)"
            if report.compaction.flushed
            else ""
        )
        lines.append(f"compaction: {report.compaction.elapsed_s:.1f} s{flushed}")
    return "\n".join(lines)
