"""Where memory.reclaim without a swappiness= key starts to swap, and what holding vm.swappiness
at 0 changes: the measurement behind actions.plan_reclaim's choice on swap-on kernels < 6.11.

    python -m vmreclaim.bench.swap_margin [--repeat 3] [--mglru] [--kernel VMLINUZ --modules DIR]

Each repeat boots a 2 GiB lab guest per mode (plain, held), gives it a 512 MiB swap file (WSL2's
25 % of RAM) and 600 MiB of idle anonymous memory, then runs each shape of page cache below and
reclaims from the root cgroup through the agent's own `reclaim_memory` at vm.swappiness 60 (100
in one shape), counting what went to swap (/proc/vmstat pswpout). Between shapes the files are
deleted and swap is cycled, so every shape starts with nothing swapped. --mglru turns on the
multi-generational LRU first (Debian's kernel builds it in, off), whose reclaim picks what to
evict by other rules.

The guest half (`--in-guest`) imports the standard library and the guest package only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vmreclaim.lab.image import GuestImage

MIB = 1 << 20
SCRATCH = Path("/mnt/scratch")
SWAP_FILE = SCRATCH / "swap"
SWAP_BYTES = 512 * MIB
ANON_BYTES = 600 * MIB


@dataclass(frozen=True)
class Shape:
    """Page cache written (`written`), of which `active` read twice more; reclaim `ask` bytes
    in `steps` writes at `swappiness`."""

    name: str
    written: int
    active: int
    ask: int
    steps: int = 1
    swappiness: int = 60
    reread_after_first_step: bool = False


SHAPES = (
    Shape("700 MiB inactive", 700 * MIB, 0, 400 * MIB),
    Shape("600 MiB active", 600 * MIB, 600 * MIB, 400 * MIB),
    Shape("100 MiB inactive, ask 400", 100 * MIB, 0, 400 * MIB),
    Shape("500 MiB re-read after a reclaim", 500 * MIB, 0, 500 * MIB, 2, 60, True),
    Shape("700 MiB inactive, swappiness 100", 700 * MIB, 0, 400 * MIB, swappiness=100),
    Shape("300 MiB active + 300 inactive", 600 * MIB, 300 * MIB, 400 * MIB),
    Shape("700 MiB inactive, 64 MiB steps", 700 * MIB, 0, 384 * MIB, 6),
)


def _meminfo() -> dict[str, int]:
    with open("/proc/meminfo", encoding="ascii") as file:
        return {line.split(":")[0]: int(line.split()[1]) * 1024 for line in file}


def _pswpout_bytes() -> int:
    with open("/proc/vmstat", encoding="ascii") as file:
        counters = dict(line.split() for line in file)
    return int(counters["pswpout"]) * 4096


def _write_files(directory: Path, total: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    chunk = os.urandom(MIB)
    paths = [directory / f"f{index}" for index in range(total // MIB)]
    for path in paths:
        path.write_bytes(chunk)
    os.sync()
    return paths


def _read(paths: list[Path]) -> None:
    for path in paths:
        path.read_bytes()


def _reset() -> None:
    """Files gone, swap emptied back into RAM, clean cache dropped."""
    subprocess.run(
        f"rm -rf {SCRATCH}/cache; sync; swapoff {SWAP_FILE}; swapon {SWAP_FILE}",
        shell=True,
        check=True,
    )
    Path("/proc/sys/vm/drop_caches").write_text("1")


def _measure(shape: Shape, hold: bool) -> dict[str, object]:
    from vmreclaim.guest.actions import reclaim_memory

    root = Path("/")
    paths = _write_files(SCRATCH / "cache", shape.written)
    active = paths[: shape.active // MIB]
    _read(active)
    _read(active)
    Path("/proc/sys/vm/swappiness").write_text(str(shape.swappiness))
    before, swapped = _meminfo(), _pswpout_bytes()
    started = time.monotonic()
    stops = []
    for step in range(shape.steps):
        if shape.reread_after_first_step and step == 1:
            _read(paths)  # refaults of what the first step took: workingset activations
        result = reclaim_memory(
            root, shape.ask // shape.steps, swappiness_key=False, hold_swappiness=hold
        )
        stops.append(result.stop)
    after = _meminfo()
    Path("/proc/sys/vm/swappiness").write_text("60")
    cache = ("Active(file)", "Inactive(file)")
    return {
        "shape": shape.name,
        "hold": hold,
        "swappiness": shape.swappiness,
        "ask_bytes": shape.ask,
        "active_file_bytes": before["Active(file)"],
        "inactive_file_bytes": before["Inactive(file)"],
        "cache_reclaimed_bytes": sum(before[k] for k in cache) - sum(after[k] for k in cache),
        "swapped_bytes": _pswpout_bytes() - swapped,
        "stops": stops,
        "seconds": round(time.monotonic() - started, 2),
    }


def in_guest(hold: bool) -> None:
    """Run every shape in this guest (swap and anonymous memory already set up), print JSON."""
    for shape in SHAPES:
        print(json.dumps(_measure(shape, hold)), flush=True)
        _reset()


def _guest_run(hold: bool, mglru: bool, image: GuestImage | None) -> list[dict[str, object]]:
    from vmreclaim.lab.machine import VirtualMachine
    from vmreclaim.lab.qemu_command import MachineConfig

    setup = (
        f"dd if=/dev/zero of={SWAP_FILE} bs=1M count={SWAP_BYTES // MIB} 2>/dev/null && "
        f"chmod 600 {SWAP_FILE} && mkswap {SWAP_FILE} >/dev/null && swapon {SWAP_FILE} && "
        f"{{ python3 -m vmreclaim.workloads alloc {ANON_BYTES} --ready /tmp/anon.ready "
        "--hold 100000 >/dev/null 2>&1 & }; while [ ! -e /tmp/anon.ready ]; do sleep 0.2; done"
    )
    if mglru:
        setup = f"echo y > /sys/kernel/mm/lru_gen/enabled && {setup}"
    mode = "--hold" if hold else "--no-hold"
    config = MachineConfig(memory=2048 * MIB, scratch_disk=2048 * MIB)
    with VirtualMachine(config, image) as vm:
        vm.check(setup, timeout=300)
        output = vm.check(f"python3 -m vmreclaim.bench.swap_margin --in-guest {mode}", 1200)
    return [json.loads(line) for line in output.text.splitlines() if line.startswith("{")]


def _spread(values: list[int]) -> str:
    mib = [value / MIB for value in values]
    return f"{statistics.median(mib):.0f} ({min(mib):.0f}-{max(mib):.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m vmreclaim.bench.swap_margin")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--hold", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--mglru", action="store_true", help="turn MGLRU on in the guest")
    parser.add_argument("--kernel", type=Path, help="boot this vmlinuz (default: the lab's)")
    parser.add_argument("--modules", type=Path, help="its lib/modules/RELEASE tree")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"bad --repeat {args.repeat}: give 1 or more runs")
    if args.in_guest:
        in_guest(args.hold)
        return
    image = None
    if args.kernel is not None:
        from vmreclaim.lab.image import build_image

        image = build_image(args.kernel, args.modules)
    rows: list[dict[str, object]] = []
    for repeat in range(args.repeat):
        for hold in (False, True):
            print(f"repeat {repeat + 1}/{args.repeat}, hold {hold}", file=sys.stderr, flush=True)
            rows.extend(_guest_run(hold, args.mglru, image))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    print("| shape | swappiness | asked | swapped, plain | swapped, held | cache taken, held |")
    print("|---|---|---|---|---|---|")
    for shape in SHAPES:
        mine = [row for row in rows if row["shape"] == shape.name]
        plain = [int(str(row["swapped_bytes"])) for row in mine if not row["hold"]]
        held = [row for row in mine if row["hold"]]
        swapped_held = [int(str(row["swapped_bytes"])) for row in held]
        taken = [int(str(row["cache_reclaimed_bytes"])) for row in held]
        print(
            f"| {shape.name} | {shape.swappiness} | {shape.ask // MIB} MiB | "
            f"{_spread(plain)} MiB | {_spread(swapped_held)} MiB | {_spread(taken)} MiB |"
        )


if __name__ == "__main__":
    main()
