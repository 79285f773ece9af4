"""The soak: `vmreclaim host run` left running over N QEMUs that crash, restart, freeze and
lose their sockets while the host's memory swings (issue 12, point 7).

    python -m vmreclaim.bench.soak --vms 10 --minutes 20

The daemon is the real command in a child process (soak_processes.py), with its own
configuration, view socket and metrics port, its VMs named by a glob (no discovery) and the
host's meminfo and PSI read from files the soak rewrites (`[host] proc`). The QEMUs are paused
(-S, 64 MiB with a balloon): their monitors answer as a running VM's do, at no CPU cost. A
seeded random schedule, logged, picks one event at a time:

- crash: kill -9 a QEMU, leave its socket file (refused connections) for 0-6 s, start a new
  QEMU on the same path;
- freeze: SIGSTOP a QEMU for 2-10 s (longer than the call timeout: the daemon sees it hung),
  then SIGCONT;
- vanish: rename a socket out of the glob for 1-8 s (the daemon forgets the VM), then back;
- pressure: move the host to another of LOADS (plenty, between the thresholds, short of
  MemAvailable, under PSI).

What is measured, from the daemon's published view (read as `top` reads it) once per cycle
and from its process: no traceback or error line in its log and no exit; its RSS
(/proc/PID/status VmRSS) after the warm-up and at the end; for every VM that comes back, the
cycles until the daemon lists it answering, with its new process, its balloon read and the
target the policy holds for it equal to the balloon's size; for every host swing, the cycles
until the daemon's view shows the new figures; and SIGTERM at the end (exit 0 within 2 s).
A paused guest sends no statistics, so the policy, which acts on fresh statistics only, never
shrinks one: the target it holds is the balloon's full size, and "reaches its target" means
exactly that the daemon has it back under control with the target it computes.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import shutil
import socket
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmreclaim.bench.soak_processes import (
    DaemonProcess,
    FakeHostProc,
    HostLoad,
    PausedQemus,
    host_daemon,
    paused_qemus,
)
from vmreclaim.bench.standalone import run_standalone, write_results
from vmreclaim.errors import HostError, VmreclaimError
from vmreclaim.host.view import read_view

log = logging.getLogger(__name__)

GIB = 1 << 30
HOST_TOTAL_BYTES = 16 * GIB
LOADS = (
    HostLoad("plenty", 12 * GIB, 0.0),  # above release_available: grow back
    HostLoad("between", 2 * GIB + GIB // 4, 0.0),  # between the thresholds: hold
    HostLoad("short", 1 * GIB, 0.0),  # under keep_available: shrink
    HostLoad("pressured", 8 * GIB, 40.0),  # PSI some avg10 over the limit: shrink
)
KINDS = ("crash", "freeze", "vanish", "pressure")
FLEET_MAX_BACKOFF_S = 30.0
"""fleet.Fleet's max_backoff, which host run keeps: a VM that failed many connects in a row
is tried again at most this long after the last try."""
MAX_RSS_GROWTH_BYTES = 5_000_000
"""Issue 12: the daemon's RSS grows by under 5 MB over the soak."""
HOST_SWING_BOUND_CYCLES = 3
"""The host's files are read every cycle: the next view shows them, one more for a cycle
whose read came just before the swing."""
_TICK_S = 0.25
_RSS_EVERY_S = 10.0


@dataclass(frozen=True)
class SoakSettings:
    vms: int = 10
    seconds: float = 1200.0
    """How long the chaos goes on, warm-up included."""
    warmup_s: float = 60.0
    """Chaos from the start; the daemon's RSS is taken as its start after this much, so the
    first use of every path (imports, caches) does not count as growth."""
    interval: float = 1.0
    mean_gap_s: float = 3.0
    """Mean seconds between two events (exponential gaps)."""
    seed: int = 12

    @property
    def recovery_bound_cycles(self) -> int:
        """A VM that comes back is connected at the fleet's next try, at most
        FLEET_MAX_BACKOFF_S after the last one, and listed one cycle later: the bound the
        design gives, with a cycle of slack either side."""
        return math.ceil(FLEET_MAX_BACKOFF_S / self.interval) + 3


@dataclass(frozen=True)
class ChaosEvent:
    at_s: float
    """Seconds since the chaos began."""
    kind: str
    vm: int | None
    """None for a host swing."""
    hold_s: float
    """How long the VM stays crashed, frozen or away; 0 for a host swing."""
    load: str | None = None


