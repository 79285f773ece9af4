"""`vmreclaim demo [--quick]`."""

from __future__ import annotations

import argparse
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from vmreclaim.demo.run import run_demo
    from vmreclaim.lab.cli import guest_image, machine_config
    from vmreclaim.units import parse_size

    # The page-cache act writes to a scratch disk; --scratch can make it larger.
    config = machine_config(args)
    if config.scratch_disk is None:
        config = machine_config(args, scratch_disk=parse_size("1G"))
    return run_demo(config, guest_image(args), quick=args.quick, out=args.out)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from vmreclaim.lab.cli import add_machine_options

    demo = subparsers.add_parser(
        "demo", help="watch a lab guest give freed memory and page cache back to the host"
    )
    demo.add_argument("--quick", action="store_true", help="smaller amounts, shorter waits")
    demo.add_argument("--out", type=Path, default=Path("demo-out"), help="where the plot goes")
    add_machine_options(demo, memory="2G")
    demo.set_defaults(handler=_demo)
