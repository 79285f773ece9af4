"""One-off measurement (2026-12-07): is a reporting order below 9 worth it on a host with
transparent huge pages? QEMU marks guest RAM MADV_HUGEPAGE, so the host's khugepaged may
collapse a 2 MiB range that free page reporting emptied only in part, filling the holes back in.

Each repeat boots a 1 GiB guest (plain TCG) in which a process touches 512 MiB of small pages
and then frees all but the first page of every 512 KiB: free blocks of orders 5 and 6, which
the default order 9 cannot report. Then page_reporting_order is set to 5 and 64 MiB is
allocated and freed by dd (a free that merges into a block of the reporting order or more
starts a reporting pass). The host's footprint of guest RAM and its AnonHugePages are read:
after the holes are made, 30 s after order 5, over 120 s of khugepaged at its own pace, and over
30 s with khugepaged scanning every 100 ms instead of every 10 s (put back afterwards).
Run from the checkout as root (about 13 minutes):
PYTHONPATH=src .venv/bin/python docs/benchmarks/one-off/reporting_order_khugepaged.py
Output of 2026-12-07 (host kernel 6.18, THP `madvise`, khugepaged max_ptes_none 511, guest
6.1.0-57, QEMU 7.2) in reporting-order/khugepaged.txt.
"""

import time
from pathlib import Path

from vmreclaim.lab.machine import VirtualMachine
from vmreclaim.lab.measure import guest_ram
from vmreclaim.lab.qemu_command import MIB, MachineConfig

KHUGEPAGED = Path("/sys/kernel/mm/transparent_hugepage/khugepaged")
HOLES = r"""
import mmap, pathlib, time
size, chunk, page = 512 << 20, 512 << 10, 4096
region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
region.madvise(mmap.MADV_NOHUGEPAGE)
for offset in range(0, size, page):
    region[offset] = 1
for offset in range(0, size, chunk):
    region.madvise(mmap.MADV_DONTNEED, offset + page, chunk - page)
pathlib.Path("/tmp/ready").write_text("1")
time.sleep(100000)
"""
ORDER_5 = (
    "echo 5 > /sys/module/page_reporting/parameters/page_reporting_order; "
    "dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null"
)


def state(vm: VirtualMachine) -> str:
    rollup = Path(f"/proc/{vm.pid}/smaps_rollup").read_text().splitlines()
    huge = next(int(line.split()[1]) for line in rollup if line.startswith("AnonHugePages"))
    collapsed = int((KHUGEPAGED / "pages_collapsed").read_text())
    footprint = guest_ram(vm.footprint()) / MIB
    return f"footprint {footprint:.0f} MiB, host huge pages {huge >> 10} MiB, collapsed {collapsed}"


for repeat in range(1, 4):
    with VirtualMachine(MachineConfig(memory=1024 * MIB), None) as vm:
        vm.check(f"cat > /tmp/holes.py <<'X'\n{HOLES}\nX")
        vm.check(
            "python3 /tmp/holes.py >/dev/null 2>&1 & while [ ! -e /tmp/ready ]; do sleep 0.5; done",
            timeout=600,
        )
        time.sleep(15)
        print(f"run {repeat}: holes made, order 9: {state(vm)}", flush=True)
        vm.check(ORDER_5)
        time.sleep(30)
        print(f"run {repeat}: order 5 + 30 s: {state(vm)}", flush=True)
        for seconds in range(30, 121, 30):
            time.sleep(30)
            print(f"run {repeat}: khugepaged at its pace + {seconds} s: {state(vm)}", flush=True)
        (KHUGEPAGED / "scan_sleep_millisecs").write_text("100")
        try:
            for seconds in range(10, 31, 10):
                time.sleep(10)
                print(
                    f"run {repeat}: khugepaged every 100 ms + {seconds} s: {state(vm)}", flush=True
                )
        finally:
            (KHUGEPAGED / "scan_sleep_millisecs").write_text("10000")
