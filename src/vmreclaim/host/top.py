"""`vmreclaim top`: every VM's footprint on the host beside what its guest uses.

`snapshot_json` is the machine-readable shape (`--once --json`, and the view a daemon publishes
for `top` beside it); `view_from_json` turns it back into records; `render_table` is the rich
view. None of them does I/O.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmreclaim.agent_protocol import AgentReport
from vmreclaim.errors import HostError
from vmreclaim.host.fleet import Fleet, FleetPoll, VmFailure
from vmreclaim.host.records import (
    AgentStatus,
    BalloonState,
    Exchange,
    GuestStats,
    HostMemory,
    VmObservation,
    VmSample,
)
from vmreclaim.qemu.footprint import Footprint
from vmreclaim.units import format_size

if TYPE_CHECKING:
    from rich.table import Table

    from vmreclaim.host.agents import AgentChannels
    from vmreclaim.host.discovery import Found

_SPARKS = "▁▂▃▄▅▆▇█"


def vm_json(vm: VmObservation, max_stats_age_s: float) -> dict[str, Any]:
    sample = vm.sample
    balloon = sample.balloon
    guest = sample.guest
    return {
        "name": sample.name,
        "address": sample.address,
        "pid": sample.pid,
        "host_bytes": sample.host_bytes,
        "rss_bytes": sample.footprint.rss_bytes if sample.footprint else None,
        "guest_ram_bytes": sample.footprint.guest_ram_bytes if sample.footprint else None,
        "balloon": None
        if balloon is None
        else {
            "ram_bytes": balloon.ram_bytes,
            "actual_bytes": balloon.actual_bytes,
            "target_bytes": vm.balloon_target_bytes,
        },
        "free_page_reporting": balloon.free_page_reporting if balloon else None,
        "guest": None
        if guest is None
        else {
            "updated_at": guest.updated_at,
            "age_s": vm.stats_age_s,
            "stale": vm.stats_stale(max_stats_age_s),
            "total_bytes": guest.total_bytes,
            "used_bytes": guest.used_bytes,
            "free_bytes": guest.free_bytes,
            "available_bytes": guest.available_bytes,
            "cache_bytes": guest.cache_bytes,
            "major_faults": guest.major_faults,
        },
        "host_unused_bytes": vm.host_unused_bytes,
        "returned_bytes": vm.returned_bytes,
        "trend": list(vm.trend),
        "agent": None if vm.agent is None else agent_json(vm.agent),
    }


def agent_json(agent: AgentStatus) -> dict[str, Any]:
    """The agent's channel: its latest report as the guest sent it (validated, unverified)."""
    report = agent.report
    return {
        "path": agent.path,
        "connected": agent.connected,
        "age_s": agent.report_age_s,
        "reports": agent.reports,
        "dropped": dict(agent.dropped),
        "report": None if report is None else dataclasses.asdict(report),
        "requests": dict(agent.requests),
        "last_request": None
        if agent.last_request is None
        else dataclasses.asdict(agent.last_request),
    }


def _agent(entry: Mapping[str, Any] | None) -> AgentStatus | None:
    if entry is None:
        return None
    report = entry["report"]
    last_request = entry.get("last_request")
    return AgentStatus(
        path=entry["path"],
        connected=entry["connected"],
        report=None if report is None else AgentReport(**report),
        report_age_s=entry["age_s"],
        reports=entry["reports"],
        dropped=tuple(entry["dropped"].items()),
        requests=tuple(entry.get("requests", {}).items()),
        last_request=None if last_request is None else Exchange(**last_request),
    )


def snapshot_json(
    poll: FleetPoll, host: HostMemory | None, now: float, max_stats_age_s: float
) -> dict[str, Any]:
    return {
        "time": now,
        "stale_after_s": max_stats_age_s,
        "host": None
        if host is None
        else {
            "total_bytes": host.total_bytes,
            "available_bytes": host.available_bytes,
            "memory_pressure_some_avg10": host.psi_some_avg10,
        },
        "vms": [vm_json(vm, max_stats_age_s) for vm in poll.vms],
        "unreachable": [
            {
                "address": failure.address,
                "error": failure.error,
                "hung": failure.hung,
                "connecting": failure.connecting,
            }
            for failure in poll.unreachable
        ],
    }


