"""A fake guest whose kernel files change with a fake clock, for policy and daemon tests.

It starts as fakeroot.debian_guest (Linux 6.1, cgroup v2, PSI, free page reporting) and rewrites
/proc/meminfo, /proc/vmstat, /proc/stat and /proc/pressure/memory in the kernel's own format from
counters that `advance` moves. `kernel_writer` stands in for the kernel's knobs: it records each
write and takes reclaimed bytes off the file LRUs, inactive first, as memory.reclaim does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vmreclaim.guest.observe import Observation, observe
from vmreclaim.guest.policies import Decision, Policy

from . import kernel_text as k
from .fakeroot import FakeRoot

MIB = k.MIB
USER_HZ = 100  # /proc/stat counts USER_HZ ticks per CPU second
START = 1000.0

# The columns of the /proc/stat cpu line, in kernel order.
_CPU_COLUMNS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


class SimGuest:
    """Counters of a 4-CPU, 4 GiB guest; memory in bytes, time in seconds on a fake clock."""

    def __init__(self, root: FakeRoot, cpus: int = 4) -> None:
        self.root = root
        self.cpus = cpus
        self.now = START
        self.busy_ratio = 0.0  # share of CPU time busy while time advances
        values = k.STAT_DEBIAN_6_1.splitlines()[0].split()[1:9]
        self.cpu = dict(zip(_CPU_COLUMNS, (int(value) for value in values)))
        self.memory = {
            "MemTotal": 4012148 * k.KIB,
            "MemFree": 1503212 * k.KIB,
            "Active(file)": 100 * MIB,
            "Inactive(file)": 800 * MIB,
            "SReclaimable": 50 * MIB,
            # As in MEMINFO_DEBIAN_6_1: every anonymous page on the LRU is mapped or shmem.
            "Active(anon)": 1236 * k.KIB,
            "Inactive(anon)": 84588 * k.KIB,
            "AnonPages": 75380 * k.KIB,
        }
        # Huge pages partly freed and waiting on the deferred split queue: their unmapped part
        # is on the anon LRU but not in AnonPages; `pinned` of them cannot be split.
        self.thp_held = 0
        self.thp_pinned = 0
        self.thp_deferred_split = 0
        self.thp_split = 0
        self.refault_pages = 5211
        self.stall_us = 0
        self.writes: list[tuple[str, str]] = []  # (absolute path, text) per knob write
        self.write_files()

    @property
    def path(self) -> Path:
        return self.root.path

    def clock(self) -> float:
        return self.now

    def advance(
        self,
        seconds: float,
        busy_ratio: float | None = None,
        stall_us: int = 0,
        refault_bytes: int = 0,
    ) -> None:
        """Let `seconds` pass with the CPU busy at `busy_ratio` (default: as before)."""
        if busy_ratio is not None:
            self.busy_ratio = busy_ratio
        jiffies = round(seconds * USER_HZ * self.cpus)
        busy = round(jiffies * self.busy_ratio)
        self.cpu["user"] += busy
        self.cpu["idle"] += jiffies - busy
        self.stall_us += stall_us
        self.refault_pages += refault_bytes // 4096
        self.now += seconds
        self.write_files()

    def sleep(self, seconds: float) -> None:
        """The daemon's sleep: time passes at the current busy ratio."""
        self.advance(seconds)

    def set_cache(
        self, active: int | None = None, inactive: int | None = None, slab: int | None = None
    ) -> None:
        for key, value in (("Active(file)", active), ("Inactive(file)", inactive)):
            if value is not None:
                self.memory[key] = value
        if slab is not None:
            self.memory["SReclaimable"] = slab
        self.write_files()

    def swap_on(self, size: int) -> None:
        """A swap file of `size` bytes, all free."""
        self.memory["SwapTotal"] = self.memory["SwapFree"] = size
        self.write_files()

    def partly_free_huge_pages(self, held: int, pinned: bool = False) -> None:
        """A process released all but a little of huge pages holding `held` bytes in all."""
        self.memory["Inactive(anon)"] += held
        self.memory["MemFree"] -= held
        self.thp_held += held
        self.thp_pinned += held if pinned else 0
        self.thp_deferred_split += held // (2 * MIB)
        self.write_files()

    def split_huge_pages(self) -> None:
        """The deferred split shrinker: the freed part of each splittable huge page is free."""
        freed = self.thp_held - self.thp_pinned
        self.memory["Inactive(anon)"] -= freed
        self.memory["MemFree"] += freed
        self.thp_held = self.thp_pinned
        self.thp_split += freed // (2 * MIB)
        self.write_files()

    @property
    def reclaimable(self) -> int:
        m = self.memory
        return m["Active(file)"] + m["Inactive(file)"] + m["SReclaimable"]

    def reclaim(self, amount: int) -> None:
        """Take `amount` bytes (whole pages) of cache off the inactive list, then the active one."""
        amount = amount // 4096 * 4096
        for key in ("Inactive(file)", "Active(file)"):
            taken = min(amount, self.memory[key])
            self.memory[key] -= taken
            self.memory["MemFree"] += taken
            amount -= taken
        self.write_files()

    def kernel_writer(self, path: Path, text: str) -> None:
        """An actions writer: records the write and applies it to the counters."""
        absolute = "/" + str(path.relative_to(self.path))
        self.writes.append((absolute, text))
        if absolute.endswith("memory.reclaim"):
            self.reclaim(int(text.split(maxsplit=1)[0]))
        elif absolute == "/proc/sys/vm/swappiness":
            self.root.write(absolute, f"{text}\n")
        elif absolute.endswith("drop_caches"):
            if text in ("2", "3"):  # the shrinkers run: slab and the deferred split queue
                self.split_huge_pages()
            if text in ("1", "3"):  # the page cache
                self.reclaim(self.memory["Active(file)"] + self.memory["Inactive(file)"])

    def write_files(self) -> None:
        """Print the counters as the kernel does, into the tree."""
        meminfo = k.MEMINFO_DEBIAN_6_1
        for key, value in self.memory.items():
            pattern = rf"^{re.escape(key)}:\s+\d+ kB$"
            meminfo = re.sub(pattern, f"{key}:  {value // 1024:>12} kB", meminfo, flags=re.M)
        self.root.write("/proc/meminfo", meminfo)
        vmstat = k.VMSTAT_DEBIAN_6_1
        for name, value in (
            ("workingset_refault_file", self.refault_pages),
            ("thp_deferred_split_page", self.thp_deferred_split),
            ("thp_split_page", self.thp_split),
        ):
            vmstat = re.sub(rf"^{name} \d+$", f"{name} {value}", vmstat, flags=re.M)
        self.root.write("/proc/vmstat", vmstat)
        stat = k.STAT_DEBIAN_6_1.splitlines()
        stat[0] = "cpu  " + " ".join(str(self.cpu[c]) for c in _CPU_COLUMNS) + " 0 0"
        self.root.write("/proc/stat", "\n".join(stat) + "\n")
        if (self.path / "proc/pressure/memory").exists():
            self.root.write(
                "/proc/pressure/memory",
                f"some avg10=0.00 avg60=0.00 avg300=0.00 total={self.stall_us}\n"
                f"full avg10=0.00 avg60=0.00 avg300=0.00 total={self.stall_us // 2}\n",
            )

    def observe(self) -> Observation:
        return observe(self.path, self.clock)


