"""/proc/meminfo and /proc/vmstat: how memory is used, and what reclaim and refaults cost."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from vmreclaim.guest.observe._files import read_text

# Field of MemInfo -> key of /proc/meminfo. The kernel prints these in kB (KiB, in fact).
_MEMINFO_KEYS = (
    ("total_bytes", "MemTotal"),
    ("free_bytes", "MemFree"),
    ("available_bytes", "MemAvailable"),  # since Linux 3.14
    ("buffers_bytes", "Buffers"),
    ("cached_bytes", "Cached"),
    ("anon_bytes", "AnonPages"),
    ("active_anon_bytes", "Active(anon)"),
    ("inactive_anon_bytes", "Inactive(anon)"),
    ("active_file_bytes", "Active(file)"),
    ("inactive_file_bytes", "Inactive(file)"),
    ("shmem_bytes", "Shmem"),
    ("dirty_bytes", "Dirty"),
    ("writeback_bytes", "Writeback"),
    ("reclaimable_slab_bytes", "SReclaimable"),
    ("unreclaimable_slab_bytes", "SUnreclaim"),
    ("swap_total_bytes", "SwapTotal"),
    ("swap_free_bytes", "SwapFree"),
    ("swap_cached_bytes", "SwapCached"),
)
_MEMINFO_NAMES = frozenset(key for _, key in _MEMINFO_KEYS)


@dataclass(frozen=True)
class MemInfo:
    """The parts of /proc/meminfo the agent uses, in bytes; None where the kernel lacks the key.

    `missing` names the absent keys as the kernel spells them ("MemAvailable").
    """

    total_bytes: int | None
    free_bytes: int | None
    available_bytes: int | None
    buffers_bytes: int | None
    cached_bytes: int | None
    anon_bytes: int | None  # mapped anonymous pages (NR_ANON_MAPPED)
    active_anon_bytes: int | None  # anonymous and shmem pages on the LRU, whole folios
    inactive_anon_bytes: int | None
    active_file_bytes: int | None
    inactive_file_bytes: int | None
    shmem_bytes: int | None
    dirty_bytes: int | None
    writeback_bytes: int | None
    reclaimable_slab_bytes: int | None
    unreclaimable_slab_bytes: int | None
    swap_total_bytes: int | None
    swap_free_bytes: int | None
    swap_cached_bytes: int | None
    missing: tuple[str, ...]

    @property
    def file_cache_bytes(self) -> int | None:
        """Page cache on the file LRUs. Shmem/tmpfs is not here: it lives on the anon LRUs."""
        if self.active_file_bytes is None or self.inactive_file_bytes is None:
            return None
        return self.active_file_bytes + self.inactive_file_bytes

    @property
    def reclaimable_cache_bytes(self) -> int | None:
        """Active(file) + Inactive(file) + SReclaimable: WSL2's measure of what reclaim can take."""
        if self.file_cache_bytes is None or self.reclaimable_slab_bytes is None:
            return None
        return self.file_cache_bytes + self.reclaimable_slab_bytes

    @property
    def swap_used_bytes(self) -> int | None:
        if self.swap_total_bytes is None or self.swap_free_bytes is None:
            return None
        return self.swap_total_bytes - self.swap_free_bytes

    @property
    def unmapped_anon_bytes(self) -> int | None:
        """Anonymous memory on the LRU that no process maps: Active(anon) + Inactive(anon) -
        AnonPages - Shmem - SwapCached, at least 0.

        The LRU counts a transparent huge page as all its 512 pages until it is split, while
        AnonPages counts only the pages still mapped. A huge page that a process partly
        released (madvise(DONTNEED) or munmap of less than 2 MiB) waits whole on the deferred
        split queue, so this is the memory held that way, give or take pages in flight between
        per-CPU batches and the LRU. Shmem sits on the anon LRU too, and so does swap cache; the
        part of the swap cache that is mapped is subtracted twice, so with swap in use this
        errs low.
        """
        parts = (
            self.active_anon_bytes,
            self.inactive_anon_bytes,
            self.anon_bytes,
            self.shmem_bytes,
            self.swap_cached_bytes,
        )
        if any(part is None for part in parts):
            return None
        active, inactive, mapped, shmem, swap_cached = (part or 0 for part in parts)
        return max(0, active + inactive - mapped - shmem - swap_cached)

    @property
    def swap_active(self) -> bool:
        """True when any swap device or file is on (SwapTotal > 0)."""
        return bool(self.swap_total_bytes)


