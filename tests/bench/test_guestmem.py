"""The guest's own readings, from verbatim /proc text."""

from __future__ import annotations

from vmreclaim.bench.guestmem import GuestMemory, parse

# A lab guest (kernel 6.1) with a 512 MiB swap file of which 38 MiB is used.
MEMINFO = """\
MemTotal:        1988856 kB
MemFree:          102400 kB
SwapCached:            0 kB
Active(anon):     620000 kB
Inactive(anon):    40000 kB
AnonPages:        650000 kB
Shmem:              4000 kB
SwapTotal:        524284 kB
SwapFree:         485372 kB
"""
VMSTAT = """\
nr_free_pages 25600
pswpin 12
pswpout 9728
thp_deferred_split_page 0
"""


def test_swap_use_pages_out_and_held_memory_come_from_meminfo_and_vmstat() -> None:
    assert parse(MEMINFO, VMSTAT) == GuestMemory(
        swap_used_bytes=(524284 - 485372) * 1024,
        swapped_out_pages=9728,
        thp_held_bytes=(620000 + 40000 - 650000 - 4000) * 1024,
    )


def test_a_kernel_without_swap_counters_reads_as_nothing_swapped() -> None:
    no_swap = MEMINFO.replace("524284", "0").replace("485372", "0")
    memory = parse(no_swap, "nr_free_pages 25600\n")
    assert (memory.swap_used_bytes, memory.swapped_out_pages) == (0, 0)


def test_file_refaults_come_from_vmstat_under_either_name() -> None:
    assert parse(MEMINFO, VMSTAT + "workingset_refault_file 4242\n").file_refaults == 4242
    # Before 5.9 the counter had no suffix.
    assert parse(MEMINFO, VMSTAT + "workingset_refault 17\n").file_refaults == 17
    assert parse(MEMINFO, VMSTAT).file_refaults == 0
