"""What the lab exists to show: memory freed in a real guest reaches the host, and what does
not. Amounts follow issue 2: at least 512 MiB, 80 % back within 30 s."""

from __future__ import annotations

import time

from vmreclaim.lab import MachineConfig, VirtualMachine
from vmreclaim.lab.measure import guest_ram, watch

MIB = 1 << 20
ALLOCATED = 640 * MIB
WINDOW = 30.0


def _hold_then_free(vm: VirtualMachine) -> tuple[int, int]:
    """Allocate ALLOCATED in the guest and free it; the guest RAM on the host while held and
    the lowest it reaches within WINDOW after the free (stopping early at 80 % back)."""
    vm.check(
        f"python3 -m vmreclaim.workloads alloc {ALLOCATED} --ready /tmp/held "
        "--release /tmp/release --hold 600 >/dev/null 2>&1 &"
    )
    vm.check("while [ ! -e /tmp/held ]; do sleep 0.1; done", timeout=300)
    held = guest_ram(vm.footprint())
    vm.check("touch /tmp/release; while pidof python3 >/dev/null; do sleep 0.1; done")
    target = held - int(0.8 * ALLOCATED)
    samples = watch(vm, WINDOW, interval=0.5, until=lambda s: guest_ram(s) <= target)
    return held, min(guest_ram(s) for s in samples)


def test_freed_memory_leaves_the_host_with_free_page_reporting(guest_image) -> None:
    with VirtualMachine(MachineConfig(memory=2048 * MIB), guest_image) as vm:
        held, lowest = _hold_then_free(vm)
    assert held - lowest >= 0.8 * ALLOCATED, (held, lowest)


def test_freed_memory_stays_on_the_host_without_it(guest_image) -> None:
    config = MachineConfig(memory=2048 * MIB, free_page_reporting=False)
    with VirtualMachine(config, guest_image) as vm:
        held, lowest = _hold_then_free(vm)
    assert held - lowest < 0.2 * ALLOCATED, (held, lowest)


def test_page_cache_stays_until_the_guest_drops_it(guest_image) -> None:
    written = 640 * MIB
    config = MachineConfig(memory=2048 * MIB, scratch_disk=1024 * MIB)
    with VirtualMachine(config, guest_image) as vm:
        before = guest_ram(vm.footprint())
        vm.check(f"dd if=/dev/zero of=/mnt/scratch/data bs=1M count={written // MIB}; sync")
        filled = guest_ram(vm.footprint())
        assert filled - before >= 0.8 * written, (before, filled)

        time.sleep(10)  # five times free page reporting's 2 s delay: nothing is free to report
        still = min(guest_ram(s) for s in watch(vm, 5, interval=0.5))
        assert filled - still < 0.2 * written, (filled, still)

        vm.check("echo 3 > /proc/sys/vm/drop_caches")
        target = filled - int(0.8 * written)
        samples = watch(vm, WINDOW, interval=0.5, until=lambda s: guest_ram(s) <= target)
        assert guest_ram(samples[-1]) <= target, (filled, guest_ram(samples[-1]))
