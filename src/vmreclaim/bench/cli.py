"""`vmreclaim bench [--scenario NAME...] [--policy NAME...] [--repeat N] [--out DIR] [--quick]`."""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from pathlib import Path

from vmreclaim.errors import UsageError

_SCENARIOS = (
    "build-then-idle",
    "build-real",
    "busy-with-cold-cache",
    "fragmented-free",
    "busy-with-cold-cache-swap",
    "thp-heap-freed",
    "pgbench-ro",
    "pgbench-rw",
)
_CONTENDERS = ("no-reporting", "reporting", "wsl2-dropcache", "wsl2-gradual", "adaptive")
# Chosen by name only: the agent's cost alone (its ticks without its actions).
_OTHER_CONTENDERS = ("agent-off",)


def _check(
    names: list[str] | None,
    known: tuple[str, ...],
    what: str,
    *,
    default: tuple[str, ...] | None = None,
) -> list[str]:
    chosen = names or list(known if default is None else default)
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise UsageError(
            f"unknown {what} {', '.join(unknown)}", hint=f"choose from {', '.join(known)}"
        )
    return list(dict.fromkeys(chosen))


def _bench(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from vmreclaim.bench import report
    from vmreclaim.bench.contenders import CONTENDERS
    from vmreclaim.bench.runner import RunResult, run_one
    from vmreclaim.bench.scenarios import SCENARIOS
    from vmreclaim.lab.cli import guest_image
    from vmreclaim.units import format_size, parse_size

    scenarios = _check(args.scenario, _SCENARIOS, "scenario")
    contenders = _check(args.policy, _CONTENDERS + _OTHER_CONTENDERS, "policy", default=_CONTENDERS)
    memory = parse_size(args.memory)
    if args.repeat < 1:
        raise UsageError(f"bad --repeat {args.repeat}", hint="give 1 or more runs")
    if any(SCENARIOS[name](args.quick).database for name in scenarios):
        from vmreclaim.workloads.database import check_installed

        check_installed()  # the guest runs the host's /usr: its PostgreSQL too
    image = guest_image(args)
    results: list[RunResult] = []
    started = time.monotonic()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[phase]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        # Each repeat runs every contender once, so slow drifts of the host (a cache warming,
        # another load) spread over all contenders instead of favouring one.
        for scenario_name, repeat, name in (
            (s, k, c) for s in scenarios for k in range(args.repeat) for c in contenders
        ):
            scenario = SCENARIOS[scenario_name](args.quick)
            of = f" #{repeat + 1}" if args.repeat > 1 else ""
            task = progress.add_task(
                f"{scenario_name} x {name}{of}", total=scenario.seconds, phase="boot"
            )

            def show(phase: str, done: float, total: float, task: TaskID = task) -> None:
                progress.update(task, completed=min(done, total), total=total, phase=phase)

            result = run_one(
                scenario,
                CONTENDERS[name],
                image,
                memory=memory,
                icount=args.icount,
                progress=show,
                repeat=repeat,
            )
            progress.update(task, completed=scenario.seconds, phase="done")
            results.append(result)
            # Also the only progress a log gets (rich draws no bars off a terminal).
            m = result.measures
            progress.console.print(
                f"{scenario_name} x {name}{of}: final {format_size(m.final_bytes)}, "
                f"excess {m.excess_gib_s:.1f} GiB*s ({time.monotonic() - started:.0f} s in)",
                highlight=False,
            )
    meta = {
        "command": "vmreclaim bench " + shlex.join(sys.argv[2:])
        if sys.argv[1:2] == ["bench"]
        else "vmreclaim bench",
        "machine": f"{platform.machine()}, {_cpus()} CPUs, {_host_memory()}, "
        f"host kernel {platform.release()}, guest {format_size(memory)} under "
        f"{results[0].accel if results else '?'}"
        + ("" if args.icount is None else f" with one vCPU, -icount shift={args.icount}"),
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.monotonic() - started),
        "quick": args.quick,
        "icount": args.icount,
    }
    written = report.write(results, meta, args.out)
    print(report.markdown(results, meta))
    for path in written:
        print(f"wrote {path}")
    return 0


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def _host_memory() -> str:
    from vmreclaim.host.hostmem import read_host_memory
    from vmreclaim.units import format_size

    host = read_host_memory()
    return "? RAM" if host is None else format_size(host.total_bytes)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from vmreclaim.lab.cli import add_kernel_options

    bench = subparsers.add_parser(
        "bench", help="run the reclaim policies side by side on real guests and plot them"
    )
    bench.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help=f"repeatable; default all: {', '.join(_SCENARIOS)}",
    )
    bench.add_argument(
        "--policy",
        action="append",
        metavar="NAME",
        help=f"repeatable; default all: {', '.join(_CONTENDERS)}; also "
        f"{', '.join(_OTHER_CONTENDERS)} (the agent observing, never acting)",
    )
    bench.add_argument("--out", type=Path, default=Path("bench-out"), help="default ./bench-out")
    bench.add_argument("--quick", action="store_true", help="smaller amounts, shorter phases")
    bench.add_argument(
        "--repeat", type=int, default=1, metavar="N", help="run each contender N times (default 1)"
    )
    bench.add_argument("--memory", default="2G", help="guest RAM (default 2G)")
    bench.add_argument(
        "--icount",
        type=int,
        metavar="SHIFT",
        help="TCG with one vCPU whose clock counts 2**SHIFT ns per instruction: CPU shares in "
        "the guest (idle detection) as on hardware, not inflated by emulation",
    )
    add_kernel_options(bench)
    bench.set_defaults(handler=_bench)
