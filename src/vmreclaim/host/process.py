"""The VMM process behind a backend: its footprint, shared by every backend that is not QMP."""

from __future__ import annotations

import logging

from vmreclaim.errors import VmUnreachableError
from vmreclaim.host.qemu_backend import FootprintSampler
from vmreclaim.qemu.footprint import Footprint

log = logging.getLogger(__name__)


def sample_footprint(
    sampler: FootprintSampler | None, name: str, pid: int | None
) -> Footprint | None:
    """The process's footprint now; None when there is no process to read (a remote VM) or
    /proc/PID is not ours to read. A process that is gone means the VM went away."""
    if sampler is None:
        return None
    try:
        return sampler.sample()
    except ProcessLookupError as err:
        raise VmUnreachableError(f"{name}: VMM process {pid} is gone") from err
    except PermissionError:
        log.debug("%s: cannot read /proc/%s", name, pid)
        return None
