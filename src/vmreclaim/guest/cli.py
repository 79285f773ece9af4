"""`vmreclaim guest ...`: the commands run inside a VM. Standard library only.

Handlers take the parsed arguments, return the exit code and raise vmreclaim errors, which
vmreclaim.cli.main turns into messages with hints.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import time
from pathlib import Path

from vmreclaim.agent_protocol import PORT_NAME, VSOCK_PORT
from vmreclaim.errors import UsageError, VmreclaimError
from vmreclaim.guest import oneshot, status
from vmreclaim.guest.actions import (
    DEFAULT_TIME_LIMIT_S,
    check_reporting_order,
    undo_unfinished_holds,
)
from vmreclaim.guest.config import AgentConfig, load_settings
from vmreclaim.guest.daemon import Agent, stop_on_signals
from vmreclaim.guest.dropbehind import DropBehind
from vmreclaim.guest.hostport import HostReporter, Vsock, find_port, find_vsock, parse_vsock
from vmreclaim.guest.observe import observe
from vmreclaim.guest.observe.snapshot import DEFAULT_PAGE_SIZE
from vmreclaim.guest.policies import POLICIES, get_policy
from vmreclaim.guest.priority import lower_priority
from vmreclaim.guest.textfile import TextfileWriter, check_directory
from vmreclaim.units import format_size, parse_size

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    guest = subparsers.add_parser(
        "guest",
        help="run inside a VM: show and reclaim memory the host could have back",
        description="The guest agent: run these inside the Linux VM.",
    )
    commands = guest.add_subparsers(dest="guest_command", required=True, metavar="COMMAND")

    status_parser = commands.add_parser(
        "status",
        help="memory breakdown, reporting path, reclaim interface, and what to fix",
    )
    status_parser.add_argument("--json", action="store_true", help="print one JSON object")
    _add_root(status_parser)
    status_parser.set_defaults(handler=_status)

    reclaim = commands.add_parser(
        "reclaim",
        help="one shot: reclaim page cache down to --keep, compact, report what changed",
    )
    reclaim.add_argument(
        "--keep",
        metavar="SIZE",
        help="reclaimable cache to leave, e.g. 256M "
        f"(default: {format_size(oneshot.DEFAULT_KEEP_BYTES)}, WSL2's floor)",
    )
    reclaim.add_argument("--json", action="store_true", help="print one JSON object")
    reclaim.add_argument(
        "--allow-swap",
        action="store_true",
        help="on kernels before 6.11 with swap on, use memory.reclaim even though it may swap "
        "anonymous memory (default: drop_caches=1, which never does)",
    )
    reclaim.add_argument(
        "--time-limit",
        type=float,
        default=DEFAULT_TIME_LIMIT_S,
        metavar="SECONDS",
        help="stop reclaiming after this long (default: %(default)s)",
    )
    reclaim.add_argument(
        "--reporting-order",
        type=int,
        metavar="ORDER",
        help="opt in: set page_reporting_order first (0-10); below 9 splits host huge pages, "
        "which a host's khugepaged fills back in within minutes",
    )
    _add_root(reclaim)
    reclaim.set_defaults(handler=_reclaim)
    _register_run(commands)

    bundle = commands.add_parser(
        "bundle",
        help="write the agent as one file to copy into a VM (python3 FILE guest run)",
    )
    bundle.add_argument(
        "--out", type=Path, default=Path("vmreclaim.pyz"), help="default ./vmreclaim.pyz"
    )
    bundle.set_defaults(handler=_bundle)


def _register_run(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser(
        "run",
        help="the daemon: observe, decide and reclaim every tick (as the systemd service)",
        description="Reclaim cold page cache and compact free memory by a policy, every tick, "
        "at low priority, until SIGTERM or SIGINT.",
    )
    run.add_argument(
        "--policy",
        metavar="NAME",
        help=f"one of {', '.join(POLICIES)} (default: adaptive, or the config file's)",
    )
    run.add_argument("--config", type=Path, metavar="FILE", help="an INI file of knobs")
    run.add_argument(
        "--interval", metavar="SECONDS", help="time between ticks (default: 2, or the file's)"
    )
    run.add_argument(
        "--textfile",
        type=Path,
        metavar="FILE.prom",
        help="rewrite this file with the agent's metrics after every tick, for node_exporter's "
        "textfile collector (e.g. /var/lib/prometheus/node-exporter/vmreclaim.prom)",
    )
    run.add_argument(
        "--channel",
        metavar="DEVICE|vsock[:PORT]",
        help="write a report for the host to this device after every tick, or to vsock port "
        f"PORT of the host (default {VSOCK_PORT}) (default: the virtio-serial port {PORT_NAME} "
        "when the host added one, else vsock when the guest has a virtio-vsock device)",
    )
    run.add_argument("--duration", metavar="SECONDS", help="run this long, then exit 0")
    run.add_argument("--once", action="store_true", help="run one tick, then exit")
    _add_root(run)
    run.set_defaults(handler=_run, daemon=True)


def _add_root(parser: argparse.ArgumentParser) -> None:
    # Hidden: tests and the lab point the agent at a tree of fake kernel files.
    parser.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)


def _page_size(root: Path) -> int:
    # A fake tree describes a 4 KiB-page kernel; the real one tells its own page size.
    return os.sysconf("SC_PAGE_SIZE") if root == Path("/") else DEFAULT_PAGE_SIZE


def require_root(root: Path, euid: int, command: str = "reclaim") -> None:
    """Refuse early, with the fix, when writing the real kernel's knobs without root."""
    if root == Path("/") and euid != 0:
        raise UsageError(
            f"`vmreclaim guest {command}` writes kernel memory knobs and must run as root",
            hint="run it with sudo, or as the systemd service",
        )


