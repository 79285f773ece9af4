"""Readers of the guest kernel's memory state, each taking the filesystem root.

Each module reads one source into an immutable record with amounts in bytes; `observe` reads
them all into one `Observation`. Tests point `root` at a tree of verbatim kernel text.
"""

from __future__ import annotations

from vmreclaim.guest.observe.buddy import BuddyInfo, BuddyZone, FreeSplit, split_free
from vmreclaim.guest.observe.cpu import CpuTimes
from vmreclaim.guest.observe.kernel import KernelRelease, ReclaimInterface
from vmreclaim.guest.observe.memory import MemInfo, VmStat
from vmreclaim.guest.observe.pressure import Pressure, PressureLine
from vmreclaim.guest.observe.reporting import ReportingPath, VirtioBalloon
from vmreclaim.guest.observe.snapshot import (
    Observation,
    Setup,
    keep_tick_files_open,
    observe,
    read_setup,
)
from vmreclaim.guest.observe.thp import HugePages
from vmreclaim.guest.observe.written import WrittenFile, WrittenOnce

__all__ = [
    "BuddyInfo",
    "BuddyZone",
    "CpuTimes",
    "FreeSplit",
    "HugePages",
    "KernelRelease",
    "MemInfo",
    "Observation",
    "Pressure",
    "PressureLine",
    "ReclaimInterface",
    "ReportingPath",
    "Setup",
    "VirtioBalloon",
    "VmStat",
    "WrittenFile",
    "WrittenOnce",
    "keep_tick_files_open",
    "observe",
    "read_setup",
    "split_free",
]
