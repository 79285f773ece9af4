"""One-off measurement (2026-12-02): what holds the host's memory after build-real under the
adaptive agent, and what frees it. A 2 GiB guest with one vCPU on the instruction-counting
clock (--icount 0, as the benchmark) builds the scenario's sqlite3 source with the agent
running; then, every 1.5 s for 60 s, the host's footprint beside the guest's free memory in
blocks below order 9 (which free page reporting cannot take) and its reclaimable cache
(Active(file) + Inactive(file) + SReclaimable). MODE says what is done by hand meanwhile:
  watch    nothing (the agent alone);
  compact  6 s after the build a compaction, 30 s after it unused dentries and inodes dropped
           (drop_caches=2) and a compaction: the agent's steps 8 and 11;
  reclaim  6 s after the build 72 MiB written to memory.reclaim and a compaction, 30 s after it
           the same again (what a floor below 128 MiB would do);
  order5   the agent alone (its deep idle comes about a minute after the build), then 100 s
           after the build the reporting order lowered to 5 (128 KiB, what WSL2 uses on new
           Windows builds), a compaction, and 64 MiB allocated and freed by dd (a free that
           merges into a block of the reporting order or more is what starts a reporting pass);
           watched for 160 s instead of 60, every 10 s instead of 1.5 s: a shell in the
           guest every 1.5 s may cost more than the agent's idle line (0.5 % of the CPU), so in
           the other modes' traces the agent may never have seen the guest idle;
  pins     as order5, but 100 s after the build guest_pins.py tells which pages pin the free
           memory in partly free 2 MiB blocks, and /proc/pagetypeinfo is printed;
  overask  as order5, but 90 s after the build 256 MiB written to memory.reclaim, more than
           there is (what WSL2 gradual's step does), and a compaction; 130 s after it unused
           dentries and inodes dropped and a compaction.
Run from the checkout (about 7 minutes each):
PYTHONPATH=src .venv/bin/python docs/benchmarks/one-off/build_real_idle.py MODE
Outputs of 2026-12-02 in build-real-idle/MODE.txt (code 3f9f5cb, before deep idle), printed by
an earlier, terser form of this script with the same steps (fp: footprint; unrep, rep:
unreportable, reportable); watch.txt ends with the agent's log. order5.txt is of 2026-12-07
(code a51d5b0, deep idle in), and splits the unreportable free memory at order 5.
"""

import sys
import time
from pathlib import Path

from vmreclaim.bench.runner import start_agent, stop_agent
from vmreclaim.bench.scenarios import build_real
from vmreclaim.bench.sources import find_source
from vmreclaim.lab.machine import VirtualMachine
from vmreclaim.lab.measure import guest_ram
from vmreclaim.lab.qemu_command import MIB, MachineConfig

PROBE = (
    "cat /proc/buddyinfo; grep -E '^(Active|Inactive)\\(file\\)|SReclaimable|MemFree' /proc/meminfo"
)
COMPACT = "echo 1 > /proc/sys/vm/compact_memory"
BY_HAND = {
    "watch": {},
    "compact": {6: COMPACT, 30: f"echo 2 > /proc/sys/vm/drop_caches; {COMPACT}"},
    "reclaim": {
        6: f"echo 72M > /sys/fs/cgroup/memory.reclaim; {COMPACT}",
        30: "echo 2 > /proc/sys/vm/drop_caches; "
        f"echo 72M > /sys/fs/cgroup/memory.reclaim; {COMPACT}",
    },
    "order5": {
        100: "echo 5 > /sys/module/page_reporting/parameters/page_reporting_order; "
        f"{COMPACT}; dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null"
    },
    "pins": {
        100: f"cat > /tmp/pins.py <<'X'\n{(Path(__file__).parent / 'guest_pins.py').read_text()}"
        "X\npython3 /tmp/pins.py; cat /proc/pagetypeinfo"
    },
    "overask": {
        90: f"echo 256M > /sys/fs/cgroup/memory.reclaim; {COMPACT}",
        130: f"echo 2 > /proc/sys/vm/drop_caches; {COMPACT}",
    },
}
WATCH_S = {"order5": 160, "pins": 110, "overask": 160}
PROBE_EVERY_S = {"order5": 10.0, "pins": 10.0, "overask": 10.0}


def probe(vm: VirtualMachine) -> str:
    unreportable = reportable = orders_5_to_8 = 0.0
    kib = {}
    for line in vm.check(PROBE).text.splitlines():
        fields = line.split()
        if line.startswith("Node"):
            counts = [int(x) for x in fields[4:]]
            unreportable += sum(c * 4 * 2**order for order, c in enumerate(counts[:9])) / 1024
            orders_5_to_8 += sum(c * 4 * 2**order for order, c in enumerate(counts[5:9], 5)) / 1024
            reportable += (
                sum(c * 4 * 2**order for order, c in enumerate(counts) if order >= 9) / 1024
            )
        elif fields:
            kib[fields[0].rstrip(":")] = int(fields[1]) / 1024
    cache = kib["Active(file)"] + kib["Inactive(file)"] + kib["SReclaimable"]
    return (
        f"unreportable {unreportable:.1f} MiB ({orders_5_to_8:.1f} in orders 5-8), "
        f"reportable {reportable:.1f} MiB, "
        f"cache+slab {cache:.1f} MiB, free {kib['MemFree']:.1f} MiB"
    )


mode = sys.argv[1]
scenario = build_real(quick=False)
source = find_source(scenario.source_package)
config = MachineConfig(
    memory=2048 * MIB, cpus=1, icount=0, scratch_disk=2048 * MIB, scratch_contents=source.directory
)
with VirtualMachine(config, None) as vm:
    start_agent(vm, "adaptive")
    time.sleep(10)
    print(f"rest: footprint {guest_ram(vm.footprint()) / MIB:.0f} MiB; {probe(vm)}", flush=True)
    started = time.monotonic()
    vm.check(scenario.phases[0].script, timeout=1800)
    end = time.monotonic()
    print(f"build took {end - started:.0f} s", flush=True)
    todo = dict(BY_HAND[mode])
    while time.monotonic() - end < WATCH_S.get(mode, 60):
        since = time.monotonic() - end
        for at in [at for at in todo if since > at]:
            print(f"-- by hand: {todo.pop(at)[-60:]}", flush=True)
            print(vm.check(BY_HAND[mode][at], timeout=300).text, end="", flush=True)
        footprint = guest_ram(vm.footprint()) / MIB
        print(f"t+{since:5.1f} s: footprint {footprint:.0f} MiB; {probe(vm)}", flush=True)
        time.sleep(PROBE_EVERY_S.get(mode, 1.5))
    stop_agent(vm)