@dataclass(frozen=True)
class Recovery:
    kind: str
    vm: int | None
    at_s: float
    """When it came back (the new QEMU spawned, SIGCONT, the socket renamed back) or the host
    swung."""
    cycles: int | None
    """Views the daemon published from then until it showed the VM back (or the host's new
    figures), that one included; None when not within the bound."""
    noticed: bool
    """The daemon listed the VM as not answering while it was down (always true for a
    host swing)."""


@dataclass(frozen=True)
class SoakResult:
    settings: SoakSettings
    events: tuple[ChaosEvent, ...]
    recoveries: tuple[Recovery, ...]
    cycles: int
    """Views the daemon published during the soak, as the soak saw them."""
    metrics_cycles: int | None
    """vmreclaim_cycles_total at the end."""
    max_cycle_gap_s: float
    rss_start_bytes: int
    rss_end_bytes: int
    rss_samples: tuple[int, ...]
    """Every RSS_EVERY_S after the warm-up."""
    answering_at_end: int
    view_failures: int
    """Reads of the daemon's view that failed (it did not answer within 2 s)."""
    log_problems: tuple[str, ...]
    warnings: int
    mode_changes: int
    exit_code: int | None
    stop_s: float

    @property
    def rss_growth_bytes(self) -> int:
        return self.rss_end_bytes - self.rss_start_bytes

    def problems(self) -> list[str]:
        """Every property the soak requires that did not hold."""
        bound = self.settings.recovery_bound_cycles
        found = [f"daemon log: {line}" for line in self.log_problems]
        if self.rss_growth_bytes >= MAX_RSS_GROWTH_BYTES:
            found.append(f"RSS grew by {self.rss_growth_bytes} bytes")
        for recovery in self.recoveries:
            limit = HOST_SWING_BOUND_CYCLES if recovery.vm is None else bound
            if recovery.cycles is None or recovery.cycles > limit:
                found.append(f"not back within {limit} cycles: {recovery}")
        missing = set(KINDS) - {event.kind for event in self.events}
        if missing:
            found.append(f"no {', '.join(sorted(missing))} event")
        if self.answering_at_end != self.settings.vms:
            found.append(f"{self.answering_at_end} of {self.settings.vms} VMs answer at the end")
        if self.exit_code != 0 or self.stop_s >= 2.0:
            found.append(f"SIGTERM: exit status {self.exit_code} after {self.stop_s:.2f} s")
        return found


@dataclass
class _Down:
    """A VM in an event: down until `until` (monotonic), then recovering since `since`."""

    kind: str
    vm: int
    at_s: float
    until: float
    since: float | None = None
    """time.time() when it came back; views taken after it count."""
    pid: int | None = None
    cycles: int = 0
    noticed: bool = False


@dataclass
class _Swing:
    load: HostLoad
    at_s: float
    since: float
    cycles: int = 0


@dataclass
class _Tally:
    events: list[ChaosEvent] = field(default_factory=list)
    recoveries: list[Recovery] = field(default_factory=list)
    cycles: int = 0
    last_view_time: float | None = None
    max_gap_s: float = 0.0
    view_failures: int = 0
    rss: list[int] = field(default_factory=list)


