"""One-off measurement (2026-12-02, issue 11): what the agent's start costs on an idle --icount 2
guest (1 vCPU, 250 MHz), then its CPU per tick while the guest idles, at -vv and at the default
log level. Run from the checkout:
PYTHONPATH=src .venv/bin/python docs/benchmarks/one-off/agent_start_cost.py
"""

import time

from vmreclaim.lab.machine import VirtualMachine
from vmreclaim.lab.qemu_command import MIB, MachineConfig


def cpu(vm):
    t = vm.check(
        "cut -d' ' -f14,15 /proc/$(cat /tmp/agent.pid)/stat; cut -d' ' -f1 /proc/uptime"
    ).text.split()
    return (int(t[0]) + int(t[1])) / 100, float(t[2])


config = MachineConfig(
    memory=1024 * MIB, cpus=1, free_page_reporting=True, scratch_disk=256 * MIB, icount=2
)
with VirtualMachine(config, None) as vm:
    for level in ("-vv", ""):
        vm.run("pkill -f 'vmreclaim.*guest run'; sleep 1")
        vm.check(
            f"python3 -m vmreclaim {level} guest run --policy adaptive --interval 2 "
            f">/tmp/agent{level}.log 2>&1 & echo $! >/tmp/agent.pid"
        )
        # the first tick's line at -vv, or wait a fixed guest time at INFO
        for _ in range(200):
            if vm.run(f"grep -q 'starting: policy' /tmp/agent{level}.log").ok:
                break
            time.sleep(0.5)
        c0, u0 = cpu(vm)
        time.sleep(90)
        c1, u1 = cpu(vm)
        ticks = (u1 - u0) / 2
        print(
            f"level {level or 'info'}: start {c0:.2f} s CPU by uptime {u0:.1f}; "
            f"then {c1 - c0:.2f} s over {u1 - u0:.1f} guest s, "
            f"{1000 * (c1 - c0) / ticks:.1f} ms a tick",
            flush=True,
        )
