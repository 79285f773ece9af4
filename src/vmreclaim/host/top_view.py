"""`vmreclaim top` beside `vmreclaim host run`: the daemon's view (view.py) instead of the VMs.

The daemon holds every monitor it watches, so while one answers on its socket `top` shows what
it published, restricted to the VMs the user named (all of them when none were named). A
named VM the daemon does not watch is listed as unreachable with the reason.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vmreclaim.errors import HostError
from vmreclaim.host.sources import SourceList
from vmreclaim.host.top import render_table, view_from_json
from vmreclaim.host.view import NoDaemon, read_view


def daemon_view(socket: Path, *, named: bool, timeout: float) -> dict[str, Any] | None:
    """The daemon's view, or None when no daemon answers at the default socket (said on
    stderr when a socket is there but nobody answers). A socket the user named must answer."""
    try:
        return read_view(socket, timeout)
    except NoDaemon as err:
        if named:
            raise
        if err.stale:
            print(
                f"vmreclaim: {err.message} (left by a daemon that stopped?); "
                "asking the VMs directly",
                file=sys.stderr,
            )
        return None
    except HostError as err:
        if named:
            raise
        print(f"vmreclaim: {err.message}; asking the VMs directly", file=sys.stderr)
        return None


def settled_view(
    socket: Path, view: dict[str, Any], *, wait: float, timeout: float
) -> dict[str, Any]:
    """The daemon's view once no VM in it is still making its first connection (a daemon
    that has just started), read again for at most `wait` seconds; then as it is."""
    deadline = time.monotonic() + wait
    while any(vm.get("connecting") for vm in view["unreachable"]):
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
        view = read_view(socket, timeout)
    return view


def restricted(view: Mapping[str, Any], sources: SourceList, socket: Path) -> dict[str, Any]:
    """The view with only the VMs `sources` name (all when they name none), and a line for
    every VM named by its address that the daemon does not watch."""
    if not sources:
        return {**view, "daemon": str(socket)}
    vms = [vm for vm in view["vms"] if sources.covers(str(vm.get("address")))]
    unreachable = [vm for vm in view["unreachable"] if sources.covers(str(vm.get("address")))]
    known = {str(vm.get("address")) for vm in (*view["vms"], *view["unreachable"])}
    unreachable += [
        {
            "address": address,
            "error": f"not watched by the daemon at {socket} (top --no-daemon asks it directly)",
            "hung": False,
        }
        for address in sources.literal_addresses()
        if address not in known
    ]
    return {**view, "vms": vms, "unreachable": unreachable, "daemon": str(socket)}


def print_once(view: Mapping[str, Any], *, as_json: bool) -> bool:
    """Print the view as `top --once` prints its own poll; True when some VMs did not answer
    the daemon (HostError when none did)."""
    if as_json:
        print(json.dumps(view, indent=2))
    else:
        from rich.console import Console

        published = view_from_json(view)
        Console().print(render_table(published.poll, published.host, published.max_stats_age_s))
    failed = view["unreachable"]
    if not failed:
        return False
    summary = "; ".join(f"{vm['address']}: {vm['error']}" for vm in failed)
    if not view["vms"]:
        raise HostError(f"no VM answered the daemon at {view['daemon']}: {summary}")
    print(
        f"vmreclaim: {len(failed)} of {len(failed) + len(view['vms'])} VMs did not answer the "
        f"daemon: {summary}",
        file=sys.stderr,
    )
    return True


async def run_live(socket: Path, sources: SourceList, interval: float, timeout: float) -> None:
    """Refresh from the daemon every interval until Ctrl-C; a daemon that stops ends it."""
    from rich.live import Live

    with Live(auto_refresh=False, screen=False) as live:
        while True:
            view = restricted(read_view(socket, timeout), sources, socket)
            published = view_from_json(view)
            table = render_table(published.poll, published.host, published.max_stats_age_s)
            table.caption = f"from the daemon at {socket}"
            live.update(table, refresh=True)
            await asyncio.sleep(interval)