class PolicyDriver:
    """Runs a policy's decide over a SimGuest tick by tick, as the daemon would, keeping its state.

    Reclaim decisions are applied to the guest's counters; `log` holds (seconds since START,
    decision) per tick.
    """

    def __init__(self, sim: SimGuest, policy: Policy[Any, Any], config: Any = None) -> None:
        self.sim = sim
        self.policy = policy
        self.config = policy.config_type() if config is None else config
        self.state = policy.initial_state()
        self.log: list[tuple[float, Decision]] = []

    def tick(self) -> Decision:
        decision, self.state = self.policy.decide(self.sim.observe(), self.config, self.state)
        if decision.split_huge_pages:
            self.sim.split_huge_pages()
        if decision.drop_caches:
            self.sim.reclaim(self.sim.memory["Active(file)"] + self.sim.memory["Inactive(file)"])
        elif decision.reclaim_bytes:
            self.sim.reclaim(decision.reclaim_bytes)
        self.log.append((self.sim.now - START, decision))
        return decision

    def run(
        self, seconds: float, interval_s: float = 2.0, busy_ratio: float | None = None
    ) -> list[tuple[float, Decision]]:
        """Tick, then let interval_s pass, for `seconds`; the ticks' (time, decision)."""
        first = len(self.log)
        for _ in range(round(seconds / interval_s)):
            self.tick()
            self.sim.advance(interval_s, busy_ratio)
        return self.log[first:]


def acting(log: list[tuple[float, Decision]]) -> list[tuple[float, Decision]]:
    return [(t, decision) for t, decision in log if decision.acts]
