"""The host asks, the guests give (issue 14, point 5): three guests on a host short of memory,
balloon-only against cooperative.

    python -m vmreclaim.bench.cooperative --repeat 3 --out docs/benchmarks/cooperative

Three lab guests of 1 GiB, one vCPU each, launched as `host launch-options` says (free page
reporting, deflate-on-oom, the agent's virtio-serial port):

- `busy` holds 384 MiB of anonymous memory and re-reads a 256 MiB hot file set in a loop;
- `cold-1` and `cold-2` each hold 384 MiB of files written once and never read (a backup, a
  log shipper), as page cache.

Every guest runs `vmreclaim guest run` (adaptive, every 2 s) with its own reclaim turned off, in
both arms, so that what leaves a guest is the host's doing and both arms see the same agent.
Then the real `host run` over the three, on a host whose MemAvailable the benchmark writes (its
`[host] proc`): SHORT bytes under `keep_available`, and better by exactly what the three QEMU
processes' resident memory dropped since (each 0.25 s). A balloon inflated over guest memory
that free page reporting had already handed back frees nothing on the host, so the host stays
short until real memory leaves, as a real host would.

- balloon-only: `ask_agents = false`, today's squeeze by shares;
- cooperative: the defaults, which ask the agents for cold cache first (host/asking.py).

Measured each run, over the RUN_S (120 s) from the host going short, the same window in both
arms: seconds until the three footprints dropped by 90 % of SHORT and by all of it (a balloon
squeezed to the guests' margins may stop just short of it: "never"), the busy guest's file
refaults (workingset_refault_file) and its hot-set pass times, and OOM kills in every guest;
and the busy guest's refaults in a calm window before, which show the hot set fits. Arms
alternate, so slow drifts of the machine fall on both, and each run boots its own guests.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vmreclaim.bench.soak_processes import DaemonProcess, FakeHostProc, HostLoad, host_daemon
from vmreclaim.bench.standalone import run_standalone, write_results
from vmreclaim.errors import VmreclaimError
from vmreclaim.units import format_size

if TYPE_CHECKING:
    from vmreclaim.lab.machine import VirtualMachine

log = logging.getLogger(__name__)

MIB = 1 << 20
GIB = 1 << 30
RAM_BYTES = 1024 * MIB
HOT = 256 * MIB
HELD = 384 * MIB
COLD = 384 * MIB
SHORT = 320 * MIB
"""How far the host is short: what balloon-only can free before the squeeze reaches the
guests' margins (about 370 MiB here), and half of what the cold guests hold above their
floors."""
KEEP_AVAILABLE = 2 * GIB
RUN_S = 120.0
"""Each run lasts this long from the host going short, in both arms."""
CALM_S = 15.0
"""The hot loop runs this long before a calm window of as long, whose refaults show that the
hot set fits in the busy guest before the host is short."""
SAMPLE_S = 0.25
ARMS = ("balloon-only", "cooperative")
WORKLOADS = "python3 -m vmreclaim.workloads"

# The adaptive agent with its own reclaim steps at 0 and drop-behind off: it reports, and
# reclaims only when the host asks (test_agent_asks.py's passive agent).
PASSIVE = """\
[adaptive]
busy_max_step_bytes = 0
idle_max_step_bytes = 0
drop_behind_age_s = 0
"""
AGENT = "guest run --policy adaptive --interval 2 --config /tmp/passive.ini"
_COUNTERS = 'awk \'$1=="workingset_refault_file"||$1=="oom_kill"{print $1, $2}\' /proc/vmstat'


@dataclass(frozen=True)
class RunResult:
    arm: str
    repeat: int
    freed_s: float | None
    """From the host going short until the footprints dropped by SHORT; None: never."""
    freed_90_s: float | None
    freed_bytes: int
    """The footprints' largest drop seen during the run."""
    hot_refault_bytes: int
    """File refaults in the busy guest from the host going short to the end of the run."""
    calm_refault_bytes: int
    """... in the CALM_S before it."""
    oom_kills: int
    """In all three guests."""
    median_pass_s: float | None
    """The hot set's median pass time in the busy guest during the run."""
    asks: int
    """Requests the daemon sent to agents."""
    balloon_moves: int
    """Balloon targets the daemon set."""
    freed: tuple[tuple[float, int], ...] = ()
    """(seconds since the host went short, the footprints' drop in bytes), every SAMPLE_S."""

    @property
    def hot_refault_ratio(self) -> float:
        return self.hot_refault_bytes / HOT