@dataclass(frozen=True)
class PublishedView:
    """A daemon's view (view.py), back in records: what `top` renders beside `host run`."""

    taken_at: float
    host: HostMemory | None
    poll: FleetPoll
    max_stats_age_s: float


def view_from_json(view: Mapping[str, Any]) -> PublishedView:
    """The inverse of `snapshot_json`, for the table. Raises HostError on another shape."""
    try:
        host = view["host"]
        return PublishedView(
            taken_at=float(view["time"]),
            host=None
            if host is None
            else HostMemory(
                host["total_bytes"],
                host["available_bytes"],
                host["memory_pressure_some_avg10"],
                None,
            ),
            poll=FleetPoll(
                tuple(_observation(entry, float(view["time"])) for entry in view["vms"]),
                tuple(
                    VmFailure(
                        entry["address"],
                        entry["error"],
                        bool(entry["hung"]),
                        connecting=bool(entry.get("connecting", False)),  # since 2026-12
                    )
                    for entry in view["unreachable"]
                ),
            ),
            max_stats_age_s=float(view["stale_after_s"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise HostError(f"the daemon's view is not what this top reads: {err!r}") from err


def _observation(entry: Mapping[str, Any], taken_at: float) -> VmObservation:
    balloon = entry["balloon"]
    guest = entry["guest"]
    footprint = (
        None
        if entry["rss_bytes"] is None
        else Footprint(taken_at, entry["rss_bytes"], entry["guest_ram_bytes"])
    )
    sample = VmSample(
        name=entry["name"],
        address=entry["address"],
        pid=entry["pid"],
        footprint=footprint,
        balloon=None
        if balloon is None
        else BalloonState(
            balloon["ram_bytes"], balloon["actual_bytes"], entry["free_page_reporting"]
        ),
        guest=None
        if guest is None
        else GuestStats(
            updated_at=guest["updated_at"],
            total_bytes=guest["total_bytes"],
            free_bytes=guest["free_bytes"],
            available_bytes=guest["available_bytes"],
            cache_bytes=guest["cache_bytes"],
            major_faults=guest["major_faults"],
            minor_faults=None,
        ),
    )
    return VmObservation(
        sample,
        first_seen=taken_at,
        returned_bytes=entry["returned_bytes"],
        trend=tuple(entry["trend"]),
        balloon_target_bytes=balloon["target_bytes"] if balloon else None,
        stats_age_s=guest["age_s"] if guest else None,
        agent=_agent(entry.get("agent")),
    )


def sparkline(values: Sequence[int], width: int = 10) -> str:
    values = list(values)[-width:]
    if not values:
        return ""
    low, high = min(values), max(values)
    if high == low:
        return _SPARKS[0] * len(values)
    scale = (len(_SPARKS) - 1) / (high - low)
    return "".join(_SPARKS[round((value - low) * scale)] for value in values)


def _size(value: int | None) -> str:
    return "-" if value is None else format_size(value)


def stats_age_text(vm: VmObservation, max_stats_age_s: float) -> str:
    """How old the guest's figures are: `1 s`, or red `stale 12 s` (`stale` when the guest
    never reported); `-` for a VM without a balloon, which has no statistics to go stale."""
    if vm.sample.balloon is None:
        return "-"
    age = "" if vm.stats_age_s is None else f" {vm.stats_age_s:.0f} s"
    if vm.stats_stale(max_stats_age_s):
        return f"[red]stale{age}[/red]"
    return age.strip()


def agent_text(agent: AgentStatus | None) -> str:
    """What the guest agent says could come back; `-` without a channel or a report yet."""
    report = agent.report if agent else None
    if agent is None or report is None:
        return "-"
    size = _size(report.reclaimable_bytes)
    old = agent.report_age_s is not None and agent.report_age_s > 3 * max(report.interval_s, 2)
    return f"[dim]{size} ({agent.report_age_s:.0f} s ago)[/dim]" if old else size


def not_watched_json(found: Sequence[Found]) -> list[dict[str, Any]]:
    """What discovery found but cannot use: address, name, pid, what named it, and why."""
    return [
        {
            "address": entry.address,
            "name": entry.name,
            "pid": entry.pid,
            "found_by": entry.found_by,
            "reason": entry.reason,
        }
        for entry in found
    ]


def render_table(
    poll: FleetPoll,
    host: HostMemory | None,
    max_stats_age_s: float,
    not_watched: Sequence[Found] = (),
) -> Table:
    from rich.table import Table

    title = "vmreclaim top"
    if host is not None:
        title += (
            f"  host available {format_size(host.available_bytes)}"
            f" of {format_size(host.total_bytes)}"
        )
        if host.psi_some_avg10 is not None:
            title += f", memory pressure {host.psi_some_avg10:.1f} %"
    table = Table(title=title, title_justify="left")
    for column in (
        "VM",
        "host",
        "guest used",
        "cache",
        "free",
        "stats age",
        "balloon target/actual",
        "reporting",
        "held unused",
        "returned",
        "agent can give",
        "trend",
    ):
        table.add_column(column, justify="left" if column in ("VM", "trend") else "right")
    for vm in sorted(poll.vms, key=lambda vm: vm.sample.name):
        sample = vm.sample
        balloon = sample.balloon
        guest = sample.guest
        reporting = balloon.free_page_reporting if balloon else None
        actual = _size(balloon.actual_bytes if balloon else None)
        table.add_row(
            f"{sample.name} [dim]{sample.pid or ''}[/dim]",
            _size(sample.host_bytes),
            _size(guest.used_bytes if guest else None),
            _size(guest.cache_bytes if guest else None),
            _size(guest.free_bytes if guest else None),
            stats_age_text(vm, max_stats_age_s),
            f"{_size(vm.balloon_target_bytes)} / {actual}",
            "-" if reporting is None else "[green]on[/green]" if reporting else "[red]off[/red]",
            _size(vm.host_unused_bytes),
            _size(vm.returned_bytes),
            agent_text(vm.agent),
            sparkline(vm.trend),
        )
    for failure in poll.unreachable:
        state = "hung" if failure.hung else "unreachable"
        table.add_row(f"[red]{failure.address}[/red]", state, *[""] * 9, failure.error[:60])
    for entry in not_watched:
        label = f"{entry.name} {entry.pid}" if entry.name and entry.pid else entry.address
        reason = (entry.reason or "")[:60]
        table.add_row(f"[dim]{label}[/dim]", "not watched", *[""] * 9, reason)
    return table


async def poll_once(
    fleet: Fleet, wait_for_stats: float, agents: AgentChannels | None = None
) -> FleetPoll:
    """Connect, then poll until every VM with a balloon has guest statistics (a fresh
    connection turns polling on, and the guest answers within its interval) and every agent
    channel that connected has a report, or time is up."""
    await fleet.connect_all()
    if agents is not None:
        await agents.refresh()
    deadline = time.monotonic() + wait_for_stats
    while True:
        poll = await fleet.poll()
        if agents is not None:
            poll = FleetPoll(agents.attach(poll.vms), poll.unreachable)
        waiting = [
            vm for vm in poll.vms if vm.sample.balloon is not None and vm.stats_age_s is None
        ]
        awaited = agents is not None and agents.awaited(poll.vms)
        if not (waiting or awaited) or time.monotonic() >= deadline:
            return poll
        await asyncio.sleep(0.5)


async def run_live(
    fleet: Fleet,
    interval: float,
    proc: Path,
    max_stats_age_s: float,
    not_watched: Callable[[], Sequence[Found]] = tuple,
    *,
    agents: AgentChannels | None = None,
) -> None:
    from rich.live import Live

    from vmreclaim.host.hostmem import read_host_memory

    await fleet.connect_all()
    with Live(auto_refresh=False, screen=False) as live:
        while True:
            if agents is not None:
                await agents.refresh()
            poll = await fleet.poll()
            if agents is not None:
                poll = FleetPoll(agents.attach(poll.vms), poll.unreachable)
            host = read_host_memory(proc)
            table = render_table(poll, host, max_stats_age_s, not_watched())
            live.update(table, refresh=True)
            await asyncio.sleep(interval)
