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
           dentries and inodes dropped and a compaction;
  nobusy   as order5 without its step at 100 s, but the agent runs with busy reclaim off
           (busy_max_step_bytes = 0) and drop-behind off (drop_behind_age_s = 0): it takes
           nothing while the build runs, as WSL2 gradual, and its idle and deep idle reclaims
           are unchanged. Does reclaim during the build make deep idle get stuck?
  agent    the agent alone, as in the benchmark, watched for 160 s every 10 s.
  ticks    as agent, printing the agent's whole log (each tick's line, DEBUG included).
  interval5  as ticks, with the agent's compact_interval_s at 5 s: a pass that did not shrink
           the unreportable free memory by 64 MiB is retried 10 s later instead of 20 s.
  timing   the agent with its compactions off (no amount reaches its thresholds); by hand,
           4, 10, 16, 24 and 34 s after the build, a flush of the per-CPU lists and a
           compaction, each with the kernel's migration counters and the dirty and writeback
           pages before and after, watched for 50 s every 3 s: does a pass right after the
           build's end do what one 20 s later does?
  atend    as timing, with the passes at 0, 4 and 10 s after the build: does a pass the moment
           the load stops do little, as the agent's did about 5 s after its pass under load?
  afterbusy  the agent with one compaction at most (compact_interval_s = 1000: its pass in the
           build, if any); by hand 6 and 30 s after the build, a pass as in timing and then
           guest_pins.py and /proc/pagetypeinfo: after a pass under load, why does one soon
           after the build do little and one 20-30 s after do much?
  restorefirst  as timing, but 4 s after the build the pass in the agent's order (the lists
           flushed and their ceiling put back, then the compaction; timing keeps the ceiling
           down through the compaction), with the lists' size after it; 10 s after the build
           a flush alone, no compaction: do the pages that a compaction frees refill the lists
           and pin the blocks it emptied?
  noslab   as agent, without step 11 (its drop of dentries and inodes while idle): does that
           drop leave more stuck? Its traces ran with a knob that turned step 11 off, which
           did not land: the agent lost step 11 in d47b225, so today this is the same as agent.
  gradual  WSL2 gradual's agent instead (nothing until 2 minutes of idle, then a 256 MiB
           memory.reclaim step and a compaction), watched for 200 s: is it never stuck here too?
  onestep  the agent off; 20 s after the build, by hand, what gradual does 2 minutes later:
           256 MiB written to memory.reclaim, then a compaction: is its timing what matters?
  exact    as onestep, but 190 MiB (what takes the cache to about 30 MiB, no more): does
           asking for more than there is matter?
  twostep  the agent off; adaptive's idle steps by hand: 20 s after the build 90 MiB written
           to memory.reclaim and a compaction (down to its floor), 70 s after it 84 MiB and a
           compaction (deep idle): does taking the cache in two steps get stuck?
  compactfirst  as twostep, with a compaction right after the build as well, while all the
           cache is still there (as the agent's busy compaction does): does that get stuck?
  delayed  as twostep, but each compaction 30 s after its reclaim instead of right after it
           (the agent compacts on a later tick, 2 to 36 s later when its back-off holds it):
           does the wait get stuck?
  dropfirst  as twostep, with unused dentries and inodes dropped (drop_caches=2) right before
           the first reclaim, as the agent's step 11 did in the nobusy traces: does that?
  pinsbuild  the agent alone, as agent, with guest_pins.py and /proc/pagetypeinfo 30 s after
           the build (after the agent's last compaction of the build, before its deep idle
           reclaim) and again 150 s after it: what pins the free memory that the build leaves
           in partly free blocks, which compaction does not move and the deep reclaim frees?
  pcp      the agent alone, as agent, and 30 s after the build the per-CPU free lists'
           ceiling lowered (percpu_pagelist_high_fraction = 100000: high falls to 4 batches)
           and 16 MiB allocated and freed by dd, so that the next frees flush the lists to the
           buddy allocator; 10 s later the kernel's default restored: do the pages the lists
           hold pin the free memory that the build leaves in partly free blocks?
  churn    as pcp, but only the 16 MiB allocated and freed, the ceiling left alone: is the
           flush the lowered ceiling's doing?
  delayedpcp  as delayed, then 130 s after the build the per-CPU lists flushed as in pcp: are
           they what keeps a deep reclaim compacted late stuck?
Run from the checkout (about 7 minutes each):
PYTHONPATH=src .venv/bin/python docs/benchmarks/one-off/build_real_idle.py MODE
Outputs of 2026-12-02 in build-real-idle/MODE.txt (code 3f9f5cb, before deep idle), printed by
an earlier, terser form of this script with the same steps (fp: footprint; unrep, rep:
unreportable, reportable); watch.txt ends with the agent's log. order5.txt is of 2026-12-07
(code a51d5b0, deep idle in), and splits the unreportable free memory at order 5.
The traces of the modes from nobusy on are of 2026-12-07 too, several runs to a file (each
headed ### and what code it ran), with /proc/meminfo at rest and at the end and the agent's
INFO lines: code 3ead80e in nobusy.txt (its first two runs print only the reclaim lines),
gradual.txt and the by-hand modes'; the agent with the same-tick compaction and step 11 still
in: fix-agent.txt and fix-nobusy.txt; with it and step 11 turned off: noslab.txt; the
agent as landed (d700bee): final-agent.txt. From the second run of delayed.txt on (code
a4aeadd), the "used" lines also count the pages on the per-CPU free lists: pinsbuild.txt,
pcp.txt, churn.txt, delayedpcp.txt; and flush-agent.txt is the agent mode with the agent that
flushes those lists before every compaction (e3ba002, and 73b0d7e for its third run).
timing.txt, and quiet-agent.txt (modes agent and ticks with an agent that compacted again once
the load stopped, 1ddf791, reverted in 0fe9969) and interval5.txt: the pass when the load
stops. atend.txt (code c044c15): a pass the moment the build ends, with none before it.
loadstop-agent.txt (mode ticks, code b71a322: one more pass 10 s after the one under load once
the load stops, reverted), afterbusy.txt and restorefirst.txt: the lists refilled by what a
compaction frees.
"""

import sys
import time
from pathlib import Path

from vmreclaim.bench.runner import AGENT_PID, start_agent, stop_agent
from vmreclaim.bench.scenarios import build_real
from vmreclaim.bench.sources import find_source
from vmreclaim.lab.machine import VirtualMachine
from vmreclaim.lab.measure import guest_ram
from vmreclaim.lab.qemu_command import MIB, MachineConfig

PROBE = (
    "cat /proc/buddyinfo; grep -E '^(Active|Inactive)\\(file\\)|SReclaimable|MemFree' /proc/meminfo"
)
COMPACT = "echo 1 > /proc/sys/vm/compact_memory"
DROP_SLAB = "echo 2 > /proc/sys/vm/drop_caches"


PINS = (
    f"cat > /tmp/pins.py <<'X'\n{(Path(__file__).parent / 'guest_pins.py').read_text()}"
    "X\npython3 /tmp/pins.py; cat /proc/pagetypeinfo"
)


# The free pages the per-CPU lists hold: MemFree does not count them, and free page reporting
# does not see them. Their ceiling ("high") follows the zone's low watermark.
PCP = (
    'awk \'$1 == "count:" {n += $2} $1 == "high:" {h += $2} '
    'END {printf "per-CPU lists %d pages (high %d)\\n", n, h}\' /proc/zoneinfo'
)
HIGH_FRACTION = "/proc/sys/vm/percpu_pagelist_high_fraction"
CHURN = "dd if=/dev/zero of=/dev/null bs=16M count=1 2>/dev/null"
FLUSH_PCP = f"{PCP}; echo 100000 > {HIGH_FRACTION}; {PCP}; {CHURN}; {PCP}"
RESTORE_PCP = f"echo 0 > {HIGH_FRACTION}; {PCP}"


# One flush and compaction with what it did: the kernel's migration and compaction counters
# before and after, and the dirty and writeback pages (which may wait to be migrated).
MIGRATION = (
    "grep -E '^(pgmigrate_(success|fail)|compact_(isolated|migrate_scanned|free_scanned))' "
    "/proc/vmstat | tr '\\n' ' '; grep -E '^(Dirty|Writeback):' /proc/meminfo | tr -s ' ' | "
    "tr '\\n' ' '; echo"
)
TIMED_PASS = f"{MIGRATION}; {FLUSH_PCP}; {COMPACT}; {RESTORE_PCP}; {MIGRATION}"


def reclaim(size: str) -> str:
    return f"echo {size} > /sys/fs/cgroup/memory.reclaim"


BY_HAND = {
    "watch": {},
    "compact": {6: COMPACT, 30: f"{DROP_SLAB}; {COMPACT}"},
    "reclaim": {
        6: f"{reclaim('72M')}; {COMPACT}",
        30: f"{DROP_SLAB}; {reclaim('72M')}; {COMPACT}",
    },
    "order5": {
        100: "echo 5 > /sys/module/page_reporting/parameters/page_reporting_order; "
        f"{COMPACT}; dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null"
    },
    "pins": {100: PINS},
    "pinsbuild": {30: PINS, 150: PINS},
    "pcp": {30: FLUSH_PCP, 40: RESTORE_PCP},
    "churn": {30: f"{PCP}; {CHURN}; {PCP}"},
    "nobusy": {},
    "agent": {},
    "ticks": {},
    "interval5": {},
    "noslab": {},
    "gradual": {},
    "onestep": {20: f"{reclaim('256M')}; {COMPACT}"},
    "exact": {20: f"{reclaim('190M')}; {COMPACT}"},
    "compactfirst": {
        0: COMPACT,
        20: f"{reclaim('90M')}; {COMPACT}",
        70: f"{reclaim('84M')}; {COMPACT}",
    },
    "delayed": {
        20: reclaim("90M"),
        50: COMPACT,
        70: reclaim("84M"),
        100: COMPACT,
    },
    "delayedpcp": {
        20: reclaim("90M"),
        50: COMPACT,
        70: reclaim("84M"),
        100: COMPACT,
        130: FLUSH_PCP,
        140: RESTORE_PCP,
    },
    "dropfirst": {
        20: f"{DROP_SLAB}; {reclaim('90M')}; {COMPACT}",
        70: f"{reclaim('84M')}; {COMPACT}",
    },
    "twostep": {
        20: f"{reclaim('90M')}; {COMPACT}",
        70: f"{reclaim('84M')}; {COMPACT}",
    },
    "timing": dict.fromkeys([4, 10, 16, 24, 34], TIMED_PASS),
    "atend": dict.fromkeys([0, 4, 10], TIMED_PASS),
    "afterbusy": dict.fromkeys([6, 30], f"{TIMED_PASS}; {PINS}"),
    "restorefirst": {
        4: f"{MIGRATION}; {FLUSH_PCP}; {RESTORE_PCP}; {COMPACT}; {PCP}; {MIGRATION}",
        10: f"{FLUSH_PCP}; {RESTORE_PCP}",
    },
    "overask": {
        90: f"{reclaim('256M')}; {COMPACT}",
        130: f"{DROP_SLAB}; {COMPACT}",
    },
}
BY_HAND_ONLY = ["onestep", "exact", "twostep", "compactfirst", "delayed", "dropfirst", "delayedpcp"]
WATCH_S = {"pins": 110, "gradual": 200, "pinsbuild": 170}
AGENT_ONLY = [
    "order5",
    "overask",
    "nobusy",
    "agent",
    "noslab",
    "pcp",
    "churn",
    "timing",
    "atend",
    "afterbusy",
    "restorefirst",
    "ticks",
    "interval5",
]
WHOLE_LOG = ["ticks", "interval5", "afterbusy"]
WATCH_S.update(dict.fromkeys([*AGENT_ONLY, *BY_HAND_ONLY], 160))
PROBE_EVERY_S = {mode: 10.0 for mode in WATCH_S}
for timed in ("timing", "atend", "afterbusy", "restorefirst"):
    WATCH_S[timed], PROBE_EVERY_S[timed] = 50, 3.0
POLICY = {"gradual": "gradual", **dict.fromkeys(BY_HAND_ONLY, "off")}
# The agent's compactions off (no amount reaches these), the rest of the law as landed.
COMPACTIONS_OFF = "[adaptive]\ncompact_min_bytes = 1T\nbusy_compact_min_bytes = 1T\n"
AGENT_INI = {
    "nobusy": "[adaptive]\nbusy_max_step_bytes = 0\ndrop_behind_age_s = 0\n",
    **dict.fromkeys(["timing", "atend", "restorefirst"], COMPACTIONS_OFF),
    # One pass at most: the first, if one comes in the build.
    "afterbusy": "[adaptive]\ncompact_interval_s = 1000\n",
    # A pass that did not help retried after 10 s instead of 20 s.
    "interval5": "[adaptive]\ncompact_interval_s = 5\n",
}


USED = (  # all of /proc/meminfo on one line, the pages on the per-CPU free lists (which
    # MemFree does not count), and the agent's resident memory
    "tr -s ' ' < /proc/meminfo | tr '\\n' ' '; "
    f"{PCP} | tr '\\n' ' '; "
    f"echo agent RSS $(grep VmRSS /proc/$(cat {AGENT_PID})/status 2>/dev/null)"
)


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
    ini = None
    if mode in AGENT_INI:
        ini = "/tmp/agent.ini"
        vm.check(f"printf '{AGENT_INI[mode]}' > {ini}")
    start_agent(vm, POLICY.get(mode, "adaptive"), config=ini)
    time.sleep(10)
    print(f"rest: footprint {guest_ram(vm.footprint()) / MIB:.0f} MiB; {probe(vm)}", flush=True)
    print(f"rest, used: {vm.check(USED).text}", end="", flush=True)
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
    print(f"end, used: {vm.check(USED).text}", end="", flush=True)
    _, log = stop_agent(vm)
    if mode in WHOLE_LOG:
        print(f"the agent's log:\n{log}", flush=True)
    else:
        print("the agent's log, INFO lines:", flush=True)
        print("\n".join(line for line in log.splitlines() if " INFO " in line), flush=True)
