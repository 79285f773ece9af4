"""`vmreclaim lab build|run|shell`. Imports the lab lazily: `vmreclaim guest` must not need it."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmreclaim.units import parse_size

if TYPE_CHECKING:
    from vmreclaim.lab.image import GuestImage
    from vmreclaim.lab.qemu_command import MachineConfig


def add_machine_options(parser: argparse.ArgumentParser, memory: str = "1G") -> None:
    """The options that describe a lab guest; shared with `demo` and `bench`."""
    from vmreclaim.lab.qemu_command import INITS

    group = parser.add_argument_group("guest")
    group.add_argument("--memory", default=memory, help=f"guest RAM (default {memory})")
    group.add_argument("--cpus", type=int, default=2, help="vCPUs (default 2)")
    group.add_argument(
        "--no-reporting", action="store_true", help="boot without free page reporting"
    )
    group.add_argument("--deflate-on-oom", action="store_true", help="balloon deflate-on-oom")
    group.add_argument("--scratch", metavar="SIZE", help="add an ext4 disk at /mnt/scratch")
    group.add_argument(
        "--append",
        default="",
        metavar="ARGS",
        help="extra kernel command line, e.g. page_reporting.page_reporting_order=5",
    )
    group.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    group.add_argument(
        "--init",
        choices=INITS,
        default="busybox",
        help="PID 1: the lab's busybox init (default), or the host's systemd, e.g. to try the "
        "guest agent's unit",
    )
    add_kernel_options(group)


def add_kernel_options(parser: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kernel", type=Path, help="boot this vmlinuz (default: the distribution's)"
    )
    parser.add_argument("--modules", type=Path, help="its lib/modules/RELEASE tree")


def machine_config(args: argparse.Namespace, **overrides: Any) -> MachineConfig:
    """The machine the options describe; `overrides` (e.g. shell=True) take precedence."""
    from vmreclaim.lab.qemu_command import MachineConfig

    config = MachineConfig(
        memory=parse_size(args.memory),
        cpus=args.cpus,
        free_page_reporting=not args.no_reporting,
        deflate_on_oom=args.deflate_on_oom,
        scratch_disk=parse_size(args.scratch) if args.scratch else None,
        append=args.append,
        accel=args.accel,
        init=args.init,
    )
    config = dataclasses.replace(config, **overrides)
    config.validate()
    return config


def guest_image(args: argparse.Namespace) -> GuestImage | None:
    """The image the user named with --kernel, or None: the machine builds the default one
    itself, after it has checked that QEMU is there."""
    from vmreclaim.lab.image import build_image

    return build_image(args.kernel, args.modules) if args.kernel else None


def _build(args: argparse.Namespace) -> int:
    from vmreclaim.lab.image import build_image

    image = build_image(args.kernel, args.modules, force=args.force)
    print(f"kernel     {image.kernel}")
    print(f"initramfs  {image.initramfs}")
    print(f"release    {image.release}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from vmreclaim.lab.machine import VirtualMachine

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("vmreclaim: error: give the command to run after --", file=sys.stderr)
        return 2
    config = machine_config(args)
    with VirtualMachine(config, guest_image(args)) as vm:
        result = vm.run(command, timeout=args.timeout)
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(result.stderr)
    sys.stderr.flush()
    return result.exit_code


def _shell(args: argparse.Namespace) -> int:
    from vmreclaim.lab.machine import VirtualMachine

    config = machine_config(args, shell=True)
    print("vmreclaim: booting; `exit` in the guest shell powers it off", file=sys.stderr)
    with VirtualMachine(config, guest_image(args)) as vm:
        vm.wait_for_exit()
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lab = subparsers.add_parser("lab", help="boot real Linux guests under QEMU")
    commands = lab.add_subparsers(dest="lab_command", required=True, metavar="COMMAND")

    build = commands.add_parser(
        "build", help="build (or find cached) the guest kernel and initramfs"
    )
    add_kernel_options(build)
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    build.set_defaults(handler=_build)

    run = commands.add_parser(
        "run",
        help="boot a guest, run one command, print its output, exit with its code",
        usage="vmreclaim lab run [options] -- COMMAND...",
    )
    add_machine_options(run)
    run.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    run.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    run.set_defaults(handler=_run)

    shell = commands.add_parser("shell", help="boot a guest with a shell on this terminal")
    add_machine_options(shell)
    shell.set_defaults(handler=_shell)
