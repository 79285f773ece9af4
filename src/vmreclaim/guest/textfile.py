"""The agent's metrics in node_exporter's textfile-collector format, so that every VM's agent
shows up in a Prometheus that already scrapes the VM's node_exporter.

node_exporter (`--collector.textfile.directory`, Debian's prometheus-node-exporter reads
/var/lib/prometheus/node-exporter) exports every `*.prom` file there at each scrape. The agent
rewrites its file after every tick, atomically: it writes a temporary file in the same
directory and renames it over the old one, so a scrape never reads half a file.

Names follow Prometheus conventions: counters end in `_total`, amounts in `_bytes`, times in
`_seconds`; a counter starts at 0 when the agent starts, which Prometheus' rate() expects.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vmreclaim import __version__
from vmreclaim.errors import UsageError

if TYPE_CHECKING:
    from vmreclaim.guest.daemon import TickReport

log = logging.getLogger(__name__)

PREFIX = "vmreclaim_guest_"
ACTIONS = ("reclaim", "drop_caches", "drop_behind", "compact", "split_huge_pages")


def _escape(value: str) -> str:
    """A label value as the text format wants it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass
class GuestMetrics:
    """What the agent did since it started, accumulated from each tick's report."""

    policy: str
    ticks: int = 0
    actions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACTIONS, 0))
    last_action_at: dict[str, float] = field(default_factory=dict)  # wall-clock seconds
    cache_returned_bytes: int = 0
    floor_bytes: int | None = None
    refaulted_bytes: int | None = None
    reclaimable_cache_bytes: int | None = None
    unreportable_free_bytes: int | None = None
    last_tick_at: float | None = None
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    def record(
        self,
        report: TickReport,
        floor_bytes: int | None,
        cpu_seconds: dict[str, float],
        now: float,
    ) -> None:
        """Count one tick: its actions, what they returned, and the state after it."""
        self.ticks += 1
        self.last_tick_at = now
        decision = report.decision
        done = {
            "reclaim": report.reclaim is not None and not decision.drop_caches,
            "drop_caches": report.reclaim is not None and decision.drop_caches,
            "drop_behind": report.dropped is not None and report.dropped.files > 0,
            "compact": report.compaction is not None,
            "split_huge_pages": report.split is not None,
        }
        for action, happened in done.items():
            if happened:
                self.actions[action] += 1
                self.last_action_at[action] = now
        returned = report.reclaimed_bytes
        if returned is not None and returned > 0:
            self.cache_returned_bytes += returned
        obs = report.after or report.before
        self.floor_bytes = floor_bytes
        refaults = obs.vmstat.workingset_refault_file
        self.refaulted_bytes = None if refaults is None else refaults * obs.page_size
        self.reclaimable_cache_bytes = obs.reclaimable_cache_bytes
        self.unreportable_free_bytes = None if obs.free is None else obs.free.unreportable_bytes
        self.cpu_seconds = dict(cpu_seconds)

    def render(self) -> str:
        """The text exposition format, one HELP and TYPE per family."""
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            if not samples:
                return
            lines.append(f"# HELP {PREFIX}{name} {help_text}")
            lines.append(f"# TYPE {PREFIX}{name} {kind}")
            lines.extend(f"{PREFIX}{name}{labels} {value:.17g}" for labels, value in samples)

        def one(value: float | None) -> list[tuple[str, float]]:
            return [] if value is None else [("", value)]

        family(
            "info",
            "gauge",
            "The agent's version and policy (always 1).",
            [(f'{{policy="{_escape(self.policy)}",version="{_escape(__version__)}"}}', 1)],
        )
        family("ticks_total", "counter", "Ticks since the agent started.", one(self.ticks))
        family(
            "actions_total",
            "counter",
            "Actions taken since the agent started, by kind.",
            [(f'{{action="{action}"}}', count) for action, count in self.actions.items()],
        )
        family(
            "last_action_timestamp_seconds",
            "gauge",
            "When the agent last took each kind of action (Unix time).",
            [(f'{{action="{action}"}}', at) for action, at in sorted(self.last_action_at.items())],
        )
        family(
            "cache_returned_bytes_total",
            "counter",
            "Reclaimable cache that went away during the ticks that acted (/proc/meminfo).",
            one(self.cache_returned_bytes),
        )
        family(
            "floor_bytes",
            "gauge",
            "Reclaimable cache the policy keeps now (its floor; absent for policies without).",
            one(self.floor_bytes),
        )
        family(
            "refaulted_bytes_total",
            "counter",
            "Page cache read back soon after it was reclaimed, since boot "
            "(workingset_refault_file).",
            one(self.refaulted_bytes),
        )
        family(
            "reclaimable_cache_bytes",
            "gauge",
            "Active(file) + Inactive(file) + SReclaimable after the last tick.",
            one(self.reclaimable_cache_bytes),
        )
        family(
            "unreportable_free_bytes",
            "gauge",
            "Free memory in blocks below the reporting order, which cannot go back to the host.",
            one(self.unreportable_free_bytes),
        )
        family(
            "last_tick_timestamp_seconds",
            "gauge",
            "When the agent last ticked (Unix time): an old value means a silent agent.",
            one(self.last_tick_at),
        )
        family(
            "cpu_seconds_total",
            "counter",
            "The agent's CPU time (the kernel's work on its behalf included), by what it did.",
            [(f'{{part="{_escape(part)}"}}', s) for part, s in sorted(self.cpu_seconds.items())],
        )
        return "\n".join(lines) + "\n"


def check_directory(path: Path) -> None:
    """UsageError unless `path`'s directory exists and is writable: checked at start, so a
    mistyped path fails at once instead of as a warning every tick."""
    directory = path.parent
    if not path.name.endswith(".prom"):
        raise UsageError(
            f"textfile {path} does not end in .prom",
            hint="node_exporter's textfile collector reads *.prom files only",
        )
    if not directory.is_dir():
        raise UsageError(
            f"textfile directory {directory} does not exist",
            hint="create it, or install prometheus-node-exporter (it reads "
            "/var/lib/prometheus/node-exporter)",
        )
    if not os.access(directory, os.W_OK):
        raise UsageError(f"textfile directory {directory} is not writable by this user")


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` by a rename, readable by everyone (node_exporter runs as its own
    user). Raises OSError."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class TextfileWriter:
    """Rewrites the file after each tick; a failed write is logged once until one succeeds."""

    def __init__(
        self, path: Path, policy: str, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self.metrics = GuestMetrics(policy)
        self._wall_clock = wall_clock
        self._failing = False

    def tick(self, report: TickReport, floor_bytes: int | None, cpu: dict[str, float]) -> None:
        self.metrics.record(report, floor_bytes, cpu, self._wall_clock())
        try:
            write_atomically(self.path, self.metrics.render())
        except OSError as err:
            if not self._failing:
                log.warning("cannot write the textfile %s: %s", self.path, err)
            self._failing = True
        else:
            if self._failing:
                log.info("the textfile %s is written again", self.path)
            self._failing = False
