"""`vmreclaim top` and `vmreclaim host run`. Standard library only at the top: the host-side
libraries are imported by the handlers, so `vmreclaim guest ...` never loads them."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from vmreclaim.errors import UsageError

if TYPE_CHECKING:
    from vmreclaim.host.backend import BackendFactory, VmBackend


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    top = subparsers.add_parser(
        "top",
        help="every VM's footprint on the host beside what its guest uses, live",
        description="Watch VMs through their QMP sockets: host footprint, guest used/cache/"
        "free, balloon, free page reporting, memory returned so far.",
    )
    top.add_argument(
        "--qmp",
        action="append",
        default=[],
        metavar="SOCKET",
        help="a VM's QMP unix socket (repeatable; globs allowed)",
    )
    top.add_argument("--config", type=Path, help="take the sockets (qmp = [...]) from this TOML")
    top.add_argument("--once", action="store_true", help="print one snapshot and exit")
    top.add_argument("--json", action="store_true", help="with --once: one JSON object")
    top.add_argument(
        "--interval", type=float, default=1.0, help="seconds between refreshes (default 1)"
    )
    top.add_argument(
        "--wait",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="with --once: how long to wait for the guests' first statistics (default 3)",
    )
    top.set_defaults(handler=_top)

    host = subparsers.add_parser("host", help="steer VM balloons from the host")
    commands = host.add_subparsers(dest="host_command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="the balloon daemon: keep host memory available, give guests what they need",
    )
    run.add_argument("--config", type=Path, required=True, help="TOML configuration")
    run.add_argument(
        "--check", action="store_true", help="validate the configuration, print it, exit"
    )
    run.set_defaults(handler=_host_run)


def _qemu_factory(proc: Path) -> BackendFactory:
    from vmreclaim.host.qemu_backend import QemuVm

    def factory(address: str) -> VmBackend:
        return QemuVm(address, proc=proc)

    return factory


def _top(args: argparse.Namespace) -> int:
    from vmreclaim.host.config import load_config
    from vmreclaim.host.fleet import Fleet
    from vmreclaim.host.hostmem import read_host_memory
    from vmreclaim.host.top import poll_once, run_live, snapshot_json

    sources = list(args.qmp)
    proc = Path("/proc")
    if args.config is not None:
        config = load_config(args.config)
        sources += config.qmp
        proc = config.proc
    if not sources:
        raise UsageError(
            "no VMs to watch", hint="name QMP sockets with --qmp SOCKET, or give --config FILE"
        )
    if args.json and not args.once:
        raise UsageError("--json prints one snapshot", hint="add --once")
    # Connection news is for the daemon's log; top shows it in its table or fails with it.
    logging.getLogger("vmreclaim.host.fleet").setLevel(logging.ERROR)
    fleet = Fleet(sources, _qemu_factory(proc))

    async def once() -> int:
        try:
            poll = await poll_once(fleet, args.wait)
            # A socket the user named that does not answer is an error; one a glob found is
            # reported in the snapshot.
            for source in args.qmp:
                failure = fleet.failure(source)
                if failure is not None:
                    raise failure
        finally:
            await fleet.close()
        snapshot = snapshot_json(poll, read_host_memory(proc), time.time())
        if args.json:
            print(json.dumps(snapshot, indent=2))
        else:
            from rich.console import Console

            from vmreclaim.host.top import render_table

            Console().print(render_table(poll, read_host_memory(proc)))
        return 0

    async def live() -> int:
        try:
            await run_live(fleet, args.interval, proc)
        finally:
            await fleet.close()
        return 0

    return asyncio.run(once() if args.once else live())


def _host_run(args: argparse.Namespace) -> int:
    from vmreclaim.host.config import load_config
    from vmreclaim.host.daemon import describe, run_daemon

    config = load_config(args.config)
    if args.check:
        print(describe(config), file=sys.stdout)
        return 0
    if not config.qmp:
        raise UsageError(
            f"{args.config}: qmp: no VMs to steer",
            hint='list QMP sockets or globs, e.g. qmp = ["/run/vms/*.qmp"]',
        )
    run_daemon(config, _qemu_factory(config.proc))
    return 0
