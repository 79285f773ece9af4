"""One-off measurement (2026-12-02): what `python3 -m vmreclaim guest run --help` costs to start
in a lab guest, with the package's bytecode that the lab now compiles for the guest, and
without it (a copy of the package on the guest's tmpfs without its __pycache__ directories, so
each of its modules is compiled at each start, as the guest did before; the standard library
keeps its bytecode in both). CPU seconds of the child (its rusage), five times each,
alternating, on an --icount 2 guest (1 vCPU, 250 MHz: the benchmark's clock) and on plain TCG
(2 vCPUs: the demo's and the tests'). Run from the checkout:
PYTHONPATH=src .venv/bin/python docs/benchmarks/one-off/guest_python_start.py
"""

import statistics

from vmreclaim.lab.machine import VirtualMachine
from vmreclaim.lab.qemu_command import MIB, MachineConfig

MEASURE = (
    "python3 -c 'import resource, subprocess, sys; "
    "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True); "
    "r = resource.getrusage(resource.RUSAGE_CHILDREN); print(r.ru_utime + r.ru_stime)' "
)
COMMAND = "python3 -m vmreclaim guest run --help"

for name, config in (
    ("icount 2", MachineConfig(memory=1024 * MIB, cpus=1, icount=2)),
    ("plain TCG", MachineConfig(memory=1024 * MIB, cpus=2)),
):
    with VirtualMachine(config, None) as vm:
        vm.check(
            "mkdir -p /tmp/nopyc && cp -r /opt/vmreclaim/lib/vmreclaim /tmp/nopyc/ && "
            "find /tmp/nopyc -name __pycache__ -prune -exec rm -r {} +"
        )
        seen = {"compiled by the lab": [], "compiled in the guest": []}
        for _ in range(5):
            for kind, env in (
                ("compiled by the lab", ""),
                ("compiled in the guest", "env PYTHONPATH=/tmp/nopyc "),
            ):
                seen[kind].append(float(vm.check(MEASURE + env + COMMAND, timeout=600).text))
        bare = [float(vm.check(MEASURE + "python3 -c pass").text) for _ in range(3)]
        print(f"{name}: python3 -c pass {statistics.median(bare):.2f} s CPU")
        for kind, values in seen.items():
            print(
                f"{name}: {kind}: median {statistics.median(values):.2f} s CPU "
                f"({min(values):.2f} - {max(values):.2f})",
                flush=True,
            )