class Guests:
    """The three guests and what runs in them."""

    def __init__(self, busy: VirtualMachine, cold: Sequence[VirtualMachine]) -> None:
        self.busy = busy
        self.cold = tuple(cold)
        self.all = (busy, *self.cold)

    def prepare(self) -> None:
        """Once: the busy guest's held memory and hot set."""
        self.busy.check(f"{WORKLOADS} write-files /mnt/scratch/hot {HOT}", timeout=600)
        self.busy.check(
            f"{WORKLOADS} alloc {HELD} --ready /tmp/held --hold 86400 "
            ">/tmp/alloc.log 2>&1 & while [ ! -e /tmp/held ]; do sleep 0.5; done",
            timeout=300,
        )
        for vm in self.all:
            vm.check(f"cat >/tmp/passive.ini <<'EOF'\n{PASSIVE}EOF")

    def reset(self) -> None:
        """Before each run: fresh cold files in the cold guests, the hot set read twice (active
        again, whatever the last run evicted), and new agents: one that saw the last run's
        squeeze has raised its floor (memory pressure) and would offer less."""
        from vmreclaim.bench.runner import AGENT_PID, agent_launch_script

        for vm in self.all:
            vm.check(
                f"[ -e {AGENT_PID} ] || exit 0; pid=$(cat {AGENT_PID}); kill $pid; "
                "while kill -0 $pid 2>/dev/null; do sleep 0.2; done",
                timeout=60,
            )
        for vm in self.cold:
            vm.check(
                f"rm -rf /mnt/scratch/cold && {WORKLOADS} write-files /mnt/scratch/cold {COLD}",
                timeout=900,
            )
        self.busy.check("for i in 1 2; do cat /mnt/scratch/hot/* >/dev/null; done", timeout=600)
        for vm in self.all:
            vm.check(agent_launch_script(AGENT))

    @contextmanager
    def hot_loop(self) -> Iterator[None]:
        """The busy guest re-reads its hot set until the run ends."""
        self.busy.check(
            "rm -f /tmp/stop-hot /tmp/hot.json; "
            f"{WORKLOADS} reread /mnt/scratch/hot --seconds 3600 --pause 0.2 "
            "--until /tmp/stop-hot --report /tmp/hot.json >/tmp/hot.log 2>&1 &"
        )
        try:
            yield
        finally:
            self.busy.check(
                "touch /tmp/stop-hot; while [ ! -e /tmp/hot.json ]; do sleep 0.5; done",
                timeout=300,
            )

    def median_pass(self) -> float | None:
        report = json.loads(self.busy.check("cat /tmp/hot.json").text)
        value = float(report["median_pass_seconds"])
        return value if report["passes"] else None

    def counters(self) -> list[dict[str, int]]:
        """workingset_refault_file and oom_kill of each guest, busy first."""
        result = []
        for vm in self.all:
            pairs = (line.split() for line in vm.check(_COUNTERS).text.splitlines())
            result.append({name: int(value) for name, value in pairs})
        return result

    def footprint(self) -> int:
        return sum(vm.footprint().rss_bytes for vm in self.all)

    def agents_reported(self, log_text: str) -> bool:
        return log_text.count(": connected") >= len(self.all)


class FeedbackHost:
    """The host's MemAvailable: SHORT under keep_available when `short()` is called, better by
    what the guests' footprints dropped since. A thread writes it every SAMPLE_S and keeps the
    footprint samples."""

    def __init__(self, directory: Path, guests: Guests) -> None:
        self.proc = FakeHostProc(directory, 16 * GIB)
        self.proc.set(HostLoad("calm", 12 * GIB, 0.0))
        self._guests = guests
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._base: int | None = None
        self._short_at: float | None = None
        self.samples: list[tuple[float, int]] = []
        """(seconds since short, footprint drop) per sample."""

    def __enter__(self) -> FeedbackHost:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def short(self) -> None:
        self._base = self._guests.footprint()
        self._short_at = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            if self._base is None or self._short_at is None:
                continue
            try:
                dropped = self._base - self._guests.footprint()
            except VmreclaimError:
                return
            self.samples.append((time.monotonic() - self._short_at, dropped))
            available = KEEP_AVAILABLE - SHORT + dropped
            self.proc.set(HostLoad("short", available, 0.0))

    def freed_after(self, amount: int) -> float | None:
        return next((at for at, dropped in self.samples if dropped >= amount), None)


