"""The `vmreclaim` command: one parser, one subcommand per area, errors mapped to exit codes.

Each area (`guest`, `lab`, ...) has a `cli` module with `register(subparsers)`; those modules
import only the standard library at the top, so `vmreclaim guest ...` never loads a host-side
library. Before a handler runs, `vmreclaim.extras` checks that the pip extra its command needs
is installed. Handlers return the exit code.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from vmreclaim import __version__
from vmreclaim.errors import VmreclaimError
from vmreclaim.extras import require_extra

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmreclaim",
        description="Make Linux VMs give the memory they no longer need back to the host.",
    )
    parser.add_argument("--version", action="version", version=f"vmreclaim {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="say more (twice: debug)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from vmreclaim.bench import cli as bench_cli
    from vmreclaim.demo import cli as demo_cli
    from vmreclaim.guest import cli as guest_cli
    from vmreclaim.host import cli as host_cli
    from vmreclaim.lab import cli as lab_cli

    guest_cli.register(subparsers)
    lab_cli.register(subparsers)
    demo_cli.register(subparsers)
    host_cli.register(subparsers)
    bench_cli.register(subparsers)
    return parser


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds the stack like Ctrl-C does, so every context manager (QEMU above all)
    # runs its cleanup.
    raise SystemExit(128 + signum)


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=level, format="vmreclaim: %(message)s", stream=sys.stderr)
    if verbose < 2:
        # Library chatter only at -vv. qemu.qmp logs every failed connect at ERROR ("Failed to
        # receive Greeting: CancelledError"), which our own error says better: silence it.
        logging.getLogger("qemu").setLevel(logging.CRITICAL + 1)
        logging.getLogger("asyncio").setLevel(logging.WARNING)


def _command_words(args: argparse.Namespace) -> str:
    """The command as typed, e.g. "host run": areas with subcommands keep them in
    `<area>_command`."""
    sub = getattr(args, f"{args.command}_command", None)
    return f"{args.command} {sub}" if sub else str(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose, args.quiet)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        require_extra(_command_words(args))
        code: int = args.handler(args)
        return code
    except VmreclaimError as err:
        print(f"vmreclaim: error: {err.message}", file=sys.stderr)
        if err.hint:
            print(f"vmreclaim: hint: {err.hint}", file=sys.stderr)
        log.debug("details", exc_info=err)
        return err.exit_code
    except KeyboardInterrupt:
        print("vmreclaim: interrupted", file=sys.stderr)
        return 130
