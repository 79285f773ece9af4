"""The lab: boot real Linux guests under QEMU from Python, run commands in them, and measure
their footprint on the host.

`build_image()` makes (or finds in the cache) a kernel and an initramfs; `VirtualMachine` boots
them and owns the QEMU process for the length of a `with` block.

The names below load on first use: `vmreclaim guest ...` builds the same command line (which
imports `vmreclaim.lab.cli`) inside small guests, and must not pay for the launcher's imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmreclaim.lab.channel import CommandResult
    from vmreclaim.lab.image import GuestImage, build_image
    from vmreclaim.lab.machine import VirtualMachine
    from vmreclaim.lab.qemu_command import MachineConfig

__all__ = ["CommandResult", "GuestImage", "MachineConfig", "VirtualMachine", "build_image"]

_HOMES = {
    "CommandResult": "vmreclaim.lab.channel",
    "GuestImage": "vmreclaim.lab.image",
    "build_image": "vmreclaim.lab.image",
    "VirtualMachine": "vmreclaim.lab.machine",
    "MachineConfig": "vmreclaim.lab.qemu_command",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'vmreclaim.lab' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
