"""The guest agent's own cost: its RSS and CPU inside a lab guest, and the same work natively.

    python -m vmreclaim.bench.agent_cost [--seconds 60] [--policy adaptive]

Inside: a 2 GiB guest runs `vmreclaim guest run --policy POLICY --interval 2`; after a 10 s
warm-up the agent's utime+stime over SECONDS and its VmRSS/VmHWM are read from /proc. Under TCG
the guest's CPU is emulated, so that figure overstates what the agent costs on hardware; the
native figure times one observation and decision on this host's own /proc and /sys.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vmreclaim.guest.observe import observe
from vmreclaim.guest.policies import get_policy
from vmreclaim.lab.machine import VirtualMachine
from vmreclaim.lab.qemu_command import MIB, MachineConfig
from vmreclaim.units import format_size

_USER_HZ = 100
_WARM_UP_SECONDS = 10.0
_INTERVAL_SECONDS = 2.0


def in_guest(policy: str, seconds: float) -> dict[str, float]:
    with VirtualMachine(MachineConfig(memory=2048 * MIB)) as vm:
        vm.check(
            f"python3 -m vmreclaim guest run --policy {policy} --interval {_INTERVAL_SECONDS} "
            ">/tmp/agent.log 2>&1 & echo $! >/tmp/agent.pid"
        )
        time.sleep(_WARM_UP_SECONDS)
        script = (
            "pid=$(cat /tmp/agent.pid); cut -d' ' -f14,15 /proc/$pid/stat; "
            f"sleep {seconds}; cut -d' ' -f14,15 /proc/$pid/stat; "
            "grep -E '^(VmRSS|VmHWM):' /proc/$pid/status"
        )
        lines = vm.check(script, timeout=seconds + 120).text.splitlines()
    before = sum(int(field) for field in lines[0].split())
    after = sum(int(field) for field in lines[1].split())
    memory = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in lines[2:]}
    return {
        "cpu_ratio": (after - before) / _USER_HZ / seconds,
        "rss_bytes": memory["VmRSS"],
        "hwm_bytes": memory["VmHWM"],
    }


def native(policy: str, ticks: int = 200) -> float:
    """CPU seconds of one observation + decision on this host's kernel files."""
    chosen = get_policy(policy)
    config, state = chosen.config_type(), chosen.initial_state()
    started = time.process_time()
    for _ in range(ticks):
        observation = observe(Path("/"), time.monotonic)
        _, state = chosen.decide(observation, config, state)
    return (time.process_time() - started) / ticks


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m vmreclaim.bench.agent_cost")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--policy", default="adaptive")
    args = parser.parse_args()
    tick = native(args.policy)
    print(
        f"native: {1000 * tick:.2f} ms per tick = {100 * tick / _INTERVAL_SECONDS:.3f} % of one CPU"
    )
    guest = in_guest(args.policy, args.seconds)
    print(
        f"in the guest ({args.seconds:.0f} s at a {_INTERVAL_SECONDS:.0f} s tick): "
        f"CPU {100 * guest['cpu_ratio']:.2f} % of one vCPU, RSS {format_size(guest['rss_bytes'])}"
        f" (peak {format_size(guest['hwm_bytes'])})"
    )


if __name__ == "__main__":
    main()
