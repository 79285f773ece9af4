"""The `cpu` line of /proc/stat: CPU time in jiffies (USER_HZ ticks), cumulative since boot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vmreclaim.guest.observe._files import read_text


@dataclass(frozen=True)
class CpuTimes:
    """All CPUs' time by state. guest and guest_nice are left out: user and nice include them."""

    user: int
    nice: int
    system: int
    idle: int
    iowait: int
    irq: int
    softirq: int
    steal: int

    @property
    def busy_jiffies(self) -> int:
        """user+nice+system+irq+softirq+steal: what WSL2's idle detector counts as busy."""
        return self.user + self.nice + self.system + self.irq + self.softirq + self.steal

    @property
    def total_jiffies(self) -> int:
        return self.busy_jiffies + self.idle + self.iowait


def parse_stat_cpu(text: str) -> CpuTimes | None:
    """The aggregate `cpu  ...` line of /proc/stat; None if absent or too short."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            # Kernels before 2.6.11 print fewer columns; missing ones count as zero would lie,
            # so a short line is treated as unreadable.
            if len(fields) < 9:
                return None
            return CpuTimes(*(int(value) for value in fields[1:9]))
    return None


def read_cpu_times(root: Path = Path("/")) -> CpuTimes | None:
    text = read_text(root, "/proc/stat")
    return None if text is None else parse_stat_cpu(text)
