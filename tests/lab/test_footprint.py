"""Reading a QEMU process's footprint from verbatim /proc text."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmreclaim.qemu.footprint import (
    ProcessFootprint,
    guest_ram_mapping,
    parse_mappings,
    parse_status_rss,
    resident_in_range,
)

# Abridged /proc/PID/smaps of a QEMU with 1 GiB of guest RAM (Linux 6.1); the guest-RAM region
# appears split in two entries, as after an madvise on part of it.
SMAPS = """\
55d0c8a00000-55d0c8f3b000 r--p 00000000 fe:01 1181906                    /usr/bin/qemu-system-x86_64
Size:               5356 kB
Rss:                4096 kB
Pss:                4096 kB
VmFlags: rd mr mw me sd
7f2a40000000-7f2a60000000 rw-p 00000000 00:00 0 
Size:             524288 kB
KernelPageSize:        4 kB
Rss:              131072 kB
Pss:              131072 kB
Anonymous:        131072 kB
AnonHugePages:     98304 kB
VmFlags: rd wr mr mw me ac sd hg mg
7f2a60000000-7f2a80000000 rw-p 00000000 00:00 0 
Size:             524288 kB
Rss:               20480 kB
Anonymous:         20480 kB
VmFlags: rd wr mr mw me ac sd hg mg
7f2a80200000-7f2a80a00000 rw-p 00000000 00:00 0 
Size:               8192 kB
Rss:                2048 kB
VmFlags: rd wr mr mw me ac sd
7ffd1b7e0000-7ffd1b801000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
Rss:                  40 kB
VmFlags: rd wr mr mw me gd ac
"""

STATUS = """\
Name:\tqemu-system-x86
Umask:\t0022
State:\tS (sleeping)
VmPeak:\t 2787244 kB
VmSize:\t 2721708 kB
VmHWM:\t  315620 kB
VmRSS:\t  301504 kB
RssAnon:\t  255000 kB
Threads:\t7
"""


def test_rss_comes_from_vmrss_in_bytes() -> None:
    assert parse_status_rss(STATUS) == 301504 * 1024


def test_rss_missing_is_an_error_naming_the_field() -> None:
    with pytest.raises(ValueError, match="VmRSS"):
        parse_status_rss("Name:\tqemu\n")


def test_guest_ram_joins_the_entries_the_kernel_split_it_into() -> None:
    ram = guest_ram_mapping(parse_mappings(SMAPS), 1 << 30)
    assert ram is not None
    assert (ram.start, ram.size) == (0x7F2A40000000, 1 << 30)


def test_guest_ram_is_the_smallest_anonymous_region_that_fits() -> None:
    ram = guest_ram_mapping(parse_mappings(SMAPS), 4 << 20)
    assert ram is not None
    assert ram.size == 8 << 20


def test_guest_ram_larger_than_every_region_is_not_found() -> None:
    assert guest_ram_mapping(parse_mappings(SMAPS), 2 << 30) is None


def test_guest_ram_without_a_size_is_the_largest_anonymous_region() -> None:
    ram = guest_ram_mapping(parse_mappings(SMAPS), None)
    assert ram is not None
    assert ram.size == 1 << 30


def test_named_mappings_are_not_anonymous() -> None:
    by_start = {m.start: m for m in parse_mappings(SMAPS)}
    assert not by_start[0x55D0C8A00000].anonymous
    assert not by_start[0x7FFD1B7E0000].anonymous


def test_resident_sums_every_entry_inside_the_range() -> None:
    assert resident_in_range(SMAPS, 0x7F2A40000000, 0x7F2A80000000) == (131072 + 20480) * 1024


def test_sampler_reads_a_proc_tree(tmp_path: Path) -> None:
    proc = tmp_path / "1234"
    proc.mkdir()
    (proc / "status").write_text(STATUS)
    (proc / "smaps").write_text(SMAPS)
    sample = ProcessFootprint(1234, ram_size=1 << 30, proc=tmp_path).sample()
    assert sample.rss_bytes == 301504 * 1024
    assert sample.guest_ram_bytes == (131072 + 20480) * 1024


def test_sampler_of_a_gone_process_raises_process_lookup_error(tmp_path: Path) -> None:
    with pytest.raises(ProcessLookupError):
        ProcessFootprint(99999, proc=tmp_path).sample()
