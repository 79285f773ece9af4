"""What the guest itself says about its memory at a run's start and end: swap in use, pages
written to swap, anonymous memory held in partly freed huge pages, and file pages read back
soon after reclaim evicted them. Parsed from the text of
/proc/meminfo and /proc/vmstat, which the runner reads in the guest."""

from __future__ import annotations

from dataclasses import dataclass

from vmreclaim.guest.observe.memory import parse_meminfo, parse_vmstat

PAGE = 4096


@dataclass(frozen=True)
class GuestMemory:
    swap_used_bytes: int
    """SwapTotal - SwapFree."""
    swapped_out_pages: int
    """/proc/vmstat pswpout since boot."""
    thp_held_bytes: int
    """Freed, yet allocated in huge pages waiting to be split (MemInfo.unmapped_anon_bytes)."""
    file_refaults: int = 0
    """/proc/vmstat workingset_refault_file since boot: file pages faulted back in while the
    kernel still remembered evicting them, i.e. cache that reclaim took and was needed."""


def parse(meminfo_text: str, vmstat_text: str) -> GuestMemory:
    meminfo = parse_meminfo(meminfo_text)
    vmstat = parse_vmstat(vmstat_text)
    return GuestMemory(
        swap_used_bytes=meminfo.swap_used_bytes or 0,
        swapped_out_pages=vmstat.pswpout or 0,
        thp_held_bytes=meminfo.unmapped_anon_bytes or 0,
        file_refaults=vmstat.workingset_refault_file or 0,
    )
