"""One scenario under one contender on a fresh lab guest."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from vmreclaim.bench import guestmem
from vmreclaim.bench.contenders import Contender
from vmreclaim.bench.measures import HotSet, Measures, measure
from vmreclaim.bench.pgbench import DatabaseLoad, database_load
from vmreclaim.bench.recorder import Recorder, Recording
from vmreclaim.bench.scenarios import (
    COLD_DONE,
    DATABASE_LOG,
    HEAP_REPORT,
    HOT_REPORT,
    HOT_STOP,
    PGBENCH_LOGS,
    PGBENCH_OUTPUT,
    PGBENCH_REPORT,
    PGBENCH_STOP,
    Phase,
    Scenario,
)
from vmreclaim.bench.sources import find_source
from vmreclaim.errors import GuestCommandTimeout, VmreclaimError
from vmreclaim.lab.channel import CommandResult
from vmreclaim.lab.image import GuestImage
from vmreclaim.lab.machine import VirtualMachine
from vmreclaim.lab.qemu_command import MIB, MachineConfig
from vmreclaim.workloads.database import PgbenchRun
from vmreclaim.workloads.runtime_heap import HeapReport

log = logging.getLogger(__name__)

# Seconds of rest recorded before the first phase: the guest's footprint at rest.
REST_SECONDS = 4.0
# /proc/PID/stat counts CPU time in USER_HZ ticks, 100 a second on every Linux architecture
# that QEMU's x86 guests run.
_USER_HZ = 100

Progress = Callable[[str, float, float], None]
"""Called with (phase, seconds into the run, the run's planned seconds)."""


@dataclass(frozen=True)
class RunResult:
    scenario: str
    contender: str
    accel: str
    boot_seconds: float
    recording: Recording
    measures: Measures
    agent_log: str
    """The agent's whole log at debug level: every tick's decision, so a contender that never
    acted can be read to see why (empty without an agent)."""
    repeat: int = 0
    """Which repeat of the benchmark this run belongs to, from 0."""
    source: str = ""
    """The source package the scenario built, name and version ("" if none)."""


def _sleep(seconds: float, phase: str, started: float, total: float, progress: Progress) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        progress(phase, time.monotonic() - started, total)
        time.sleep(min(1.0, left))


# A phase on the guest's clock lasts at most this many times its seconds on the host's: under
# --icount the guest got 0.16 to 0.5 s per host second here; past this the host is too busy
# for its figures to mean anything.
GUEST_CLOCK_MAX_HOST_RATIO = 8.0


def _guest_uptime(vm: VirtualMachine) -> float:
    return float(vm.check("cut -d' ' -f1 /proc/uptime").text)


def _sleep_guest(
    vm: VirtualMachine,
    phase: Phase,
    started: float,
    total: float,
    progress: Progress,
) -> float:
    """Wait until `phase.seconds` have passed on the guest's clock, reading it every few host
    seconds; returns the run's planned host seconds, re-estimated from the guest's pace."""
    host_start, guest_start = time.monotonic(), _guest_uptime(vm)
    planned = total
    while True:
        host_s = time.monotonic() - host_start
        guest_s = _guest_uptime(vm) - guest_start
        left = phase.seconds - guest_s
        if left <= 0:
            return planned
        if host_s >= GUEST_CLOCK_MAX_HOST_RATIO * phase.seconds:
            log.warning(
                "%s: %.0f guest s in %.0f host s, stopped at %.0f times its %.0f s: "
                "the host is too busy",
                phase.name,
                guest_s,
                host_s,
                GUEST_CLOCK_MAX_HOST_RATIO,
                phase.seconds,
            )
            return planned
        pace = guest_s / host_s if guest_s > 0 and host_s > 0 else 1.0
        # What the run still needs on the host's clock, at the pace seen so far.
        planned = total - phase.seconds + host_s + left / pace
        progress(phase.name, time.monotonic() - started, planned)
        time.sleep(min(5.0, max(0.5, left / pace)))


def run_one(
    scenario: Scenario,
    contender: Contender,
    image: GuestImage | None,
    *,
    memory: int = 2048 * MIB,
    icount: int | None = None,
    progress: Progress = lambda phase, done, total: None,
    repeat: int = 0,
) -> RunResult:
    """`icount`: run the guest with one vCPU whose clock counts instructions (see
    MachineConfig.icount), so that CPU shares inside, which idle detectors read, are those of
    a real CPU rather than of TCG's emulation."""
    source = find_source(scenario.source_package) if scenario.source_package else None
    config = MachineConfig(
        memory=memory,
        cpus=2 if icount is None else 1,
        free_page_reporting=contender.free_page_reporting,
        scratch_disk=2048 * MIB,
        scratch_contents=None if source is None else source.directory,
        icount=icount,
    )
    total = REST_SECONDS + scenario.seconds
    progress("boot", 0.0, total)
    with VirtualMachine(config, image) as vm:
        if scenario.setup:
            vm.check(scenario.setup, timeout=900)
        if contender.agent_policy is not None:
            start_agent(vm, contender.agent_policy)
        at_start = _guest_memory(vm)
        started = time.monotonic()
        recorder = Recorder(vm)
        with recorder as recording:
            _sleep(REST_SECONDS, "rest", started, total, progress)
            for phase in scenario.phases:
                recorder.mark(phase.name)
                progress(phase.name, time.monotonic() - started, total)
                if phase.script:
                    script = phase.script if phase.wait else f"( {phase.script} ) &"
                    vm.check(script, timeout=900)
                if phase.guest_clock:
                    total = _sleep_guest(vm, phase, started, total, progress)
                else:
                    _sleep(phase.seconds, phase.name, started, total, progress)
        at_end = _guest_memory(vm)
        hot = _hot_set(vm, scenario.hot_bytes) if scenario.hot_bytes else None
        heap = _heap_report(vm) if scenario.runtime_heap_bytes else None
        database = _database(vm, scenario.database.window_s) if scenario.database else None
        agent_cpu, agent_log = stop_agent(vm)
        result = RunResult(
            scenario=scenario.name,
            contender=contender.name,
            accel=vm.accel or "?",
            boot_seconds=vm.boot_seconds or 0.0,
            recording=recording,
            measures=measure(
                recording,
                cold_bytes=scenario.cold_bytes,
                fragmented_bytes=scenario.fragmented_bytes,
                hot=hot,
                agent_cpu_ratio=agent_cpu,
                heap=heap,
                guest_start=at_start,
                guest_end=at_end,
                swap=bool(scenario.swap_bytes),
                database=database,
            ),
            agent_log=agent_log,
            repeat=repeat,
            source="" if source is None else source.label,
        )
    return result


def _stop_and_read(
    vm: VirtualMachine, stop: str, report: str, *, pause_s: float, timeout: float
) -> CommandResult:
    """Create the guest file `stop` that a workload waits for, wait until it has written
    `report` (120 checks `pause_s` apart at most), and read that."""
    return vm.run(
        f"touch {stop}; for i in $(seq 120); do [ -e {report} ] && break; sleep {pause_s:g}; "
        f"done; cat {report}",
        timeout=timeout,
    )


def _hot_set(vm: VirtualMachine, size_bytes: int) -> HotSet | None:
    # A pass in progress ends first: under TCG one takes a few seconds at most.
    done = _stop_and_read(vm, HOT_STOP, HOT_REPORT, pause_s=1, timeout=180)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        log.warning("the hot set's report is missing: %s", done.stderr.decode(errors="replace"))
        return None
    return HotSet(
        int(report["passes"]),
        report["mean_pass_seconds"],
        report["median_pass_seconds"],
        int(report["refaults"]),
        size_bytes,
    )


def _database(vm: VirtualMachine, window_s: float) -> DatabaseLoad:
    """Stop pgbench and sum its logs. A pgbench that failed fails the run: its figures would
    compare a broken database with working ones."""
    done = _stop_and_read(vm, PGBENCH_STOP, PGBENCH_REPORT, pause_s=0.5, timeout=120)
    try:
        run = PgbenchRun(**json.loads(done.stdout))
    except (ValueError, TypeError) as err:
        output = vm.run(f"tail -c 2000 {PGBENCH_OUTPUT}").text
        raise VmreclaimError(f"pgbench left no report: {output}") from err
    # 0: it ran its whole --seconds; -15: the SIGTERM that stops it after PGBENCH_STOP.
    if run.exit_code not in (0, -15):
        raise VmreclaimError(f"pgbench failed with exit code {run.exit_code}: {run.stderr}")
    names = vm.check(f"ls {PGBENCH_LOGS}.*").text.split()
    # One file at a time: each may end in a line cut short when pgbench was stopped.
    logs = [vm.check(["cat", name]).stdout.decode() for name in names]
    # busybox stat: whole seconds, enough for how long the writer took.
    done = vm.run(["stat", "-c", "%Y", COLD_DONE])
    ended = float(done.text) if done.ok and done.text.strip().isdigit() else None
    if ended is None:
        log.warning("the cold writer had not finished when the run ended")
    server_log = vm.run(["cat", DATABASE_LOG])
    load = database_load(
        logs,
        run.started_at,
        run.stopped_at,
        cold_started_at=run.marked_at,
        cold_ended_at=ended,
        window_s=window_s,
        server_log=server_log.stdout.decode(errors="replace") if server_log.ok else "",
    )
    if load.cold_write is not None and load.cold_write.seconds < window_s:
        log.warning(
            "pgbench stopped %.1f guest s into its %.0f s window: the host was too busy",
            load.cold_write.seconds,
            window_s,
        )
    return load


def _guest_memory(vm: VirtualMachine) -> guestmem.GuestMemory:
    meminfo = vm.check("cat /proc/meminfo").text
    return guestmem.parse(meminfo, vm.check("cat /proc/vmstat").text)


def _heap_report(vm: VirtualMachine) -> HeapReport | None:
    done = vm.run(f"cat {HEAP_REPORT}")
    try:
        return HeapReport(**json.loads(done.stdout))
    except (ValueError, TypeError):
        log.warning("the heap program's report is missing: %s", done.text[-2000:])
        return None


# The agent's log and pid in the guest, and the line it logs once it has started.
AGENT_LOG = "/tmp/agent.log"
AGENT_PID = "/tmp/agent.pid"
AGENT_STARTED = "vmreclaim: starting:"
# Host seconds the agent may take to start: python3 and the package's imports took 2 to 3 s of
# the vCPU under --icount 2, 6 to 17 host s at its pace, and more on a loaded host.
AGENT_START_TIMEOUT_S = 300.0


def agent_launch_script(arguments: str) -> str:
    """Shell that starts `vmreclaim ARGUMENTS` in the guest in the background, its log in
    AGENT_LOG and its pid in AGENT_PID, and returns at once."""
    return f"python3 -m vmreclaim {arguments} >{AGENT_LOG} 2>&1 & echo $! >{AGENT_PID}"


def agent_ready_script(log_file: str = AGENT_LOG, pid_file: str = AGENT_PID) -> str:
    """Shell that waits until the agent has logged its start (exit 0), or has died (exit 4)."""
    return (
        f"pid=$(cat {pid_file}); while :; do "
        f"grep -q '{AGENT_STARTED}' {log_file} && exit 0; "
        "kill -0 $pid 2>/dev/null || exit 4; sleep 0.2; done"
    )


def start_agent(vm: VirtualMachine, policy: str, *, config: str | None = None) -> None:
    """Start the agent in the background and wait until it has started, so that its start
    (python3 and its imports: 2 to 3 s of the one vCPU under --icount 2) falls before the
    recording, as an agent started at boot does, and not in the workload's first seconds: with
    the pgbench phase on the host's clock it spilled into pgbench's window of comparison.
    `config`: the guest path of an INI file of knobs (`guest run --config`)."""
    options = "" if config is None else f" --config {config}"
    vm.check(agent_launch_script(f"-vv guest run --policy {policy} --interval 2{options}"))
    try:
        done = vm.run(agent_ready_script(), timeout=AGENT_START_TIMEOUT_S)
        why = "exited before it started" if not done.ok else ""
    except GuestCommandTimeout:
        why = f"had not started after {AGENT_START_TIMEOUT_S:.0f} s"
    if why:
        tail = vm.run(f"tail -c 2000 {AGENT_LOG}").text
        raise VmreclaimError(
            f"the agent (policy {policy}) {why}; its log ends:\n{tail}",
            hint="start it by hand in a lab guest (vmreclaim lab shell, then "
            "python3 -m vmreclaim guest run) to see why",
        )


def stop_agent(vm: VirtualMachine) -> tuple[float | None, str]:
    """The agent's CPU share over its life and its log (empty without an agent). The agent is
    stopped first, so the log ends with where its CPU went.

    Its life is counted on the guest's clock (its start time in /proc/PID/stat against
    /proc/uptime), as its CPU time is: with --icount the guest's clock runs at a third to a half
    of the host's, and a share of host seconds would understate the vCPU it took as much."""
    done = vm.run(
        f"[ -e {AGENT_PID} ] || exit 3; pid=$(cat {AGENT_PID}); "
        "echo $(cut -d' ' -f14,15,22 /proc/$pid/stat) $(cut -d' ' -f1 /proc/uptime); "
        "kill -TERM $pid; for i in $(seq 50); do "
        "s=$(cut -d' ' -f3 /proc/$pid/stat 2>/dev/null) && [ $s != Z ] || break; sleep 0.2; done; "
        f"cat {AGENT_LOG}",
        timeout=60,
    )
    if done.exit_code == 3:
        return None, ""
    lines = done.text.splitlines()
    try:
        user, system, started = (int(field) for field in lines[0].split()[:3])
        uptime = float(lines[0].split()[3])
    except (IndexError, ValueError) as err:
        raise VmreclaimError(f"the agent is not running: {done.text[-2000:]}") from err
    life_s = uptime - started / _USER_HZ
    share = (user + system) / _USER_HZ / life_s if life_s > 0 else None
    return share, "\n".join(lines[1:])
