"""The guest agent's own cost: its RSS and CPU inside a lab guest, and the same work natively.

    python -m vmreclaim.bench.agent_cost [--seconds 120] [--policy adaptive] [--no-icount]

Inside: a 2 GiB guest with one vCPU runs `vmreclaim guest run --policy POLICY --interval 2`;
after a 10 s warm-up the agent's CPU time over SECONDS (/proc/PID/schedstat, in ns) and its
VmRSS/VmHWM are read from /proc. TCG emulates the guest's CPU some 40 times slower than hardware,
and by default the guest's clock follows the host's, so CPU shares measured inside inflate by as
much. Hence the guest runs with QEMU's instruction counting (-icount shift=0): its clock advances
1 ns per instruction executed, i.e. the agent's CPU share is measured on a virtual 1 GHz CPU
retiring one instruction per cycle, slower than any CPU a KVM guest gets. --no-icount shows the
inflated figure. The native figure times one observation and decision on this host's /proc.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vmreclaim.bench.runner import AGENT_PID, agent_launch_script
from vmreclaim.guest.observe import keep_tick_files_open, observe, read_setup
from vmreclaim.guest.policies import get_policy
from vmreclaim.lab.machine import VirtualMachine
from vmreclaim.lab.qemu_command import MIB, MachineConfig
from vmreclaim.units import format_size

_WARM_UP_SECONDS = 10.0
_INTERVAL_SECONDS = 2.0


def in_guest(policy: str, seconds: float, icount: int | None = 0) -> dict[str, float]:
    config = MachineConfig(memory=2048 * MIB, cpus=1, icount=icount)
    with VirtualMachine(config) as vm:
        # Not bench.runner.start_agent: the CPU counted here starts at the launch.
        vm.check(agent_launch_script(f"guest run --policy {policy} --interval {_INTERVAL_SECONDS}"))
        time.sleep(_WARM_UP_SECONDS)
        # The first field of schedstat is the time on CPU in ns (stat's utime+stime count
        # 10 ms jiffies, too coarse for a few ms per tick).
        script = (
            f"pid=$(cat {AGENT_PID}); cut -d' ' -f1 /proc/$pid/schedstat; "
            f"sleep {seconds}; cut -d' ' -f1 /proc/$pid/schedstat; "
            "grep -E '^(VmRSS|VmHWM):' /proc/$pid/status"
        )
        lines = vm.check(script, timeout=seconds + 120).text.splitlines()
    cpu_ns = int(lines[1]) - int(lines[0])
    memory = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in lines[2:]}
    return {
        "cpu_ratio": cpu_ns / 1e9 / seconds,
        "rss_bytes": memory["VmRSS"],
        "hwm_bytes": memory["VmHWM"],
    }


def native(policy: str, ticks: int = 200) -> float:
    """CPU seconds of one observation + decision on this host's kernel files, read as the
    agent reads them: its setup once, its tick files kept open."""
    chosen = get_policy(policy)
    config, state = chosen.config_type(), chosen.initial_state()
    setup = read_setup(Path("/"))
    with keep_tick_files_open(Path("/")):
        started = time.process_time()
        for _ in range(ticks):
            observation = observe(Path("/"), time.monotonic, setup=setup)
            _, state = chosen.decide(observation, config, state)
        return (time.process_time() - started) / ticks


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m vmreclaim.bench.agent_cost")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--policy", default="adaptive")
    parser.add_argument(
        "--no-icount", action="store_true", help="guest clock follows the host's (inflated CPU)"
    )
    args = parser.parse_args()
    tick = native(args.policy)
    print(
        f"native: {1000 * tick:.2f} ms per tick = {100 * tick / _INTERVAL_SECONDS:.3f} % of one CPU"
    )
    icount = None if args.no_icount else 0
    guest = in_guest(args.policy, args.seconds, icount)
    clock = "host clock, TCG-inflated" if icount is None else "1 ns per instruction"
    print(
        f"in the guest ({args.seconds:.0f} s at a {_INTERVAL_SECONDS:.0f} s tick, {clock}): "
        f"CPU {100 * guest['cpu_ratio']:.2f} % of one vCPU, RSS {format_size(guest['rss_bytes'])}"
        f" (peak {format_size(guest['hwm_bytes'])})"
    )


if __name__ == "__main__":
    main()