def write_config(directory: Path, guests: Guests, host: FeedbackHost, arm: str) -> Path:
    qmp = ", ".join(f'"{vm.qmp_socket}"' for vm in guests.all)
    agents = ", ".join(f'"{vm.agent_socket.parent}/*.agent"' for vm in guests.all)
    config = directory / f"{arm}.toml"
    config.write_text(
        f"qmp = [{qmp}]\nagent = [{agents}]\n"
        f'socket = "{directory / "run" / "host.sock"}"\n'
        "[metrics]\nport = 0\n"
        f'[host]\nkeep_available = "{KEEP_AVAILABLE >> 20}M"\nrelease_available = "2T"\n'
        f'proc = "{host.proc.directory}"\n'
        f"[balloon]\nask_agents = {'false' if arm == 'balloon-only' else 'true'}\n"
    )
    return config


def wait_for(predicate: object, timeout: float, what: str, daemon: DaemonProcess) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise VmreclaimError(f"the daemon exited; see {daemon.log}")
        if predicate():
            return
        time.sleep(1.0)
    raise VmreclaimError(f"{what} within {timeout:g} s; see {daemon.log}")


def one_run(guests: Guests, directory: Path, arm: str, repeat: int, keep: Path | None) -> RunResult:
    guests.reset()
    daemon_log = directory / f"{arm}-{repeat + 1}.daemon.log"
    with ExitStack() as stack:
        host = stack.enter_context(FeedbackHost(directory / f"proc-{arm}-{repeat}", guests))
        config = write_config(directory, guests, host, arm)
        daemon = stack.enter_context(host_daemon(config, daemon_log))
        wait_for(
            lambda: guests.agents_reported(daemon.log.read_text(errors="replace")),
            120,
            "the agents did not all connect",
            daemon,
        )
        time.sleep(3.0)  # a report or two from each
        with guests.hot_loop():
            time.sleep(CALM_S)  # the loop's first passes
            calm = guests.counters()
            time.sleep(CALM_S)
            before = guests.counters()
            host.short()
            started = time.monotonic()
            log.info("%s, run %d: host %s short", arm, repeat + 1, format_size(SHORT))
            # The same window for both arms, whenever the memory came: refaults over it compare.
            wait_for(
                lambda: time.monotonic() - started >= RUN_S, RUN_S + 30, "the run ended", daemon
            )
            after = guests.counters()
        daemon.stop()
    if keep is not None:
        from vmreclaim.bench.runner import AGENT_LOG

        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(daemon_log, keep / daemon_log.name)
        for vm in guests.all:
            agent_log = keep / f"{arm}-{repeat + 1}.{vm.config.name}.agent.log"
            agent_log.write_text(vm.run(f"cat {AGENT_LOG}").text)
    text = daemon_log.read_text(errors="replace")
    return RunResult(
        arm=arm,
        repeat=repeat,
        freed_s=host.freed_after(SHORT),
        freed_90_s=host.freed_after(SHORT * 9 // 10),
        freed_bytes=max((dropped for _, dropped in host.samples), default=0),
        hot_refault_bytes=_refaults(before, after),
        calm_refault_bytes=_refaults(calm, before),
        oom_kills=sum(a["oom_kill"] - b["oom_kill"] for a, b in zip(after, before)),
        median_pass_s=guests.median_pass(),
        asks=text.count("asked its agent to release"),
        balloon_moves=len(re.findall(r": balloon target [\d.]+ \S+ -> ", text)),
        freed=tuple((round(at, 2), dropped) for at, dropped in host.samples),
    )


def _refaults(before: Sequence[dict[str, int]], after: Sequence[dict[str, int]]) -> int:
    """The busy guest's file refaults between two readings, in bytes."""
    key = "workingset_refault_file"
    return (after[0][key] - before[0][key]) * 4096


@contextmanager
def three_guests() -> Iterator[Guests]:
    from vmreclaim.lab.machine import VirtualMachine
    from vmreclaim.lab.qemu_command import MachineConfig

    config = MachineConfig(
        memory=RAM_BYTES, cpus=1, deflate_on_oom=True, agent_port=True, scratch_disk=1024 * MIB
    )
    with ExitStack() as stack:
        machines = [
            stack.enter_context(VirtualMachine(dataclasses.replace(config, name=name)))
            for name in ("busy", "cold-1", "cold-2")
        ]
        guests = Guests(machines[0], machines[1:])
        guests.prepare()
        yield guests


def run_all(repeat: int, directory: Path, keep: Path | None) -> list[RunResult]:
    """Each run on three freshly booted guests: a run leaves the next one's guests changed.
    Run in place, every cooperative run followed a balloon-only one, whose deflated balloon
    had handed the guests back their memory a page at a time; the cold files written next
    landed scattered, and their release reached the host over 10 s and more instead of 2 s
    (docs/benchmarks/cooperative-382f32d)."""
    results: list[RunResult] = []
    for index in range(repeat):
        for arm in ARMS:
            with three_guests() as guests:
                result = one_run(guests, directory, arm, index, keep)
            log.info("%s", describe(result))
            results.append(result)
    return results


def _seconds(value: float | None) -> str:
    return f"{value:.1f} s" if value is not None else "never"


def describe(result: RunResult) -> str:
    passes = _seconds(result.median_pass_s)
    return (
        f"{result.arm}, run {result.repeat + 1}: {format_size(SHORT)} freed after "
        f"{_seconds(result.freed_s)} (90 % after {_seconds(result.freed_90_s)}); "
        f"hot-set refaults {format_size(result.hot_refault_bytes)} "
        f"({result.hot_refault_ratio:.0%}; {format_size(result.calm_refault_bytes)} in the calm "
        f"{CALM_S:g} s before), median pass {passes}; OOM kills {result.oom_kills}; "
        f"{result.asks} request(s), {result.balloon_moves} balloon move(s)"
    )


def summary(results: Sequence[RunResult]) -> str:
    """One markdown row per arm: median (min - max) of each measure."""

    def spread(values: Sequence[float | None], unit: str = " s", scale: float = 1.0) -> str:
        known = [v * scale for v in values if v is not None]
        missing = len(values) - len(known)
        never = f", never in {missing}" if missing else ""
        if not known:
            return f"never in {missing}"
        if len(known) == 1:
            return f"{known[0]:.1f}{unit}{never}"
        return f"{statistics.median(known):.1f}{unit} ({min(known):.1f} - {max(known):.1f}){never}"

    rows = [
        f"| arm | {format_size(SHORT * 9 // 10)} (90 %) freed after "
        f"| all {format_size(SHORT)} after | hot-set refaults (MiB) "
        "| median hot pass | OOM kills | requests | balloon moves |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for arm in dict.fromkeys(r.arm for r in results):
        runs = [r for r in results if r.arm == arm]
        rows.append(
            f"| {arm} | {spread([r.freed_90_s for r in runs])} "
            f"| {spread([r.freed_s for r in runs])} "
            f"| {spread([r.hot_refault_bytes for r in runs], '', 1 / MIB)} "
            f"| {spread([r.median_pass_s for r in runs])} "
            f"| {sum(r.oom_kills for r in runs)} "
            f"| {spread([r.asks for r in runs], '')} "
            f"| {spread([r.balloon_moves for r in runs], '')} |"
        )
    return "\n".join(rows)


def plot(results: Sequence[RunResult], path: Path) -> None:
    """The three footprints' drop over each run, one line a run, a colour an arm, and the
    shortfall as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 5.5), dpi=110)
    colours = dict(zip(ARMS, ("tab:red", "tab:blue")))
    labelled: set[str] = set()
    for result in results:
        axes.plot(
            [at for at, _ in result.freed],
            [dropped / MIB for _, dropped in result.freed],
            color=colours.get(result.arm, "grey"),
            linewidth=1.4,
            alpha=0.8,
            label=None if result.arm in labelled else result.arm,
        )
        labelled.add(result.arm)
    axes.axhline(SHORT / MIB, color="black", linestyle="--", linewidth=1.0, label="host short by")
    axes.set_title("Three guests, host short: memory the host got back (footprints' drop)")
    axes.set_xlabel("seconds since the host went short")
    axes.set_ylabel("MiB")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each arm (default 3)")
    parser.add_argument("--out", type=Path, help="write results.json and the daemons' logs here")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat is 1 or more")
    results = run_standalone("cooperative", lambda scratch: run_all(args.repeat, scratch, args.out))
    if args.out is not None:
        write_results(args.out / "results.json", results)
        plot(results, args.out / "cooperative.png")
    print(summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