class _Soak:
    """One soak's moving parts and bookkeeping; `run_soak` owns the processes."""

    def __init__(
        self,
        settings: SoakSettings,
        qemus: PausedQemus,
        host: FakeHostProc,
        daemon: DaemonProcess,
        view_socket: Path,
    ) -> None:
        self.settings = settings
        self.qemus = qemus
        self.host = host
        self.daemon = daemon
        self.view_socket = view_socket
        self.rng = random.Random(settings.seed)
        self.first_kinds = self.rng.sample(KINDS, len(KINDS))
        """The first events cover every kind; the rest are drawn."""
        self.load = LOADS[0]
        self.down: dict[int, _Down] = {}
        self.swing: _Swing | None = None
        self.tally = _Tally()
        self.started = time.monotonic()
        self.next_event = self.started

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def tick(self, chaos: bool) -> None:
        if self.daemon.process.poll() is not None:
            raise VmreclaimError(
                f"the daemon exited with status {self.daemon.process.returncode}; see "
                f"{self.daemon.log}"
            )
        self._bring_back()
        self._watch()
        if chaos and time.monotonic() >= self.next_event:
            self._start_event()

    @property
    def settled(self) -> bool:
        return not self.down and self.swing is None

    def _start_event(self) -> None:
        kind = self.first_kinds.pop() if self.first_kinds else self.rng.choice(KINDS)
        at_s = self.elapsed()
        if kind == "pressure":
            if self.swing is not None:
                return  # the last swing is not seen yet: try again next tick
            self.load = self.rng.choice([load for load in LOADS if load != self.load])
            self.host.set(self.load)
            self.swing = _Swing(self.load, at_s, time.time())
            self._log_event(ChaosEvent(round(at_s, 1), kind, None, 0.0, self.load.name))
        else:
            idle = [vm for vm in range(self.settings.vms) if vm not in self.down]
            if not idle:
                return
            vm = self.rng.choice(idle)
            low, high = {"crash": (0.0, 6.0), "freeze": (2.0, 10.0), "vanish": (1.0, 8.0)}[kind]
            hold = round(self.rng.uniform(low, high), 1)
            {"crash": self.qemus.crash, "freeze": self.qemus.freeze, "vanish": self._hide}[kind](vm)
            self.down[vm] = _Down(kind, vm, at_s, time.monotonic() + hold)
            self._log_event(ChaosEvent(round(at_s, 1), kind, vm, hold))
        self.next_event = time.monotonic() + self.rng.expovariate(1 / self.settings.mean_gap_s)

    def _log_event(self, event: ChaosEvent) -> None:
        self.tally.events.append(event)
        what = event.load if event.vm is None else f"vm{event.vm:03d} for {event.hold_s:.1f} s"
        log.info("%7.1f s  %-8s %s", event.at_s, event.kind, what)

    def _hide(self, vm: int) -> None:
        path = self.qemus.sockets[vm]
        os.rename(path, path.with_name(path.name + ".away"))

    def _bring_back(self) -> None:
        now = time.monotonic()
        for vm, down in self.down.items():
            if down.since is not None or now < down.until:
                continue
            if down.kind == "crash":
                self.qemus.start(vm)
            elif down.kind == "freeze":
                self.qemus.thaw(vm)
            else:
                path = self.qemus.sockets[vm]
                os.rename(path.with_name(path.name + ".away"), path)
            down.since = time.time()
            down.pid = self.qemus.pid(vm)

    def _watch(self) -> None:
        try:
            view = read_view(self.view_socket, 2.0)
        except HostError as err:
            self.tally.view_failures += 1
            log.warning("cannot read the daemon's view: %s", err.message)
            return
        taken = view.get("time")
        if not isinstance(taken, (int, float)) or taken == self.tally.last_view_time:
            return
        if self.tally.last_view_time is not None:
            self.tally.max_gap_s = max(self.tally.max_gap_s, taken - self.tally.last_view_time)
        self.tally.last_view_time = taken
        self.tally.cycles += 1
        answering = {vm["address"]: vm for vm in view["vms"]}
        for vm, down in list(self.down.items()):
            entry = answering.get(str(self.qemus.sockets[vm]))
            if down.since is None:
                down.noticed = down.noticed or entry is None
            elif taken > down.since:
                down.cycles += 1
                if _back(entry, down.pid):
                    self._recovered(vm, down, down.cycles)
                elif down.cycles >= self.settings.recovery_bound_cycles:
                    self._recovered(vm, down, None)
        swing = self.swing
        if swing is not None and taken > swing.since:
            swing.cycles += 1
            shown = _shows(view.get("host"), swing.load)
            if shown or swing.cycles >= HOST_SWING_BOUND_CYCLES:
                cycles = swing.cycles if shown else None
                self._record(Recovery("pressure", None, swing.at_s, cycles, True))
                self.swing = None

    def _recovered(self, vm: int, down: _Down, cycles: int | None) -> None:
        del self.down[vm]
        at_s = round(down.until - self.started, 1)
        self._record(Recovery(down.kind, vm, at_s, cycles, down.noticed))

    def _record(self, recovery: Recovery) -> None:
        self.tally.recoveries.append(recovery)
        who = "host" if recovery.vm is None else f"vm{recovery.vm:03d}"
        log.info(
            "%7.1f s  %s back after %s: %s cycle(s)%s",
            self.elapsed(),
            who,
            recovery.kind,
            recovery.cycles if recovery.cycles is not None else "NOT within the bound",
            "" if recovery.noticed else " (the daemon never saw it down)",
        )