def parse_meminfo(text: str) -> MemInfo:
    """Parse /proc/meminfo text ("MemTotal:        2014548 kB") into bytes. Only the lines
    MemInfo keeps are converted: the agent parses this file every tick, on a vCPU it shares."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if not sep or key not in _MEMINFO_NAMES:
            continue
        fields = rest.split()
        try:
            number = int(fields[0])
        except (IndexError, ValueError):
            continue
        unit = fields[1] if len(fields) > 1 else ""
        values[key] = number * 1024 if unit == "kB" else number
    found = {field: values.get(key) for field, key in _MEMINFO_KEYS}
    missing = tuple(key for _, key in _MEMINFO_KEYS if key not in values)
    return MemInfo(**found, missing=missing)


def empty_meminfo() -> MemInfo:
    """A MemInfo where everything is missing (the file itself could not be read)."""
    return parse_meminfo("")


def read_meminfo(root: Path = Path("/")) -> MemInfo | None:
    """/proc/meminfo under `root`, or None when it cannot be read."""
    text = read_text(root, "/proc/meminfo")
    return None if text is None else parse_meminfo(text)


@dataclass(frozen=True)
class VmStat:
    """Cumulative event counters from /proc/vmstat (counts of pages or events, not bytes).

    A policy works on the difference between two snapshots. None where the kernel lacks a counter;
    `missing` names those as the kernel spells them.
    """

    workingset_refault_file: int | None  # cache pages read back soon after being reclaimed
    workingset_refault_anon: int | None  # since 5.9
    workingset_activate_file: int | None
    pgmajfault: int | None
    pswpin: int | None
    pswpout: int | None
    pgscan_kswapd: int | None
    pgscan_direct: int | None
    pgsteal_kswapd: int | None
    pgsteal_direct: int | None
    compact_stall: int | None
    drop_pagecache: int | None  # times someone wrote drop_caches
    missing: tuple[str, ...]
    # Transparent huge pages: absent on kernels built without CONFIG_TRANSPARENT_HUGEPAGE, which
    # is a kind of kernel, not unreadable data, so these are never named in `missing`.
    thp_deferred_split_page: int | None = None  # huge pages queued when partly unmapped
    thp_split_page: int | None = None  # huge pages split, whatever the cause


_OPTIONAL_VMSTAT_FIELDS = ("thp_deferred_split_page", "thp_split_page")
_VMSTAT_FIELDS = tuple(
    field.name
    for field in dataclasses.fields(VmStat)
    if field.name != "missing" and field.name not in _OPTIONAL_VMSTAT_FIELDS
)

# Before Linux 5.9 only file pages had workingset detection, and their counters carried no suffix
# ("mm: workingset: age nonresident information alongside anonymous pages" split them).
_VMSTAT_OLD_NAMES = {
    "workingset_refault_file": "workingset_refault",
    "workingset_activate_file": "workingset_activate",
}


_VMSTAT_NAMES = frozenset((*_VMSTAT_FIELDS, *_OPTIONAL_VMSTAT_FIELDS, *_VMSTAT_OLD_NAMES.values()))


def parse_vmstat(text: str) -> VmStat:
    """Parse /proc/vmstat text ("workingset_refault_file 1234", one counter a line). Only the
    counters VmStat keeps are converted, a tenth of the file's lines."""
    counters: dict[str, int] = {}
    for line in text.splitlines():
        name, _, number = line.partition(" ")
        if name in _VMSTAT_NAMES and number.lstrip("-").isdigit():
            counters[name] = int(number)
    found: dict[str, int | None] = {}
    missing: list[str] = []
    for name in _VMSTAT_FIELDS:
        value = counters.get(name)
        if value is None and name in _VMSTAT_OLD_NAMES:
            value = counters.get(_VMSTAT_OLD_NAMES[name])
        if value is None:
            missing.append(name)
        found[name] = value
    for name in _OPTIONAL_VMSTAT_FIELDS:
        found[name] = counters.get(name)
    return VmStat(**found, missing=tuple(missing))


def read_vmstat(root: Path = Path("/")) -> VmStat | None:
    """/proc/vmstat under `root`, or None when it cannot be read."""
    text = read_text(root, "/proc/vmstat")
    return None if text is None else parse_vmstat(text)
