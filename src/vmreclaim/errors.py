"""The one exception tree of vmreclaim.

Every error raised on purpose derives from `VmreclaimError`, keeps its cause (`raise ... from
err`) and may carry a `hint`: what the user should do about it. Only the CLI turns these into
messages and exit codes. Standard library only: the guest agent imports this module.
"""

from __future__ import annotations


class VmreclaimError(Exception):
    """Root of the tree. `exit_code` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(VmreclaimError):
    """Bad input from the user: a size, an option, a config file."""

    exit_code = 2


class MissingDependencyError(VmreclaimError):
    """Something vmreclaim needs is not installed or not present (QEMU, a kernel, a feature)."""

    exit_code = 3


class LabError(VmreclaimError):
    """The lab could not build, boot or talk to a guest."""


class BootError(LabError):
    """QEMU exited or the guest did not come up."""


class GuestCommandTimeout(LabError):
    """A command in the guest outlived its timeout."""


class ChannelError(LabError):
    """The command channel to the guest broke; the guest is no longer reachable through it."""


class QmpError(VmreclaimError):
    """Talking QMP to a QEMU failed."""


class QmpCommandError(QmpError):
    """QEMU answered a QMP command with an error; `error_class` is QEMU's class for it."""

    def __init__(self, command: str, error_class: str, description: str) -> None:
        super().__init__(f"QMP command {command!r} failed: {error_class}: {description}")
        self.command = command
        self.error_class = error_class
        self.description = description


class ConfigError(UsageError):
    """A configuration file is missing, unreadable or invalid; `path` and `key` say where."""

    def __init__(
        self, path: str, key: str | None, problem: str, *, hint: str | None = None
    ) -> None:
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {problem}", hint=hint)
        self.path = path
        self.key = key
        self.problem = problem


class HostError(VmreclaimError):
    """The host side could not observe or steer a VM."""


class VmUnreachableError(HostError):
    """A VM's control socket cannot be reached, or the VM behind it went away."""


class VmHungError(VmUnreachableError):
    """A VM's hypervisor did not answer one call within its bound: the VMM is stopped, stuck or
    overloaded. `seconds` is the bound; the fleet reports the VM hung and tries it again later."""

    def __init__(self, message: str, seconds: float, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.seconds = seconds
