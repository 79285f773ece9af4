"""The lab: boot real Linux guests under QEMU from Python, run commands in them, and measure
their footprint on the host.

`build_image()` makes (or finds in the cache) a kernel and an initramfs; `VirtualMachine` boots
them and owns the QEMU process for the length of a `with` block.
"""

from __future__ import annotations

from vmreclaim.lab.channel import CommandResult
from vmreclaim.lab.image import GuestImage, build_image
from vmreclaim.lab.machine import VirtualMachine
from vmreclaim.lab.qemu_command import MachineConfig

__all__ = ["CommandResult", "GuestImage", "MachineConfig", "VirtualMachine", "build_image"]
