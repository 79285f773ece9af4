"""The demo's script: one guest, three acts, the host footprint printed as it moves, then a
summary and a plot. Act 2 is the guest without vmreclaim (page cache stays on the host), act 3
the same guest with the vmreclaim agent running (it goes)."""

from __future__ import annotations

import time
from pathlib import Path

from vmreclaim.bench.recorder import Recorder
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


def _follow(vm: VirtualMachine, scale: int, target: int, seconds: float) -> int:
    """Print the footprint every second until it is at or under `target`; the last value."""
    started = time.monotonic()
    samples = watch(
        vm,
        seconds,
        interval=1.0,
        until=lambda s: guest_ram(s) <= target,
        on_sample=lambda s: _bar(s, scale, started),
    )
    return guest_ram(samples[-1])


def run_demo(
    config: MachineConfig, image: GuestImage | None, quick: bool = False, out: Path | None = None
) -> int:
    alloc = (512 if quick else 1024) << 20
    cache = (384 if quick else 768) << 20
    settle = 30.0 if quick else 45.0
    if alloc + (256 << 20) > config.memory:
        _say(f"the demo needs a guest of at least {format_size(alloc + (256 << 20))}")
        return 2
    reporting = "on" if config.free_page_reporting else "off"
    _say(f"Booting a {format_size(config.memory)} guest (free page reporting {reporting})...")
    with VirtualMachine(config, image) as vm:
        _say(f"up in {vm.boot_seconds:.1f} s under {vm.accel}, kernel {vm.release}")
        recorder = Recorder(vm)
        with recorder as recording:
            time.sleep(2)
            base = guest_ram(vm.footprint())
            _say(f"\nThe guest's RAM resident on the host at rest: {format_size(base)}")

            recorder.mark("1. free")
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
            after_free = _follow(vm, peak, peak - int(0.8 * alloc), settle)

            recorder.mark("2. cache")
            _say(
                f"\n2. The guest writes {format_size(cache)} of files: page cache, not free memory."
            )
            vm.check(
                f"python3 -m vmreclaim.workloads write-files /mnt/scratch/data {cache}", timeout=600
            )
            cached = guest_ram(vm.footprint())
            _say(f"   host holds {format_size(cached)}; free page reporting cannot return cache,")
            time.sleep(10)
            _say(
                f"   and without vmreclaim, 10 s later it still holds "
                f"{format_size(guest_ram(vm.footprint()))}."
            )

            recorder.mark("3. agent")
            _say("\n3. The vmreclaim agent starts in the guest (vmreclaim guest run): it reclaims")
            _say("   the cold cache, the freed pages are reported, and they leave the host.")
            if vm.accel == "tcg":
                _say("   (python3 takes about 10 s to start in an emulated guest: the first")
                _say("   bars stay put until it has.)")
            vm.check("python3 -m vmreclaim guest run --interval 2 >/tmp/agent.log 2>&1 &")
            # The agent takes a few seconds to start (python3 under TCG), reclaims cold cache
            # at once and everything above its 128 MiB cache floor (WSL2's) after 15 s of
            # quiet; part of that floor is this cache: 60 % of it is what must come back.
            # About 25 s here; the wait ends there, and is long so that a loaded host (a CI
            # machine took over 60 s once) still sees the end.
            after_agent = _follow(vm, cached, cached - int(0.6 * cache), 4 * settle)
        # The agent's lines start with a time and a level ("2026-12-02T00:13:03 INFO
        # vmreclaim: ..."); only its actions are shown, from "vmreclaim:" on.
        agent_log = vm.run(
            "grep -E 'vmreclaim: (reclaim [0-9]|compact:|drop-behind: [0-9])' /tmp/agent.log"
            " | head -3 | sed 's/^.*vmreclaim: /vmreclaim: /'"
        ).text

    rows = [
        ("at rest", base),
        (f"holding {format_size(alloc)}", peak),
        ("after the process exited", after_free),
        (f"with {format_size(cache)} of page cache", cached),
        ("after the vmreclaim agent ran", after_agent),
    ]
    _summary(rows, (peak - after_free) + (cached - after_agent), agent_log, config)
    if out is not None:
        from vmreclaim.bench.report import plot_timeline

        out.mkdir(parents=True, exist_ok=True)
        picture = out / "demo.png"
        plot_timeline(recording, "vmreclaim demo: guest RAM resident on the host", picture)
        _say(f"  plot: {picture}")
    return 0


def _summary(
    rows: list[tuple[str, int]], returned: int, agent_log: str, config: MachineConfig
) -> None:
    if agent_log.strip():
        _say("\n   what the agent said (first lines):")
        for line in agent_log.splitlines():
            _say(f"   {line[:150]}")
    _say("\nSummary (guest RAM resident on the host):")
    for label, value in rows:
        _say(f"  {label:<34} {format_size(value):>10}")
    _say(f"  returned to the host: {format_size(returned)}")
    if not config.free_page_reporting:
        _say("  (free page reporting was off: nothing could come back; drop --no-reporting)")
