"""What every policy shares: the Decision it returns, its registry entry, and small pure helpers.

A policy is a pure function `decide(observation, config, state) -> (Decision, new_state)`: no I/O,
no sleeping, no clock reads (time is `observation.timestamp`), so the daemon, the tests and any
simulator run the same code. Config and state are frozen dataclasses; the daemon keeps the state
between ticks and hands it back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from vmreclaim.guest.observe import Observation
from vmreclaim.guest.observe.snapshot import CPU, MEMINFO, VMSTAT

ConfigT = TypeVar("ConfigT")
StateT = TypeVar("StateT")

# The parts of an Observation the cache policies read (see Observation.incomplete for the names).
# "meminfo.MemAvailable" is not among them: 3.13 kernels lack it and no policy needs it.
CACHE_PARTS = (
    f"{MEMINFO}.MemTotal",
    f"{MEMINFO}.Active(file)",
    f"{MEMINFO}.Inactive(file)",
    f"{MEMINFO}.SReclaimable",
)
CPU_PARTS = (CPU,)
REFAULT_PARTS = (f"{VMSTAT}.workingset_refault_file",)


@dataclass(frozen=True)
class Decision:
    """What a policy wants done this tick. The daemon acts in this order: split partly freed
    huge pages, reclaim, compact.

    reclaim_bytes: page cache to reclaim (0: none), by the method actions.plan_reclaim picks.
    drop_caches: write 3 to /proc/sys/vm/drop_caches instead (the WSL2 dropcache baseline).
    compact: write 1 to /proc/sys/vm/compact_memory, after any reclaim.
    reason: one short line for people, e.g. "busy: 600 MiB inactive cache above the 180 MiB
        floor; reclaiming 256 MiB".
    compact_reason: why compact, where it differs from `reason` ("" otherwise).
    split_huge_pages: run the deferred split shrinker, so that huge pages processes partly freed
        give their free part back (actions.split_huge_pages).
    split_reason: why split.
    drop_written_before: drop the page cache of files closed after writing before this time (on
        the observation's clock) and not read since (vmreclaim.guest.dropbehind); None: not.
    drop_reason: why drop them.
    """

    reclaim_bytes: int = 0
    drop_caches: bool = False
    compact: bool = False
    reason: str = ""
    compact_reason: str = ""
    split_huge_pages: bool = False
    split_reason: str = ""
    drop_written_before: float | None = None
    drop_reason: str = ""

    @property
    def acts(self) -> bool:
        return (
            self.reclaim_bytes > 0
            or self.drop_caches
            or self.compact
            or self.split_huge_pages
            or self.drop_written_before is not None
        )


def no_action(reason: str) -> Decision:
    return Decision(reason=reason)


@dataclass(frozen=True)
class Policy(Generic[ConfigT, StateT]):
    """A registry entry: the decide function with its config and state types."""

    name: str
    summary: str
    decide: Callable[[Observation, ConfigT, StateT], tuple[Decision, StateT]]
    config_type: Callable[[], ConfigT]  # the dataclass; called with no arguments: the defaults
    initial_state: Callable[[], StateT]
    watches_writes: Callable[[ConfigT], bool] = lambda config: False
    """Whether, under `config`, the policy reads Observation.written (the agent then watches
    file writes with fanotify, which costs a little CPU per write)."""
    floor: Callable[[ConfigT, StateT], int | None] = lambda config, state: None
    """The reclaimable cache the policy keeps now, for the agent's metrics; None if it has no
    floor."""
    holds_back: Callable[[ConfigT, StateT, float], str | None] = lambda config, state, now: None
    """Why the policy takes nothing at time `now` (the observation's clock), e.g. a pause after
    memory pressure; None when it would. The agent refuses the host's requests meanwhile."""


def missing_parts(obs: Observation, parts: tuple[str, ...]) -> tuple[str, ...]:
    """The `parts` ("meminfo.MemTotal", "cpu") that `obs` could not read.

    A key counts as missing when its whole source is ("meminfo" unreadable) or the key is.
    """
    missing = []
    for part in parts:
        source = part.partition(".")[0]
        if source in obs.incomplete or not obs.is_complete(part):
            missing.append(part)
    return tuple(missing)


def incomplete_reason(missing: tuple[str, ...]) -> str:
    return f"no action: could not read {', '.join(missing)}"


def counter_delta(new: int, old: int) -> int:
    """Growth of a cumulative kernel counter; 0 when it went backwards (wrapped, or reset)."""
    return new - old if new >= old else 0
