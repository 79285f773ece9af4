"""`vmreclaim top` and `vmreclaim host run`. Standard library only at the top: the host-side
libraries are imported by the handlers, so `vmreclaim guest ...` never loads them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from vmreclaim.agent_protocol import PORT_NAME
from vmreclaim.errors import HostError, UsageError, VmreclaimError
from vmreclaim.host.config import STATS_PERIOD_S
from vmreclaim.host.launch import DEFLATE_ON_OOM

if TYPE_CHECKING:
    from vmreclaim.host.agents import AgentChannels
    from vmreclaim.host.fleet import Fleet
    from vmreclaim.host.sources import SourceList, VmSources

EXIT_SOME_FAILED = 4
"""`top --once`: some VMs answered, some did not. (1 is "none did", 2 a usage error and 3 a
missing dependency, as for every command.)"""

_TOP_EPILOG = """\
exit status of --once:
  0  every VM answered (or the globs found none)
  4  some VMs answered and some did not: the snapshot lists each one that did not with its
     error ("hung": true in the JSON when it gave no answer within --timeout)
  1  no VM answered; the first one's error is printed (3 when a library it needs, such as
     libvirt-python, is missing)
  2  a usage error: bad options or configuration
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    top = subparsers.add_parser(
        "top",
        help="every VM's footprint on the host beside what its guest uses, live",
        description="Watch VMs through their QMP sockets, libvirt, Cloud Hypervisor or "
        "Firecracker: host footprint, guest used/cache/free, balloon, free page reporting, "
        "memory returned so far.",
        epilog=_TOP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument(
        "--qmp",
        action="append",
        default=[],
        metavar="SOCKET",
        help="a VM's QMP unix socket (repeatable; globs allowed)",
    )
    top.add_argument(
        "--libvirt",
        action="append",
        default=[],
        metavar="URI",
        help="every running domain of a libvirt URI, e.g. qemu:///system (repeatable)",
    )
    top.add_argument(
        "--cloud-hypervisor",
        action="append",
        default=[],
        metavar="SOCKET",
        help="a Cloud Hypervisor API socket (--api-socket; repeatable; globs allowed)",
    )
    top.add_argument(
        "--firecracker",
        action="append",
        default=[],
        metavar="SOCKET",
        help="a Firecracker API socket (--api-sock; repeatable; globs allowed)",
    )
    top.add_argument(
        "--agent",
        action="append",
        default=[],
        metavar="SOCKET",
        help="a guest agent's channel socket (repeatable; globs allowed): shown with the VM "
        "whose socket has the same stem (db.agent with db.qmp)",
    )
    top.add_argument(
        "--agent-vsock",
        action="append",
        default=[],
        metavar="SOCKET",
        help="a VM's vsock socket (Cloud Hypervisor --vsock socket=, Firecracker uds_path; "
        "repeatable; globs allowed): listen beside it for the guest agent, shown with the VM "
        "whose socket has the same stem (db.vsock with db.sock)",
    )
    top.add_argument(
        "--config",
        type=Path,
        help="take the VMs (qmp, libvirt, cloud_hypervisor, firecracker) and agent channels "
        "from this TOML",
    )
    top.add_argument(
        "--socket",
        type=Path,
        metavar="PATH",
        help="the socket of the `host run` daemon to show (default: socket in --config, else "
        "/run/vmreclaim-host/host.sock for root, $XDG_RUNTIME_DIR/vmreclaim/host.sock for others; "
        "used when a daemon answers there)",
    )
    top.add_argument(
        "--no-daemon",
        action="store_true",
        help="ask the VMs directly even when a daemon runs (its monitors then show as hung)",
    )
    top.add_argument("--once", action="store_true", help="print one snapshot and exit")
    top.add_argument("--json", action="store_true", help="with --once: one JSON object")
    top.add_argument(
        "--interval", type=float, default=1.0, help="seconds between refreshes (default 1)"
    )
    top.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="how long a hypervisor has to answer one call before its VM is reported hung "
        "(default: half the interval, at most 5)",
    )
    top.add_argument(
        "--stale-after",
        type=float,
        metavar="INTERVALS",
        help="show guest statistics older than this many intervals (or statistics periods, "
        "if longer) as stale (default 3, or stale_after in --config)",
    )
    top.add_argument(
        "--wait",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="with --once: how long to wait for the guests' first statistics, or beside a "
        "daemon that has just started for its first connections (default 3)",
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
    run.add_argument(
        "--stale-after",
        type=float,
        metavar="INTERVALS",
        help="guest statistics older than this many intervals (or statistics periods, if "
        "longer) leave a VM neither shrunk nor judged in need (default 3: stale_after)",
    )
    run.add_argument(
        "--keep-balloons",
        action="store_true",
        help="on SIGTERM/SIGINT leave the balloons as they are (default: give every balloon "
        "the daemon moved back to its guest's full RAM before exiting; keep_balloons)",
    )
    run.add_argument(
        "--socket",
        type=Path,
        metavar="PATH",
        help="where to publish the daemon's view for `vmreclaim top` (socket in the config)",
    )
    run.set_defaults(handler=_host_run, daemon=True)

    launch = commands.add_parser(
        "launch-options",
        help="the options that turn free page reporting on, for each hypervisor",
        description="Print what to give a hypervisor so that its VM returns freed memory "
        "(stdout), and where it goes (stderr).",
    )
    launch.add_argument(
        "--hypervisor",
        required=True,
        choices=("qemu", "libvirt", "cloud-hypervisor", "firecracker"),
    )
    launch.add_argument("--name", default="vm1", help="the VM's name, for socket paths")
    launch.add_argument(
        "--deflate-on-oom",
        action=argparse.BooleanOptionalAction,
        default=DEFLATE_ON_OOM,
        help="let the guest take balloon pages back on the verge of OOM (default on: without "
        "it a squeezed guest refuses large allocations; README, Bursts)",
    )
    launch.add_argument(
        "--stats-interval",
        type=int,
        default=STATS_PERIOD_S,
        metavar="SECONDS",
        help=f"guest statistics period where it is set at launch (default {STATS_PERIOD_S}; "
        "0 = off)",
    )
    launch.set_defaults(handler=_launch_options)

    libvirt = commands.add_parser("libvirt", help="libvirt domains")
    libvirt_commands = libvirt.add_subparsers(
        dest="libvirt_command", required=True, metavar="COMMAND"
    )
    enable = libvirt_commands.add_parser(
        "enable-reporting",
        help="turn free page reporting on in a domain's persistent XML (next start)",
        description="Set freePageReporting='on' and autodeflate='on' on the domain's virtio "
        "memballoon (adding one if needed) in its persistent definition, and with "
        "--agent-channel the guest agent's channel. A running domain keeps its devices: the "
        "change applies from the next start.",
    )
    enable.add_argument("domain", metavar="DOMAIN")
    enable.add_argument("--uri", default="qemu:///system", help="default qemu:///system")
    enable.add_argument(
        "--no-deflate-on-oom",
        dest="deflate_on_oom",
        action="store_false",
        help="leave autodeflate as it is (by default it is set on, as launch-options prints)",
    )
    enable.add_argument(
        "--agent-channel",
        metavar="PATH",
        help="also add the guest agent's channel (virtio-serial port "
        f"{PORT_NAME}) with its host end a unix socket at PATH, e.g. /run/vms/DOMAIN.agent, "
        "where host.toml's agent = [...] finds it",
    )
    enable.set_defaults(handler=_libvirt_enable_reporting)


def _sources(args: argparse.Namespace) -> SourceList:
    from vmreclaim.host.sources import SourceList

    return SourceList(
        qmp=tuple(args.qmp),
        libvirt=tuple(args.libvirt),
        cloud_hypervisor=tuple(args.cloud_hypervisor),
        firecracker=tuple(args.firecracker),
    )


def _top(args: argparse.Namespace) -> int:
    from vmreclaim.host.agents import AgentChannels
    from vmreclaim.host.config import default_timeout, load_config, max_stats_age
    from vmreclaim.host.discovery import Discovery
    from vmreclaim.host.fleet import Fleet
    from vmreclaim.host.sources import SourceList, VmSources
    from vmreclaim.host.top import run_live
    from vmreclaim.host.view import default_socket_path

    named = _sources(args)
    sources = named
    proc = Path("/proc")
    stale_after = 3.0
    socket = default_socket_path()
    agent_sockets = list(args.agent)
    vsock_sockets = list(args.agent_vsock)
    if args.config is not None:
        config = load_config(args.config)
        agent_sockets += config.agent
        vsock_sockets += config.agent_vsock
        stale_after = config.stale_after
        socket = config.socket or socket
        sources = SourceList(
            qmp=named.qmp + config.qmp,
            libvirt=named.libvirt + config.libvirt,
            cloud_hypervisor=named.cloud_hypervisor + config.cloud_hypervisor,
            firecracker=named.firecracker + config.firecracker,
        )
        proc = config.proc
    if args.json and not args.once:
        raise UsageError("--json prints one snapshot", hint="add --once")
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError(f"--timeout {args.timeout:g}: it is a number of seconds above 0")
    _check_stale_after(args.stale_after)
    max_age = max_stats_age(args.interval, args.stale_after or stale_after)
    timeout = args.timeout if args.timeout is not None else default_timeout(args.interval)
    if not args.no_daemon:
        shown = _top_beside_daemon(args, args.socket or socket, sources, timeout)
        if shown is not None:
            return shown
    # Connection news is for the daemon's log; top shows it in its table or fails with it.
    logging.getLogger("vmreclaim.host.fleet").setLevel(logging.ERROR)
    logging.getLogger("vmreclaim.host.discovery").setLevel(logging.WARNING)
    logging.getLogger("vmreclaim.host.agents").setLevel(logging.ERROR)
    # Nothing named: every VM on the host that can be watched.
    discovery = None if sources else Discovery(proc, timeout=timeout)
    # An onlooker: a VM whose statistics are on keeps its period (the daemon's, libvirt's).
    vm_sources = VmSources(
        sources, proc, timeout=timeout, discovery=discovery, keep_stats_period=True
    )
    fleet = Fleet(
        sources.qmp,
        vm_sources.backend,
        sample_timeout=2 * timeout + 0.5,
        discoverer=vm_sources.discover,
    )

    async def run() -> int:
        agents = AgentChannels(agent_sockets, vsock=vsock_sockets)
        try:
            if args.once:
                return await _top_once(fleet, vm_sources, args, proc, max_age, agents=agents)
            await run_live(
                fleet, args.interval, proc, max_age, lambda: vm_sources.not_watched, agents=agents
            )
            return 0
        finally:
            await agents.close()
            await fleet.close()
            vm_sources.close()

    import asyncio

    return asyncio.run(run())


def _top_beside_daemon(
    args: argparse.Namespace, socket: Path, sources: SourceList, timeout: float
) -> int | None:
    """Show the view of the daemon that answers at `socket`; None when none does (and the
    user did not name the socket), so that top asks the VMs itself."""
    import asyncio

    from vmreclaim.host import top_view

    # Reading a local socket takes microseconds: the bound is for a stopped daemon.
    bound = max(timeout, 1.0)
    view = top_view.daemon_view(socket, named=args.socket is not None, timeout=bound)
    if view is None:
        return None
    if args.once:
        view = top_view.settled_view(socket, view, wait=args.wait, timeout=bound)
        some_failed = top_view.print_once(
            top_view.restricted(view, sources, socket), as_json=args.json
        )
        return EXIT_SOME_FAILED if some_failed else 0
    asyncio.run(top_view.run_live(socket, sources, args.interval, bound))
    return 0


def _check_stale_after(stale_after: float | None) -> None:
    if stale_after is not None and not stale_after >= 1:
        raise UsageError(
            f"--stale-after {stale_after:g}: it is a number of intervals, 1 or more",
            hint="fewer than one would call every guest stale between two of its reports",
        )


async def _top_once(
    fleet: Fleet,
    vm_sources: VmSources,
    args: argparse.Namespace,
    proc: Path,
    max_age: float,
    *,
    agents: AgentChannels,
) -> int:
    """Print one snapshot of every VM, those that failed included, and say by the exit
    status whether all, some or none of them answered. VMs that discovery found but cannot
    use are listed with the reason and count as neither."""
    from vmreclaim.host.hostmem import read_host_memory
    from vmreclaim.host.top import not_watched_json, poll_once, render_table, snapshot_json

    poll = await poll_once(fleet, args.wait, agents)
    host = read_host_memory(proc)
    not_watched = vm_sources.not_watched
    if args.json:
        snapshot = snapshot_json(poll, host, time.time(), max_age)
        if vm_sources.discovery is not None:
            snapshot["not_watched"] = not_watched_json(not_watched)
        print(json.dumps(snapshot, indent=2))
    else:
        from rich.console import Console

        Console().print(render_table(poll, host, max_age, not_watched))
    for entry in not_watched:
        who = f"{entry.name} (pid {entry.pid}, {entry.address})" if entry.pid else entry.address
        print(f"vmreclaim: not watching {who}: {entry.reason}", file=sys.stderr)
    if vm_sources.discovery is not None and not (poll.vms or poll.unreachable or not_watched):
        print(
            "vmreclaim: found no VM on this host (QEMU command lines, Proxmox's and Ganeti's "
            "socket folders, local libvirt); name them with --qmp, --libvirt, "
            "--cloud-hypervisor or --firecracker",
            file=sys.stderr,
        )
    if not poll.unreachable:
        return 0
    if not poll.vms:
        # Nothing answered: the first failure is the error, with its hint and exit code.
        first = poll.unreachable[0]
        failure = fleet.failure(first.address)
        if isinstance(failure, VmreclaimError):
            raise failure
        raise HostError(f"{first.address}: {first.error}")
    print(
        f"vmreclaim: {len(poll.unreachable)} of {len(poll.vms) + len(poll.unreachable)} VMs "
        "did not answer: "
        + "; ".join(f"{failure.address}: {failure.error}" for failure in poll.unreachable),
        file=sys.stderr,
    )
    return EXIT_SOME_FAILED


def _host_run(args: argparse.Namespace) -> int:
    from vmreclaim.host.config import load_config, with_stale_after
    from vmreclaim.host.daemon import describe, run_daemon
    from vmreclaim.host.discovery import Discovery
    from vmreclaim.host.sources import SourceList, VmSources

    config = load_config(args.config)
    _check_stale_after(args.stale_after)
    if args.stale_after is not None:
        config = with_stale_after(config, args.stale_after)
    if args.keep_balloons:
        config = dataclasses.replace(config, keep_balloons=True)
    if args.socket is not None:
        config = dataclasses.replace(config, socket=args.socket)
    if args.check:
        print(describe(config), file=sys.stdout)
        return 0
    # No VMs in the configuration: every VM on the host that can be watched, found again
    # as they come and go.
    discovery = None if config.has_vms else Discovery(config.proc, timeout=config.timeout)
    vm_sources = VmSources(
        SourceList(config.qmp, config.libvirt, config.cloud_hypervisor, config.firecracker),
        config.proc,
        timeout=config.timeout,
        discovery=discovery,
    )
    try:
        run_daemon(config, vm_sources.backend, vm_sources.discover)
    finally:
        vm_sources.close()
    return 0


def _launch_options(args: argparse.Namespace) -> int:
    from vmreclaim.host.launch import launch_options

    options = launch_options(
        args.hypervisor,
        name=args.name,
        deflate_on_oom=args.deflate_on_oom,
        stats_interval=args.stats_interval,
    )
    print(options.text())
    print(options.note, file=sys.stderr)
    return 0


def _libvirt_enable_reporting(args: argparse.Namespace) -> int:
    from vmreclaim.host.backends.libvirt import enable_reporting

    if args.agent_channel is not None and not Path(args.agent_channel).is_absolute():
        raise UsageError(
            f"--agent-channel {args.agent_channel}: libvirt needs an absolute path",
            hint=f"e.g. --agent-channel /run/vms/{args.domain}.agent",
        )
    change = enable_reporting(
        args.uri,
        args.domain,
        deflate_on_oom=args.deflate_on_oom,
        agent_channel=args.agent_channel,
    )
    for note in change.notes:
        print(f"{change.domain}: {note}")
    if not change.changed:
        print(f"{change.domain}: free page reporting is already on in its persistent XML")
    else:
        print(f"{change.domain}: set freePageReporting='on' in its persistent XML")
    if change.running:
        print(
            f"{change.domain} is running with its old device: the change applies from its next "
            "start (shut it down and start it again; a reboot from inside the guest is not "
            "enough)"
        )
    elif change.changed:
        print(f"{change.domain}: the change applies when it next starts")
    return 0
