"""One immutable snapshot of everything the agent reads, and the one function that takes it."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from vmreclaim.guest.observe._files import keep_open
from vmreclaim.guest.observe.buddy import BuddyInfo, FreeSplit, read_buddyinfo, split_free
from vmreclaim.guest.observe.cpu import CpuTimes, read_cpu_times
from vmreclaim.guest.observe.kernel import (
    KernelRelease,
    ReclaimInterface,
    read_kernel_release,
    read_reclaim_interface,
)
from vmreclaim.guest.observe.memory import (
    MemInfo,
    VmStat,
    empty_meminfo,
    parse_vmstat,
    read_meminfo,
    read_vmstat,
)
from vmreclaim.guest.observe.pressure import Pressure, read_pressure
from vmreclaim.guest.observe.reporting import ReportingPath, read_reporting_path
from vmreclaim.guest.observe.thp import HugePages, huge_pages
from vmreclaim.guest.observe.written import WrittenOnce

DEFAULT_PAGE_SIZE = 4096

# The files `observe` reads every time (the rest are the Setup's): a loop keeps them open
# (vmreclaim.guest.observe._files.keep_open).
TICK_FILES = (
    "/proc/meminfo",
    "/proc/vmstat",
    "/proc/stat",
    "/proc/buddyinfo",
    "/proc/pressure/memory",
    "/proc/pressure/io",
    "/sys/kernel/mm/transparent_hugepage/enabled",
)

# Names used in Observation.incomplete. A whole source that could not be read is named alone
# ("buddyinfo"); a missing key inside a source is "<source>.<key>" ("meminfo.MemAvailable").
MEMINFO = "meminfo"
VMSTAT = "vmstat"
CPU = "cpu"
PSI_MEMORY = "psi.memory"
PSI_IO = "psi.io"
BUDDYINFO = "buddyinfo"
KERNEL = "kernel"


@dataclass(frozen=True)
class Observation:
    """The guest's memory state at `timestamp` (seconds on the clock `observe` was given).

    `incomplete` names every part that could not be read (see the names above). A policy must take
    no action when a part it relies on is incomplete: ask `is_complete(...)`.
    """

    timestamp: float
    page_size: int
    kernel: KernelRelease | None
    memory: MemInfo
    vmstat: VmStat
    cpu: CpuTimes | None
    memory_pressure: Pressure | None
    io_pressure: Pressure | None
    buddy: BuddyInfo | None
    free: FreeSplit | None  # free memory split at reporting.order; None without buddyinfo
    reporting: ReportingPath
    reclaim: ReclaimInterface
    huge_pages: HugePages
    incomplete: tuple[str, ...]
    written: WrittenOnce | None = None
    """Files written once and not read since; None unless the agent watches writes
    (vmreclaim.guest.dropbehind adds it to each tick's snapshot)."""

    def is_complete(self, *parts: str) -> bool:
        """True when none of `parts` (all parts, if none given) is incomplete.

        A part covers its keys: "meminfo" is incomplete if "meminfo.MemAvailable" is.
        """
        if not parts:
            return not self.incomplete
        return not any(
            missing == part or missing.startswith(part + ".")
            for missing in self.incomplete
            for part in parts
        )

    @property
    def reclaimable_cache_bytes(self) -> int | None:
        """Active(file) + Inactive(file) + SReclaimable."""
        return self.memory.reclaimable_cache_bytes


def keep_tick_files_open(root: Path = Path("/")) -> AbstractContextManager[None]:
    """While the block runs, `observe` reads TICK_FILES from descriptors kept open."""
    return keep_open(root, TICK_FILES)


@dataclass(frozen=True)
class Setup:
    """The parts of an observation that change only when someone reconfigures the guest: the
    kernel, its reclaim knobs (vm.swappiness among them) and the path free pages take to the
    host. Ten of an observation's seventeen file reads, so a loop reads them now and then
    (Agent: once a minute) and passes them to `observe`."""

    kernel: KernelRelease | None
    reclaim: ReclaimInterface
    reporting: ReportingPath


def read_setup(root: Path = Path("/")) -> Setup:
    kernel = read_kernel_release(root)
    return Setup(kernel, read_reclaim_interface(root, kernel), read_reporting_path(root))


def observe(
    root: Path = Path("/"),
    clock: Callable[[], float] | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    setup: Setup | None = None,
) -> Observation:
    """Read everything under `root` once. Never raises for a missing file: it says so instead.

    `clock` stamps the snapshot (the daemon passes time.monotonic); without one the stamp is 0.
    `page_size` is os.sysconf("SC_PAGE_SIZE") in a guest; the default keeps tests deterministic.
    `setup`: the guest's setup as read earlier (read_setup); without it, read now.
    """
    timestamp = clock() if clock is not None else 0.0
    incomplete: list[str] = []

    if setup is None:
        setup = read_setup(root)
    kernel = setup.kernel
    if kernel is None:
        incomplete.append(KERNEL)

    memory = read_meminfo(root)
    if memory is None:
        memory = empty_meminfo()
        incomplete.append(MEMINFO)
    else:
        incomplete.extend(f"{MEMINFO}.{key}" for key in memory.missing)

    vmstat = read_vmstat(root)
    if vmstat is None:
        vmstat = parse_vmstat("")
        incomplete.append(VMSTAT)
    else:
        incomplete.extend(f"{VMSTAT}.{key}" for key in vmstat.missing)

    cpu = read_cpu_times(root)
    memory_pressure = read_pressure("memory", root)
    io_pressure = read_pressure("io", root)
    buddy = read_buddyinfo(root)
    for name, value in (
        (CPU, cpu),
        (PSI_MEMORY, memory_pressure),
        (PSI_IO, io_pressure),
        (BUDDYINFO, buddy),
    ):
        if value is None:
            incomplete.append(name)

    reporting = setup.reporting
    free = None if buddy is None else split_free(buddy, reporting.order, page_size)
    return Observation(
        timestamp=timestamp,
        page_size=page_size,
        kernel=kernel,
        memory=memory,
        vmstat=vmstat,
        cpu=cpu,
        memory_pressure=memory_pressure,
        io_pressure=io_pressure,
        buddy=buddy,
        free=free,
        reporting=reporting,
        reclaim=setup.reclaim,
        huge_pages=huge_pages(root, memory, vmstat),
        incomplete=tuple(incomplete),
    )