def _back(entry: dict[str, Any] | None, pid: int | None) -> bool:
    """The daemon lists the VM answering, from its current process, with its balloon read and
    the target it computes applied (a paused guest's: its full size)."""
    if entry is None or entry.get("pid") != pid or not entry.get("balloon"):
        return False
    balloon = entry["balloon"]
    target = balloon.get("target_bytes")
    return target is not None and target == balloon.get("actual_bytes")


def _shows(host: dict[str, Any] | None, load: HostLoad) -> bool:
    if not host:
        return False
    pressure = host.get("memory_pressure_some_avg10")
    return (
        host.get("available_bytes") == load.available_bytes
        and pressure is not None
        and abs(pressure - load.psi_some_avg10) < 0.01
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(directory: Path, settings: SoakSettings, metrics_port: int) -> Path:
    """The daemon's configuration: the VMs by a glob, the host by `[host] proc`, a minimum
    below the VMs' size so that only missing guest statistics hold the policy back."""
    config = directory / "host.toml"
    config.write_text(
        f'qmp = ["{directory / "vms"}/*.qmp"]\n'
        f"interval = {settings.interval}\n"
        f'socket = "{directory / "run" / "host.sock"}"\n'
        f'[metrics]\naddress = "127.0.0.1"\nport = {metrics_port}\n'
        '[host]\nkeep_available = "2G"\nrelease_available = "2.5G"\nmax_memory_pressure = 10.0\n'
        f'proc = "{directory / "host-proc"}"\n'
        '[vm_defaults]\nminimum = "32M"\n'
    )
    return config


def _metrics_cycles(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError as err:
        log.warning("cannot scrape the daemon's metrics: %s", err)
        return None
    for line in text.splitlines():
        if line.startswith("vmreclaim_cycles_total "):
            return int(float(line.split()[1]))
    return None


PROBLEM_MARKS = (
    "Traceback",
    " ERROR ",
    " CRITICAL ",
    "exception was never retrieved",
    "Exception in callback",
)


def read_log(path: Path) -> tuple[tuple[str, ...], int, int]:
    """Problem lines (tracebacks, errors), the count of warnings and of policy mode changes."""
    lines = path.read_text(errors="replace").splitlines()
    problems = tuple(line for line in lines if any(mark in line for mark in PROBLEM_MARKS))
    warnings = sum(" WARNING " in line for line in lines)
    modes = sum(" INFO vmreclaim: policy: " in line for line in lines)
    return problems, warnings, modes


def run_soak(settings: SoakSettings, directory: Path) -> SoakResult:
    """Run the soak with its files under `directory` (the daemon's log is `daemon.log`)."""
    host = FakeHostProc(directory / "host-proc", HOST_TOTAL_BYTES)
    host.set(LOADS[0])
    port = _free_port()
    config = write_config(directory, settings, port)
    view_socket = directory / "run" / "host.sock"
    with (
        paused_qemus(directory / "vms", settings.vms) as qemus,
        host_daemon(config, directory / "daemon.log") as daemon,
    ):
        _wait_for_all(daemon, view_socket, qemus, 60.0)
        soak = _Soak(settings, qemus, host, daemon, view_socket)
        rss_start = None
        next_rss = soak.started + settings.warmup_s
        while soak.elapsed() < settings.seconds:
            soak.tick(chaos=True)
            if time.monotonic() >= next_rss:
                soak.tally.rss.append(daemon.rss_bytes())
                rss_start = rss_start or soak.tally.rss[-1]
                next_rss += _RSS_EVERY_S
            time.sleep(_TICK_S)
        settle_until = time.monotonic() + 2 * settings.recovery_bound_cycles * settings.interval
        while not soak.settled and time.monotonic() < settle_until:
            soak.tick(chaos=False)
            time.sleep(_TICK_S)
        if not soak.settled:
            raise VmreclaimError(f"the soak did not settle: {soak.down} {soak.swing}")
        rss_end = daemon.rss_bytes()
        answering = _answering(view_socket, qemus)
        metrics_cycles = _metrics_cycles(port)
        exit_code, stop_s = daemon.stop()
    problems, warnings, modes = read_log(directory / "daemon.log")
    tally = soak.tally
    return SoakResult(
        settings=settings,
        events=tuple(tally.events),
        recoveries=tuple(tally.recoveries),
        cycles=tally.cycles,
        metrics_cycles=metrics_cycles,
        max_cycle_gap_s=round(tally.max_gap_s, 2),
        rss_start_bytes=rss_start or rss_end,
        rss_end_bytes=rss_end,
        rss_samples=tuple(tally.rss),
        answering_at_end=answering,
        view_failures=tally.view_failures,
        log_problems=problems,
        warnings=warnings,
        mode_changes=modes,
        exit_code=exit_code,
        stop_s=round(stop_s, 2),
    )


def _answering(view_socket: Path, qemus: PausedQemus) -> int:
    view = read_view(view_socket, 2.0)
    pids = {str(path): qemus.pid(index) for index, path in enumerate(qemus.sockets)}
    return sum(1 for vm in view["vms"] if _back(vm, pids.get(vm["address"])))


def _wait_for_all(
    daemon: DaemonProcess, view_socket: Path, qemus: PausedQemus, seconds: float
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise VmreclaimError(f"the daemon exited at start; see {daemon.log}")
        try:
            if _answering(view_socket, qemus) == len(qemus.sockets):
                return
        except HostError:
            pass  # not serving yet
        time.sleep(_TICK_S)
    raise VmreclaimError(f"the daemon did not list every VM within {seconds:g} s")


def summary(result: SoakResult) -> str:
    """The numbers, as the README quotes them."""
    by_kind: dict[str, list[int]] = {}
    for recovery in result.recoveries:
        if recovery.cycles is not None:
            by_kind.setdefault(recovery.kind, []).append(recovery.cycles)
    settings = result.settings
    lines = [
        f"soak: {settings.vms} paused QEMUs, {settings.seconds:g} s of chaos "
        f"(seed {settings.seed}, an event every {settings.mean_gap_s:g} s on average), "
        f"interval {settings.interval:g} s",
        f"events: {len(result.events)} ("
        + ", ".join(
            f"{kind} {sum(event.kind == kind for event in result.events)}" for kind in KINDS
        )
        + ")",
        f"cycles: {result.cycles} seen in the view ({result.metrics_cycles} counted by the "
        f"daemon), longest gap between two {result.max_cycle_gap_s:g} s; view reads that "
        f"failed: {result.view_failures}",
        f"daemon RSS: {result.rss_start_bytes / 1e6:.2f} MB after {settings.warmup_s:g} s, "
        f"{result.rss_end_bytes / 1e6:.2f} MB at the end ({result.rss_growth_bytes / 1e6:+.2f} "
        f"MB); samples {min(result.rss_samples, default=0) / 1e6:.2f}-"
        f"{max(result.rss_samples, default=0) / 1e6:.2f} MB",
        f"cycles to recover (bound {settings.recovery_bound_cycles}; host swings "
        f"{HOST_SWING_BOUND_CYCLES}):",
    ]
    for kind in KINDS:
        cycles = sorted(by_kind.get(kind, []))
        if cycles:
            lines.append(
                f"  {kind:8} n={len(cycles):3}  median {cycles[len(cycles) // 2]}  max {cycles[-1]}"
            )
    unnoticed = sum(not recovery.noticed for recovery in result.recoveries)
    lines += [
        f"events the daemon never saw (back before it looked): {unnoticed}",
        f"daemon log: {len(result.log_problems)} traceback/error line(s), "
        f"{result.warnings} warning(s), {result.mode_changes} policy mode change(s)",
        f"SIGTERM: exit status {result.exit_code} in {result.stop_s:.2f} s; "
        f"{result.answering_at_end} of {settings.vms} VMs answering at the end",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--vms", type=int, default=10)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument("--interval", type=float, default=1.0, metavar="SECONDS")
    parser.add_argument("--mean-gap", type=float, default=3.0, metavar="SECONDS")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument(
        "--out", type=Path, help="keep the daemon's log and result.json in this folder"
    )
    args = parser.parse_args(argv)
    settings = SoakSettings(
        vms=args.vms,
        seconds=args.minutes * 60,
        warmup_s=args.warmup,
        interval=args.interval,
        mean_gap_s=args.mean_gap,
        seed=args.seed,
    )

    def keep_log(scratch: Path) -> None:
        if args.out is not None and (scratch / "daemon.log").exists():
            args.out.mkdir(parents=True, exist_ok=True)
            shutil.copy(scratch / "daemon.log", args.out / "daemon.log")

    result = run_standalone(
        "soak", lambda scratch: run_soak(settings, scratch), before_cleanup=keep_log
    )
    if args.out is not None:
        write_results(args.out / "result.json", result)
    print(summary(result))
    problems = result.problems()
    for problem in problems:
        print(f"soak: FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
