"""The kernel release and the reclaim knobs it offers: cgroup v2 memory.reclaim or drop_caches."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vmreclaim.guest.observe._files import read_int, read_text, under

# The "swappiness=" key of memory.reclaim ("300M swappiness=0") arrived in Linux 6.11: commit
# 68cd9050d871 "mm: add swappiness= arg to memory.reclaim" (Dan Schatzberg), merged with
# mm-stable-2024-07-21 for 6.11-rc1 (also reported by Phoronix, "Linux 6.11 To Offer More
# Fine-Tuned Control Over Swappiness", July 2024). Older kernels answer EINVAL: seen here on 6.1.
# A distribution may backport it, so actions also treat an EINVAL on the key as "not supported".
SWAPPINESS_KEY_SINCE = (6, 11)

CgroupMode = Literal["unified", "hybrid", "legacy", "none"]
_RELEASE = re.compile(r"^(\d+)\.(\d+)")


@dataclass(frozen=True)
class KernelRelease:
    """`uname -r`, e.g. "6.1.0-18-amd64", with the version numbers that decide features."""

    text: str
    major: int
    minor: int

    def at_least(self, version: tuple[int, int]) -> bool:
        return (self.major, self.minor) >= version


def parse_release(text: str) -> KernelRelease | None:
    match = _RELEASE.match(text.strip())
    if match is None:
        return None
    return KernelRelease(text.strip(), int(match.group(1)), int(match.group(2)))


def read_kernel_release(root: Path = Path("/")) -> KernelRelease | None:
    text = read_text(root, "/proc/sys/kernel/osrelease")
    return None if text is None else parse_release(text)


@dataclass(frozen=True)
class ReclaimInterface:
    """What this kernel offers to turn page cache into free memory.

    cgroup_mode: "unified" (cgroup2 at /sys/fs/cgroup), "hybrid" (cgroup2 elsewhere, the memory
    controller on v1), "legacy" (v1 only) or "none".
    """

    cgroup_mode: CgroupMode
    memory_reclaim: bool  # /sys/fs/cgroup/memory.reclaim (root cgroup, Linux 5.19+)
    swappiness_key: bool  # memory.reclaim takes " swappiness=N" (Linux 6.11+)
    drop_caches: bool  # /proc/sys/vm/drop_caches
    compact_memory: bool  # /proc/sys/vm/compact_memory (CONFIG_COMPACTION)
    vm_swappiness: int | None  # /proc/sys/vm/swappiness; the root cgroup v2 uses this value


def parse_cgroup_mode(mounts: str) -> CgroupMode:
    """Classify a /proc/mounts text by where cgroup2 and cgroup (v1) are mounted."""
    unified = v2_elsewhere = v1 = False
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point, fstype = fields[1], fields[2]
        if fstype == "cgroup2":
            if mount_point == "/sys/fs/cgroup":
                unified = True
            else:
                v2_elsewhere = True
        elif fstype == "cgroup":
            v1 = True
    if unified:
        return "unified"
    if v1:
        return "hybrid" if v2_elsewhere else "legacy"
    return "none"


def read_cgroup_mode(root: Path = Path("/")) -> CgroupMode:
    mounts = read_text(root, "/proc/self/mounts") or read_text(root, "/proc/mounts")
    if mounts is not None:
        return parse_cgroup_mode(mounts)
    # No mount table (a minimal fake tree): judge from what the directory holds.
    if under(root, "/sys/fs/cgroup/cgroup.controllers").is_file():
        return "unified"
    if under(root, "/sys/fs/cgroup/memory").is_dir():
        return "legacy"
    return "none"


def read_reclaim_interface(
    root: Path = Path("/"), kernel: KernelRelease | None = None
) -> ReclaimInterface:
    """Probe the reclaim knobs; `kernel` decides whether memory.reclaim takes swappiness=."""
    mode = read_cgroup_mode(root)
    memory_reclaim = mode == "unified" and under(root, "/sys/fs/cgroup/memory.reclaim").is_file()
    swappiness_key = memory_reclaim and kernel is not None and kernel.at_least(SWAPPINESS_KEY_SINCE)
    return ReclaimInterface(
        cgroup_mode=mode,
        memory_reclaim=memory_reclaim,
        swappiness_key=swappiness_key,
        drop_caches=under(root, "/proc/sys/vm/drop_caches").is_file(),
        compact_memory=under(root, "/proc/sys/vm/compact_memory").is_file(),
        vm_swappiness=read_int(root, "/proc/sys/vm/swappiness"),
    )
