"""The `vmreclaim` command: one parser, one subcommand per area, errors mapped to exit codes.

Each area (`guest`, `lab`, ...) has a `cli` module with `register(subparsers)`; those modules
import only the standard library at the top, so `vmreclaim guest ...` never loads a host-side
library. Before a handler runs, `vmreclaim.extras` checks that the pip extra its command needs
is installed. Handlers return the exit code.
"""

from __future__ import annotations

import argparse
import logging
import os
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
    _add_verbosity(parser, "verbose", "quiet", default=0)
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
    for subparser in _subparsers(parser):
        # -v and -q after the subcommand too (`vmreclaim host run -v`), counted with those
        # before it: their own names, since a subcommand's values replace the top level's.
        _add_verbosity(subparser, "verbose_after", "quiet_after", default=argparse.SUPPRESS)
    return parser


def _add_verbosity(
    parser: argparse.ArgumentParser, verbose: str, quiet: str, default: object
) -> None:
    parser.add_argument(
        "-v",
        "--verbose",
        dest=verbose,
        action="count",
        default=default,
        help="say more (twice: debug, with the libraries' own messages)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        dest=quiet,
        action="store_true",
        default=default,
        help="only warnings and errors",
    )


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below `parser`, at any depth (argparse keeps them in its actions)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                found += [subparser, *_subparsers(subparser)]
    return found


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds the stack like Ctrl-C does, so every context manager (QEMU above all)
    # runs its cleanup.
    raise SystemExit(128 + signum)


# journald's priority for each level: it reads "<N>" at the start of a line of a service's
# stderr (sd-daemon(3)) and stamps the time itself.
_SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelno, 2)
        return f"<{priority}>vmreclaim: {super().format(record)}"


def _under_journald() -> bool:
    """True when stderr is the journal's stream: systemd sets JOURNAL_STREAM to its
    device:inode for a service whose output goes there (systemd.exec(5))."""
    try:
        device, inode = (int(part) for part in os.environ.get("JOURNAL_STREAM", "").split(":"))
        stat = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (stat.st_dev, stat.st_ino) == (device, inode)


def _configure_logging(verbose: int, quiet: bool, daemon: bool = False) -> None:
    """One-shot commands print "vmreclaim: message". Daemons (`guest run`, `host run`) add the
    time and level, or under systemd the journal's priority prefix, journald keeping the time."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    if daemon and _under_journald():
        handler.setFormatter(_JournalFormatter("%(message)s"))
    elif daemon:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s vmreclaim: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"
            )
        )
    else:
        handler.setFormatter(logging.Formatter("vmreclaim: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
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
    verbose = args.verbose + getattr(args, "verbose_after", 0)
    quiet = args.quiet or getattr(args, "quiet_after", False)
    _configure_logging(verbose, quiet, daemon=getattr(args, "daemon", False))
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        require_extra(_command_words(args))
        code: int = args.handler(args)
        sys.stdout.flush()  # here, so a reader that left is caught below, not at exit
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
    except BrokenPipeError:
        # `vmreclaim guest status | head`: the reader left. Python would print a traceback
        # when it flushes stdout at exit; point stdout at /dev/null and end as `yes` does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