def _bundle(args: argparse.Namespace) -> int:
    from vmreclaim.guest.bundle import build_bundle

    size = build_bundle(args.out)
    print(
        f"wrote {args.out} ({format_size(size)}): copy it into the VM and run "
        f"`sudo python3 {args.out.name} guest run`"
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    observation = observe(args.root, time.monotonic, _page_size(args.root))
    problems = status.diagnose(observation)
    if args.json:
        print(status.render_json(observation, problems))
    else:
        print(status.render_text(observation, problems))
    return 0


def _reclaim(args: argparse.Namespace) -> int:
    keep_bytes = oneshot.DEFAULT_KEEP_BYTES if args.keep is None else parse_size(args.keep)
    if args.time_limit <= 0:
        raise UsageError(f"bad time limit {args.time_limit}", hint="give a positive number")
    if args.reporting_order is not None:
        check_reporting_order(args.reporting_order)
    require_root(args.root, os.geteuid())
    report = oneshot.reclaim_once(
        args.root,
        keep_bytes,
        page_size=_page_size(args.root),
        allow_swap=args.allow_swap,
        time_limit_s=args.time_limit,
        reporting_order=args.reporting_order,
    )
    print(oneshot.render_json(report) if args.json else oneshot.render_text(report))
    return 0


def _seconds(text: str | None, option: str) -> float | None:
    """A positive number of seconds from an option, or None when the option was not given."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise UsageError(f"bad {option} {text!r}", hint="give a positive number of seconds")
    return value


def _run(args: argparse.Namespace) -> int:
    settings = load_settings(
        args.config,
        args.policy,
        _seconds(args.interval, "--interval"),
        args.textfile,
        args.channel,
    )
    duration_s = _seconds(args.duration, "--duration")
    textfile = None
    if settings.agent.textfile_path:
        textfile = TextfileWriter(Path(settings.agent.textfile_path), settings.agent.policy)
        check_directory(textfile.path)
    require_root(args.root, os.geteuid(), command="run")
    undo_unfinished_holds(args.root)
    if args.root == Path("/"):
        # Only for the real kernel: a test pointing --root at a fake tree keeps its priority.
        lower_priority()
    policy, config = get_policy(settings.agent.policy), settings.policy_config()
    with contextlib.ExitStack() as stack:
        drop_behind = None
        # Only on the real system: a --root tree of kernel text (tests) has no writes to watch.
        if policy.watches_writes(config) and args.root == Path("/"):
            drop_behind = _watch_writes(args.root)
            if drop_behind is not None:
                stack.enter_context(drop_behind)
        reporter, said = _host_reporter(args.root, settings.agent)
        if reporter is not None:
            stack.enter_context(reporter)
        agent = Agent(
            args.root,
            policy,
            config,
            interval_s=settings.agent.interval_s,
            page_size=_page_size(args.root),
            reclaim_time_limit_s=settings.agent.reclaim_time_limit_s,
            drop_behind=drop_behind,
            textfile=textfile,
            reporter=reporter,
        )
        agent.log_start(settings.agent)
        log.info("%s", said)
        with stop_on_signals(agent):
            agent.run(duration_s=duration_s, max_ticks=1 if args.once else None)
    return 0


def _host_reporter(root: Path, agent: AgentConfig) -> tuple[HostReporter | None, str]:
    """The reports to the host, on the configured channel, else the agent's virtio-serial
    port, else vsock if the guest has it; and the line to log about it. None when there is
    none of these: the agent then runs as it would without a host."""
    channel: Path | Vsock | None
    try:
        channel = parse_vsock(agent.channel_path)
    except ValueError as err:
        raise UsageError(f"bad host channel: {err}", hint="vsock, or vsock:PORT") from err
    if channel is None:
        channel = Path(agent.channel_path) if agent.channel_path else find_port(root)
    if channel is None and find_vsock(root):
        channel = Vsock()
    if channel is None:
        return None, (
            f"host channel: no virtio-serial port {PORT_NAME} (the host did not add one) and "
            "no virtio-vsock device; not reporting to the host"
        )
    if isinstance(channel, Path) and not channel.exists():
        return None, f"host channel: {channel} does not exist; not reporting to the host"
    reporter = HostReporter(channel, agent.policy, agent.interval_s)
    return reporter, f"host channel: a report after every tick on {channel}"


def _watch_writes(root: Path) -> DropBehind | None:
    """The watch of file writes for drop-behind, or None (logged) where it cannot run: the
    agent then reclaims by its other steps."""
    try:
        watch = DropBehind(root)
    except VmreclaimError as err:
        hint = f" ({err.hint})" if err.hint else ""
        log.warning("drop-behind is off: %s%s", err.message, hint)
        return None
    log.info("drop-behind: watching writes on %s", ", ".join(watch.watched))
    return watch
