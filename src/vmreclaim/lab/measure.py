"""Watching a lab guest's footprint on the host over time."""

from __future__ import annotations

import time
from collections.abc import Callable

from vmreclaim.lab.machine import VirtualMachine
from vmreclaim.qemu.footprint import Footprint


def watch(
    vm: VirtualMachine,
    seconds: float,
    *,
    interval: float = 0.25,
    until: Callable[[Footprint], bool] | None = None,
    on_sample: Callable[[Footprint], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Footprint]:
    """Sample every `interval` seconds for up to `seconds`, stopping early once `until` holds."""
    samples: list[Footprint] = []
    deadline = clock() + seconds
    while True:
        sample = vm.footprint()
        samples.append(sample)
        if on_sample is not None:
            on_sample(sample)
        if (until is not None and until(sample)) or clock() >= deadline:
            return samples
        sleep(interval)


def guest_ram(sample: Footprint) -> int:
    """The guest-RAM resident size, or the whole RSS where the mapping was not found."""
    return sample.guest_ram_bytes if sample.guest_ram_bytes is not None else sample.rss_bytes
