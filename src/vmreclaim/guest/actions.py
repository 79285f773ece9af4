"""Writes to the guest kernel: reclaim page cache, drop caches, compact, set the reporting order.

Each function does one kind of write through a `writer` (tests pass a fake) and returns a typed
result; OS errors become vmreclaim errors with a hint in one place, `_translate`. Which method to
use is decided by the pure `plan_reclaim`, so the daemon, the one-shot command and tests agree.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import mmap
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vmreclaim.errors import MissingDependencyError, UsageError, VmreclaimError
from vmreclaim.guest.observe._files import read_int, read_text, under
from vmreclaim.guest.observe.kernel import ReclaimInterface
from vmreclaim.guest.observe.reporting import MAX_BUDDY_ORDER, PAGE_REPORTING_ORDER_FILE

log = logging.getLogger(__name__)

MEMORY_RECLAIM_FILE = "/sys/fs/cgroup/memory.reclaim"
DROP_CACHES_FILE = "/proc/sys/vm/drop_caches"
COMPACT_MEMORY_FILE = "/proc/sys/vm/compact_memory"
SWAPPINESS_FILE = "/proc/sys/vm/swappiness"
# The ceiling of the per-CPU free lists (Linux 5.14+): 0 is the kernel's default, the zone's low
# watermark shared among its CPUs; a fraction this large brings every ceiling down to its
# floor, four batches (about 1 MiB).
PCP_HIGH_FRACTION_FILE = "/proc/sys/vm/percpu_pagelist_high_fraction"
PCP_FLUSH_FRACTION = 1_000_000
# Pages this process faults in and unmaps on each CPU while the ceiling is down: their frees are
# what flush that CPU's lists (each free above the ceiling hands up to a batch of the oldest
# back; 1,024 frees flush far more than the 55 MiB a list can hold).
PCP_FLUSH_BYTES = 4 << 20
# vm.swappiness as it was before a hold, while the hold lasts: an agent killed during a hold
# (SIGKILL, the OOM killer) leaves it at 0, and the next one to start puts it back from here.
SAVED_SWAPPINESS_FILE = "/run/vmreclaim/swappiness.saved"

# One memory.reclaim write runs until the kernel has reclaimed the whole amount or given up, and
# WSL2 users report hangs and RCU stalls in long ones: 256 MiB per write (WSL2's smallest step)
# keeps each write short and lets a time limit end the loop between writes.
MAX_RECLAIM_WRITE_BYTES = 256 << 20
DEFAULT_TIME_LIMIT_S = 30.0
DROP_PAGE_CACHE = 1  # drop_caches value: clean page cache only; 3 adds dentries and inodes
# drop_caches value 2 runs every shrinker (drop_slab()), the deferred split shrinker among them,
# without touching the page cache: on 64-bit kernels since 5.16 an inode that still has page
# cache is kept off the inode LRU (mapping_shrinkable(), "vfs: keep inodes with page cache off
# the inode shrinker LRU"), so freeing inodes frees no cached file data.
DROP_SLAB = 2

ControlWriter = Callable[[Path, str], None]
ReclaimMethod = Literal["memory.reclaim", "drop_caches", "none"]
StopReason = Literal["done", "eagain", "time-limit", "key-rejected"]


def write_control_file(path: Path, text: str) -> None:
    """Write `text` in one write(2), as `echo TEXT > PATH` does: the kernel parses each write whole.

    No O_CREAT: a knob the kernel lacks must fail with ENOENT, not appear as a regular file.
    """
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, text.encode("ascii"))
    finally:
        os.close(fd)


def _translate(err: OSError, path: Path, missing_hint: str) -> VmreclaimError:
    """The one place where an OSError from a kernel knob becomes a vmreclaim error."""
    if err.errno in (errno.EACCES, errno.EPERM):
        return UsageError(
            f"permission denied writing {path}",
            hint="run as root, e.g. `sudo vmreclaim guest reclaim`",
        )
    if err.errno == errno.EROFS:
        return MissingDependencyError(
            f"{path} is read-only here",
            hint="run the agent in the VM itself, not in a container with a read-only /proc/sys",
        )
    if err.errno == errno.ENOENT:
        return MissingDependencyError(f"{path} does not exist", hint=missing_hint)
    return VmreclaimError(f"writing {path} failed: {err.strerror or err}")


def _write(writer: ControlWriter, path: Path, text: str, missing_hint: str) -> None:
    log.debug("write %r to %s", text, path)
    try:
        writer(path, text)
    except OSError as err:
        raise _translate(err, path, missing_hint) from err


@dataclass(frozen=True)
class ReclaimPlan:
    """How to turn page cache into free memory on this kernel, and why (for logs and status)."""

    method: ReclaimMethod
    swappiness_key: bool  # append " swappiness=0" to each memory.reclaim write
    reason: str
    hold_swappiness: bool = False  # vm.swappiness at 0 for the writes (swappiness_held_at_zero)


def _bounded_plan(
    interface: ReclaimInterface, swap_active: bool, allow_swap: bool, hold_swappiness: bool
) -> ReclaimPlan | None:
    """Cases 1-3 of plan_reclaim: memory.reclaim, where it can take file pages only."""
    if interface.swappiness_key:
        return ReclaimPlan("memory.reclaim", True, "memory.reclaim with swappiness=0")
    if not swap_active:
        return ReclaimPlan("memory.reclaim", False, "no swap is active: reclaim takes cache")
    if interface.vm_swappiness == 0:
        return ReclaimPlan("memory.reclaim", False, "vm.swappiness is 0: file pages only")
    if allow_swap:
        return ReclaimPlan("memory.reclaim", False, "swapping anonymous memory is allowed")
    if hold_swappiness and interface.vm_swappiness is not None:
        return ReclaimPlan(
            "memory.reclaim",
            False,
            "swap is on and memory.reclaim has no swappiness= key: vm.swappiness held at 0 "
            "during the writes, file pages only",
            hold_swappiness=True,
        )
    return None


def plan_reclaim(
    interface: ReclaimInterface,
    swap_active: bool,
    allow_swap: bool = False,
    hold_swappiness: bool = True,
) -> ReclaimPlan:
    """Pick the reclaim method that frees page cache without pushing anonymous memory to swap.

    1. memory.reclaim with " swappiness=0" where the kernel takes the key (6.11+).
    2. memory.reclaim without the key where it cannot swap anyway: no swap is active, or
       vm.swappiness is 0 (the root cgroup v2 uses vm.swappiness, and cgroup reclaim with
       swappiness 0 scans file pages only: get_scan_count() in mm/vmscan.c, and MGLRU's
       isolate_folios() likewise), or `allow_swap`.
    3. Swap on and no key (5.19-6.10 with swap, WSL2's kernels): memory.reclaim with
       vm.swappiness held at 0 for the writes (`hold_swappiness`), which is case 2 made to
       hold. Without the hold the kernel takes anonymous pages too as soon as its file-only
       shortcut (cache_trim_mode) lapses: see the measurements in the README.
    4. Otherwise drop_caches=1. It never touches anonymous memory, but it cannot be bounded:
       it drops all clean page cache, hot files included. Refusing would leave the cache on the
       host forever; pushing anon to swap would trade host memory for guest stalls without the
       user asking for it. The same holds without memory.reclaim (cgroup v1, before 5.19).
    """
    if interface.memory_reclaim:
        bounded = _bounded_plan(interface, swap_active, allow_swap, hold_swappiness)
        if bounded is not None:
            return bounded
        reason = "memory.reclaim has no swappiness= key here and swap is on"
    elif interface.cgroup_mode == "unified":
        reason = "the root cgroup has no memory.reclaim (Linux 5.19+)"
    else:
        reason = "cgroup v2 is not mounted at /sys/fs/cgroup"
    if interface.drop_caches:
        return ReclaimPlan("drop_caches", False, f"{reason}: drop_caches=1 instead")
    return ReclaimPlan("none", False, f"{reason}, and /proc/sys/vm/drop_caches is missing")


@dataclass(frozen=True)
class ReclaimResult:
    """What a reclaim did. `confirmed_bytes`: the sum of memory.reclaim writes the kernel completed
    (each one means at least that much was reclaimed); None for drop_caches, which says nothing.
    The true amount is the caller's before/after difference of reclaimable cache."""

    plan: ReclaimPlan
    requested_bytes: int
    confirmed_bytes: int | None
    writes: int
    stop: StopReason
    elapsed_s: float


def reclaim_memory(
    root: Path,
    amount_bytes: int,
    *,
    swappiness_key: bool,
    hold_swappiness: bool = False,
    page_size: int = 4096,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    clock: Callable[[], float] = time.monotonic,
    writer: ControlWriter = write_control_file,
) -> ReclaimResult:
    """Reclaim `amount_bytes` from the root cgroup in page-aligned writes of at most 256 MiB.

    Stops when done, on EAGAIN (the kernel could not reclaim a whole write: partial success), when
    `time_limit_s` has passed between writes, or on EINVAL for the swappiness key ("key-rejected":
    the kernel lacks it, whatever its version says; the caller re-plans). `hold_swappiness`:
    vm.swappiness is 0 while the writes run.
    """
    if hold_swappiness:
        with swappiness_held_at_zero(root, writer=writer):
            return reclaim_memory(
                root,
                amount_bytes,
                swappiness_key=swappiness_key,
                page_size=page_size,
                time_limit_s=time_limit_s,
                clock=clock,
                writer=writer,
            )
    plan = ReclaimPlan("memory.reclaim", swappiness_key, "memory.reclaim")
    path = under(root, MEMORY_RECLAIM_FILE)
    suffix = " swappiness=0" if swappiness_key else ""
    start = clock()
    remaining = max(0, amount_bytes)
    confirmed = writes = 0
    stop: StopReason = "done"
    while True:
        step = min(remaining, MAX_RECLAIM_WRITE_BYTES) // page_size * page_size
        if step <= 0:
            break
        if clock() - start >= time_limit_s:
            stop = "time-limit"
            break
        writes += 1
        log.debug("write %r to %s", f"{step}{suffix}", path)
        try:
            writer(path, f"{step}{suffix}")
        except OSError as err:
            if err.errno == errno.EAGAIN:
                stop = "eagain"
                break
            if err.errno == errno.EINVAL and swappiness_key:
                stop = "key-rejected"
                break
            raise _translate(err, path, "the kernel needs cgroup v2 and Linux 5.19+") from err
        confirmed += step
        remaining -= step
    return ReclaimResult(plan, amount_bytes, confirmed, writes, stop, clock() - start)


def drop_caches(
    root: Path,
    value: int = DROP_PAGE_CACHE,
    *,
    clock: Callable[[], float] = time.monotonic,
    writer: ControlWriter = write_control_file,
) -> ReclaimResult:
    """Write `value` (1: page cache, 2: dentries and inodes, 3: both) to drop_caches.

    It frees clean cache only: dirty pages stay until written back.
    """
    if value not in (1, 2, 3):
        raise UsageError(f"bad drop_caches value {value}", hint="use 1 (page cache) or 3")
    start = clock()
    _write(writer, under(root, DROP_CACHES_FILE), str(value), "the kernel lacks drop_caches")
    plan = ReclaimPlan("drop_caches", False, f"drop_caches={value}")
    return ReclaimResult(plan, 0, None, 1, "done", clock() - start)


def reclaim_cache(
    root: Path,
    amount_bytes: int,
    interface: ReclaimInterface,
    *,
    swap_active: bool,
    allow_swap: bool = False,
    page_size: int = 4096,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    clock: Callable[[], float] = time.monotonic,
    writer: ControlWriter = write_control_file,
) -> ReclaimResult:
    """Reclaim about `amount_bytes` of page cache by the method `plan_reclaim` picks."""
    plan = plan_reclaim(interface, swap_active, allow_swap)
    log.debug("reclaim %d bytes: %s", amount_bytes, plan.reason)
    if plan.method == "none":
        raise MissingDependencyError(
            f"no way to reclaim page cache: {plan.reason}",
            hint="use a kernel with cgroup v2 memory.reclaim (Linux 5.19+) or /proc/sys mounted",
        )
    if plan.method == "drop_caches":
        dropped = drop_caches(root, clock=clock, writer=writer)
        return dataclasses.replace(dropped, plan=plan, requested_bytes=amount_bytes)
    result = reclaim_memory(
        root,
        amount_bytes,
        swappiness_key=plan.swappiness_key,
        hold_swappiness=plan.hold_swappiness,
        page_size=page_size,
        time_limit_s=time_limit_s,
        clock=clock,
        writer=writer,
    )
    if result.stop == "key-rejected":
        log.info("the kernel rejects memory.reclaim's swappiness= key; planning without it")
        without_key = dataclasses.replace(interface, swappiness_key=False)
        return reclaim_cache(
            root,
            amount_bytes - (result.confirmed_bytes or 0),
            without_key,
            swap_active=swap_active,
            allow_swap=allow_swap,
            page_size=page_size,
            time_limit_s=max(0.0, time_limit_s - result.elapsed_s),
            clock=clock,
            writer=writer,
        )
    return dataclasses.replace(result, plan=plan)


@contextmanager
def swappiness_held_at_zero(
    root: Path, *, writer: ControlWriter = write_control_file
) -> Iterator[None]:
    """vm.swappiness at 0 within the block, then back to what it was.

    For kernels whose memory.reclaim has no swappiness= key: the root cgroup's reclaim reads
    vm.swappiness, and at 0 it scans file pages only (get_scan_count(): cgroup reclaim with
    swappiness 0 is SCAN_FILE). While the hold lasts, the kernel's own reclaim (kswapd, direct
    reclaim) prefers file pages too; it still swaps to avoid an OOM kill. The value before the
    hold is kept in SAVED_SWAPPINESS_FILE until it is restored (restore_swappiness). If someone
    else set vm.swappiness during the hold, theirs is kept.
    """
    path = under(root, SWAPPINESS_FILE)
    before = read_int(root, SWAPPINESS_FILE)
    if before is None:
        raise MissingDependencyError(
            f"cannot read {path}", hint="run the agent in the VM itself, with /proc mounted"
        )
    if before == 0:
        yield
        return
    saved = under(root, SAVED_SWAPPINESS_FILE)
    try:
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(f"{before}\n", encoding="ascii")
    except OSError as err:
        log.debug("cannot keep vm.swappiness in %s: %s", saved, err)
    _write(writer, path, "0", "the kernel lacks vm.swappiness")
    try:
        yield
    finally:
        _restore(root, before, writer)


def _restore(root: Path, value: int, writer: ControlWriter) -> None:
    """Put vm.swappiness back to `value` if it is still our 0; forget the saved value."""
    now = read_int(root, SWAPPINESS_FILE)
    if now == 0:
        try:
            writer(under(root, SWAPPINESS_FILE), str(value))
        except OSError as err:
            log.warning("could not restore vm.swappiness to %d: %s", value, err)
            return
    else:
        log.warning("vm.swappiness became %s during a hold at 0; left as it is", now)
    under(root, SAVED_SWAPPINESS_FILE).unlink(missing_ok=True)


def restore_swappiness(root: Path, *, writer: ControlWriter = write_control_file) -> int | None:
    """Undo a hold that an agent killed mid-write left behind; the value restored, or None."""
    text = read_text(root, SAVED_SWAPPINESS_FILE)
    if text is None:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        under(root, SAVED_SWAPPINESS_FILE).unlink(missing_ok=True)
        return None
    if read_int(root, SWAPPINESS_FILE) != 0:
        under(root, SAVED_SWAPPINESS_FILE).unlink(missing_ok=True)
        return None
    log.warning("vm.swappiness was left at 0 by a reclaim that did not finish: restoring %d", value)
    _restore(root, value, writer)
    return value


@dataclass(frozen=True)
class SplitResult:
    elapsed_s: float


def split_huge_pages(
    root: Path,
    *,
    clock: Callable[[], float] = time.monotonic,
    writer: ControlWriter = write_control_file,
) -> SplitResult:
    """Split the huge pages that processes partly freed, so their free part becomes free memory.

    The kernel splits them from the deferred split shrinker, which runs under memory pressure
    only. A kernel without CONFIG_SHRINKER_DEBUG (Debian's) offers no way to run that shrinker
    alone: drop_caches=2 runs every shrinker. It keeps the page cache (see DROP_SLAB) and costs
    the unused dentries and inodes, which path lookups rebuild from the cached inode tables,
    and the shadow entries that detect refaults of files already evicted.
    """
    start = clock()
    _write(writer, under(root, DROP_CACHES_FILE), str(DROP_SLAB), "the kernel lacks drop_caches")
    return SplitResult(clock() - start)


def _free_own_pages(size: int) -> None:
    """On each CPU this thread may run on, fault in `size` bytes of anonymous memory in small
    pages and unmap them: the lists are per CPU, and a page freed goes to its own CPU's list."""
    allowed = os.sched_getaffinity(0)
    try:
        for cpu in sorted(allowed):
            try:
                os.sched_setaffinity(0, {cpu})
            except OSError:  # gone offline meanwhile
                continue
            _fault_in_and_unmap(size)
    finally:
        os.sched_setaffinity(0, allowed)


def _fault_in_and_unmap(size: int) -> None:
    buffer = mmap.mmap(-1, size)
    try:
        # One huge page would be one free, not 512. EINVAL: a kernel without huge pages.
        if hasattr(mmap, "MADV_NOHUGEPAGE"):
            with suppress(OSError):
                buffer.madvise(mmap.MADV_NOHUGEPAGE)
        for offset in range(0, size, mmap.PAGESIZE):
            buffer[offset] = 1
    finally:
        buffer.close()


@contextmanager
def percpu_lists_flushed(
    root: Path,
    *,
    writer: ControlWriter = write_control_file,
    free_pages: Callable[[int], None] = _free_own_pages,
) -> Iterator[bool]:
    """Hand the free pages on the per-CPU lists back to the buddy allocator, and keep the lists
    near empty until the block ends; yields False if it cannot flush them.

    The kernel keeps freed pages on per-CPU lists up to a ceiling, the zone's low watermark
    (55 MiB in a 2 GiB guest with transparent huge pages, which raise the watermarks). MemFree
    does not count them, free page reporting does not see them, compaction does not move them,
    and each pins the 2 MiB block it lies in: after a real build, 15 MiB of them held 54 MiB of
    free memory back from the host until they were flushed (docs/benchmarks.md, build-real).
    No knob flushes them, so: lower the ceiling, free a few pages of our own (each free above
    the ceiling flushes the lists' oldest pages), and put the ceiling back when the block ends.
    Held down through a compaction, because the pages a compaction frees (the old places of
    those it moves) go to these lists too, and pin the very blocks it emptied: with the ceiling
    put back first, a pass after the real build left 12,009-13,286 pages on them (164 before)
    and the host 74-88 MiB above where a flush alone took it 6 s later
    (docs/benchmarks/one-off/build_real_idle.py, mode restorefirst).
    """
    path = under(root, PCP_HIGH_FRACTION_FILE)
    before = read_int(root, PCP_HIGH_FRACTION_FILE)
    if before is None:  # before Linux 5.14, or no /proc
        yield False
        return
    try:
        writer(path, str(PCP_FLUSH_FRACTION))
    except OSError as err:
        log.debug("cannot lower the per-CPU lists' ceiling through %s: %s", path, err)
        yield False
        return
    try:
        try:
            free_pages(PCP_FLUSH_BYTES)
        except OSError as err:  # no memory to map, a CPU gone: the ceiling alone, no flush
            log.debug("could not free pages to flush the per-CPU lists: %s", err)
            flushed = False
        else:
            flushed = True
        yield flushed
    finally:
        try:
            writer(path, str(before))
        except OSError as err:
            log.warning("could not restore %s to %d: %s", path, before, err)


def restore_percpu_ceiling(root: Path, *, writer: ControlWriter = write_control_file) -> bool:
    """Undo a flush that an agent killed between its two writes left behind: the kernel's
    default (0) again if the ceiling is still at our fraction. True if it restored it."""
    if read_int(root, PCP_HIGH_FRACTION_FILE) != PCP_FLUSH_FRACTION:
        return False
    log.warning("the per-CPU lists' ceiling was left lowered by a flush that did not finish")
    try:
        writer(under(root, PCP_HIGH_FRACTION_FILE), "0")
    except OSError as err:
        log.warning("could not restore %s: %s", PCP_HIGH_FRACTION_FILE, err)
        return False
    return True


def undo_unfinished_holds(root: Path) -> None:
    """At the start of the agent or of a one-shot reclaim: put back the kernel knobs that an
    agent killed in the middle of an action left changed (vm.swappiness held at 0, the per-CPU
    lists' ceiling lowered)."""
    restore_swappiness(root)
    restore_percpu_ceiling(root)


@dataclass(frozen=True)
class CompactResult:
    elapsed_s: float
    flushed: bool = False  # the per-CPU lists were flushed first


def compact_memory(
    root: Path,
    *,
    clock: Callable[[], float] = time.monotonic,
    writer: ControlWriter = write_control_file,
    free_pages: Callable[[int], None] = _free_own_pages,
) -> CompactResult:
    """Flush the per-CPU free lists, then compact all zones (synchronous) with the lists held
    near empty, so that free memory forms blocks large enough to report."""
    start = clock()
    with percpu_lists_flushed(root, writer=writer, free_pages=free_pages) as flushed:
        _write(
            writer,
            under(root, COMPACT_MEMORY_FILE),
            "1",
            "the kernel was built without CONFIG_COMPACTION",
        )
    return CompactResult(clock() - start, flushed)


def check_reporting_order(order: int) -> None:
    """Refuse an order the buddy allocator does not have, before anything is written."""
    if not 0 <= order <= MAX_BUDDY_ORDER:
        raise UsageError(
            f"bad reporting order {order}",
            hint=f"use 0..{MAX_BUDDY_ORDER}; 9 (2 MiB) is the kernel's default, WSL2 uses 5",
        )


def set_reporting_order(
    root: Path, order: int, *, writer: ControlWriter = write_control_file
) -> None:
    """Report free blocks of `order` and above. Opt-in: below 9 it splits host huge pages, and
    where the host collapses them again (khugepaged, max_ptes_none 511 by default; QEMU marks
    guest RAM MADV_HUGEPAGE) the holes are filled back in: 391 MiB returned at order 5 (median
    of 3) came back within 10 s of fast scanning
    (docs/benchmarks/one-off/reporting_order_khugepaged.py)."""
    check_reporting_order(order)
    _write(
        writer,
        under(root, PAGE_REPORTING_ORDER_FILE),
        str(order),
        "the kernel needs CONFIG_PAGE_REPORTING and Linux 5.14+ for this parameter",
    )
