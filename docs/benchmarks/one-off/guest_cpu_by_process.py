"""One-off measurement (2026-12-02, issue 11): which guest processes and kernel threads used the
vCPU during one pgbench-ro run per contender. It wraps the runner's guest readings (taken
right after the agent starts and right after the last phase) with a snapshot of every
/proc/PID/stat and the compaction counters of /proc/vmstat, and prints the differences.
Processes that exited in between (the cold writer) are not counted.

Run from the checkout:
PYTHONPATH=src .venv/bin/python docs/benchmarks/one-off/guest_cpu_by_process.py reporting adaptive
"""

import collections
import json
import sys

from vmreclaim.bench import runner
from vmreclaim.bench.contenders import CONTENDERS
from vmreclaim.bench.scenarios import SCENARIOS

snaps = []
orig = runner._guest_memory
CMD = (
    "grep -E '^(compact_|pgmigrate|thp_|pgfree|pgalloc_normal|pgsteal|pgscan)' /proc/vmstat; "
    "echo ===; for p in /proc/[0-9]*; do cat $p/stat 2>/dev/null; echo; done; echo ===; "
    "cut -d' ' -f1 /proc/uptime"
)


def wrapped(vm):
    snaps.append(vm.check(CMD, timeout=120).text)
    return orig(vm)


runner._guest_memory = wrapped


def parse(text):
    vm, procs, up = text.split("===")
    vmstat = {row.split()[0]: int(row.split()[1]) for row in vm.strip().splitlines()}
    cpu = collections.Counter()
    for line in procs.strip().splitlines():
        if ")" not in line:
            continue
        comm = line[line.index("(") + 1 : line.rindex(")")]
        fields = line[line.rindex(")") + 2 :].split()
        name = comm.split("/")[0].rstrip("0123456789:")
        cpu[name] += int(fields[11]) + int(fields[12])
    return vmstat, cpu, float(up)


out = {}
for name in sys.argv[1:]:
    snaps.clear()
    result = runner.run_one(SCENARIOS["pgbench-ro"](False), CONTENDERS[name], None, icount=2)
    (v0, c0, u0), (v1, c1, u1) = parse(snaps[0]), parse(snaps[1])
    cpu = {k: (c1[k] - c0[k]) / 100 for k in c1 if c1[k] - c0[k] > 0}
    vm = {k: v1[k] - v0.get(k, 0) for k in v1 if v1[k] - v0.get(k, 0)}
    db = result.measures.database
    out[name] = {
        "guest_s": u1 - u0,
        "cpu_s": dict(sorted(cpu.items(), key=lambda kv: -kv[1])),
        "vmstat": vm,
        "tps_window": db.cold_write.tps,
        "tps_whole": db.whole.tps,
        "agent_log": result.agent_log,
    }
    print(name, json.dumps({k: v for k, v in out[name].items() if k != "agent_log"}), flush=True)
with open("guest-cpu-by-process.json", "w") as file:
    json.dump(out, file, indent=1)
