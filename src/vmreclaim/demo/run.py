"""The demo's script: one guest, three acts, the host footprint printed as it moves."""

from __future__ import annotations

import sys
import time

from vmreclaim.lab.image import GuestImage
from vmreclaim.lab.machine import VirtualMachine
from vmreclaim.lab.measure import guest_ram, watch
from vmreclaim.lab.qemu_command import MachineConfig
from vmreclaim.qemu.footprint import Footprint
from vmreclaim.units import format_size

_BAR_WIDTH = 40


def _say(text: str) -> None:
    print(text, flush=True)


def _bar(sample: Footprint, scale: int, started: float) -> None:
    ram = guest_ram(sample)
    filled = round(_BAR_WIDTH * min(ram, scale) / scale)
    _say(f"  {time.monotonic() - started:5.1f} s  {'#' * filled:<{_BAR_WIDTH}} {format_size(ram)}")


def run_demo(config: MachineConfig, image: GuestImage | None, quick: bool = False) -> int:
    alloc = (512 if quick else 1024) << 20
    cache = (384 if quick else 768) << 20
    settle = 15.0 if quick else 30.0
    if alloc + (256 << 20) > config.memory:
        _say(f"the demo needs a guest of at least {format_size(alloc + (256 << 20))}")
        return 2
    reporting = "on" if config.free_page_reporting else "off"
    _say(f"Booting a {format_size(config.memory)} guest (free page reporting {reporting})...")
    with VirtualMachine(config, image) as vm:
        _say(f"up in {vm.boot_seconds:.1f} s under {vm.accel}, kernel {vm.release}")
        time.sleep(2)
        base = guest_ram(vm.footprint())
        _say(f"\nThe guest's RAM resident on the host at rest: {format_size(base)}")

        _say(f"\n1. A process in the guest allocates {format_size(alloc)} and touches it.")
        vm.check(
            f"python3 -m vmreclaim.workloads alloc {alloc} --ready /tmp/held "
            "--release /tmp/release --hold 600 >/dev/null 2>&1 &"
        )
        vm.check("while [ ! -e /tmp/held ]; do sleep 0.1; done", timeout=300)
        peak = guest_ram(vm.footprint())
        _say(f"   host holds {format_size(peak)}")
        _say("   It exits. With free page reporting the guest tells QEMU which pages are free:")
        vm.check("touch /tmp/release")
        started = time.monotonic()
        target = peak - int(0.8 * alloc)
        samples = watch(
            vm,
            settle,
            interval=1.0,
            until=lambda s: guest_ram(s) <= target,
            on_sample=lambda s: _bar(s, peak, started),
        )
        after_free = guest_ram(samples[-1])

        _say(f"\n2. The guest writes {format_size(cache)} of files: page cache, not free memory.")
        vm.check(
            f"dd if=/dev/zero of=/mnt/scratch/data bs=1M count={cache >> 20} 2>/dev/null; sync"
        )
        cached = guest_ram(vm.footprint())
        _say(f"   host holds {format_size(cached)}; free page reporting cannot return cache.")
        time.sleep(5)
        _say(f"   5 s later it still holds {format_size(guest_ram(vm.footprint()))}.")

        _say("\n3. The guest drops its page cache; the freed pages are reported and leave:")
        vm.check("sync; echo 1 > /proc/sys/vm/drop_caches")
        started = time.monotonic()
        target = cached - int(0.8 * cache)
        samples = watch(
            vm,
            settle,
            interval=1.0,
            until=lambda s: guest_ram(s) <= target,
            on_sample=lambda s: _bar(s, cached, started),
        )
        after_drop = guest_ram(samples[-1])

    _say("\nSummary (guest RAM resident on the host):")
    rows = [
        ("at rest", base),
        (f"holding {format_size(alloc)}", peak),
        ("after the process exited", after_free),
        (f"with {format_size(cache)} of page cache", cached),
        ("after dropping the cache", after_drop),
    ]
    for label, value in rows:
        _say(f"  {label:<34} {format_size(value):>10}")
    returned = (peak - after_free) + (cached - after_drop)
    _say(f"  returned to the host: {format_size(returned)}")
    if not config.free_page_reporting:
        _say("  (free page reporting was off: nothing could come back; drop --no-reporting)")
    sys.stdout.flush()
    return 0
