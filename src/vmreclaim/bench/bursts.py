"""Bursts in a squeezed guest (issue 12, point 6): does a process that suddenly needs 700 MB
get it, with no OOM kill, while `vmreclaim host run` holds the guest's balloon inflated?

    python -m vmreclaim.bench.bursts --repeat 3

One lab guest (1536 MiB, one vCPU) per `deflate-on-oom` setting, off and on (the balloon
device's property, fixed at launch), and the real `host run` in a child process over it, told
that the host is always short (`keep_available = "1T"`) and otherwise at its defaults: it
shrinks the guest a step a cycle until the guest's available memory is down to the margin
(128 MiB). Once the balloon has stopped moving, a process in the guest allocates 700 MB and
writes every page, at once or at 100 MB/s, holds it 3 s and exits. Measured each time: the
allocator's exit status, the guest's `oom_kill` counter before and after, the time the
allocation took, the guest's MemAvailable before it, and the balloon (`query-balloon`, every
0.25 s) before, at its lowest, and at its largest, with when the daemon first let go.

Two ways the guest gets its memory back: the daemon's emergency deflation (guest available
under the margin: the whole balloon at once, seen within a statistics period of 2 s and a poll),
and, with `deflate-on-oom`, the guest's balloon driver giving 1 MiB back each time the kernel
is about to OOM-kill (virtio_balloon's OOM notifier). The daemon's log is kept beside the
results with `--out`.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vmreclaim.bench.soak_processes import DaemonProcess, host_daemon
from vmreclaim.bench.standalone import run_standalone, write_results
from vmreclaim.errors import VmreclaimError
from vmreclaim.units import format_size

if TYPE_CHECKING:
    from vmreclaim.lab.machine import VirtualMachine

log = logging.getLogger(__name__)

MIB = 1 << 20
RAM_BYTES = 1536 * MIB
BURST = "700M"
SHAPES = (("at once", None), ("100 MB/s", "100M"))
"""Issue 12's two shapes: the allocation all at once, and paced at 100 MB a second."""
SQUEEZE_TIMEOUT_S = 240.0
STEADY_S = 6.0
"""The balloon is squeezed when it has not moved by more than STEADY_SLACK for this long."""
STEADY_SLACK = 4 * MIB
SAMPLE_S = 0.25

_GUEST_BURST = """\
oom() {{ awk '$1=="oom_kill"{{print $2}}' /proc/vmstat; }}
before=$(oom); available=$(awk '$1=="MemAvailable:"{{print $2}}' /proc/meminfo)
total=$(awk '$1=="MemTotal:"{{print $2}}' /proc/meminfo)
python3 -m vmreclaim.workloads alloc {size} {rate} --hold 3 >/tmp/burst.out 2>/tmp/burst.err
code=$?
echo "$code $before $(oom) $available $total"; cat /tmp/burst.out; tail -n 1 /tmp/burst.err >&2
"""


@dataclass(frozen=True)
class BurstResult:
    deflate_on_oom: bool
    shape: str
    repeat: int
    exit_code: int | None
    """The allocator's exit status (137: SIGKILL, the OOM killer); None when the guest's
    command channel itself was lost."""
    oom_kills: int | None
    seconds: float | None
    """How long the allocation took, when it finished."""
    guest_available_bytes: int | None
    guest_total_bytes: int | None
    """MemTotal before the burst: without deflate-on-oom the balloon driver takes inflated
    pages out of it."""
    balloon_before_bytes: int
    balloon_lowest_bytes: int
    balloon_largest_bytes: int
    let_go_s: float | None
    """From the burst's start to the first sample where the balloon had grown by 16 MiB."""
    error: str = ""
    """The allocator's last line on stderr, when it failed (e.g. MemoryError: the kernel
    refused the allocation itself)."""

    @property
    def survived(self) -> bool:
        return self.exit_code == 0 and self.oom_kills == 0


class _BalloonWatch:
    """Samples `query-balloon` every SAMPLE_S in a thread while a burst runs."""

    def __init__(self, vm: VirtualMachine) -> None:
        self._vm = vm
        self._stop = threading.Event()
        self.samples: list[tuple[float, int]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = time.monotonic()

    def __enter__(self) -> _BalloonWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                actual = int(self._vm.qmp.execute("query-balloon")["actual"])
            except VmreclaimError:
                return
            self.samples.append((time.monotonic() - self._started, actual))
            self._stop.wait(SAMPLE_S)


def balloon_actual(vm: VirtualMachine) -> int:
    return int(vm.qmp.execute("query-balloon")["actual"])


def wait_squeezed(vm: VirtualMachine, daemon: DaemonProcess) -> int:
    """Until the daemon has squeezed the guest and the balloon holds still; its size."""
    deadline = time.monotonic() + SQUEEZE_TIMEOUT_S
    history: list[tuple[float, int]] = []
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise VmreclaimError(f"the daemon exited; see {daemon.log}")
        now = time.monotonic()
        history.append((now, balloon_actual(vm)))
        recent = [size for at, size in history if at >= now - STEADY_S]
        squeezed = history[-1][1] < RAM_BYTES - 256 * MIB
        if (
            squeezed
            and history[0][0] <= now - STEADY_S
            and max(recent) - min(recent) <= STEADY_SLACK
        ):
            return history[-1][1]
        time.sleep(1.0)
    raise VmreclaimError(
        f"the daemon did not squeeze the guest within {SQUEEZE_TIMEOUT_S:g} s "
        f"(balloon at {format_size(history[-1][1]) if history else 'unknown'}); see {daemon.log}"
    )


def parse_guest_output(stdout: str) -> tuple[int, int, int, int | None, int | None, float | None]:
    """The guest script's first line (exit status, oom_kill before and after, MemAvailable and
    MemTotal in kB) and the allocator's JSON report, when it wrote one: (status, before, after,
    available bytes, total bytes, seconds)."""
    lines = stdout.strip().splitlines()
    match = re.fullmatch(r"(\d+) (\d+) (\d+) (\d*) ?(\d*)", lines[0].strip()) if lines else None
    if match is None:
        raise VmreclaimError(f"unexpected output from the burst: {stdout[:500]!r}")
    code, before, after, available, total = match.groups()
    seconds = None
    for line in lines[1:]:
        try:
            seconds = float(json.loads(line)["seconds"])
        except (ValueError, KeyError, TypeError):
            continue
    return (
        int(code),
        int(before),
        int(after),
        int(available) * 1024 if available else None,
        int(total) * 1024 if total else None,
        seconds,
    )


def burst(vm: VirtualMachine, deflate_on_oom: bool, shape: str, repeat: int) -> BurstResult:
    rate = dict(SHAPES)[shape]
    script = _GUEST_BURST.format(size=BURST, rate=f"--rate {rate}" if rate else "")
    before = balloon_actual(vm)
    code: int | None = None
    kills: int | None = None
    seconds = available = total = None
    error = ""
    with _BalloonWatch(vm) as watch:
        try:
            result = vm.run(script, timeout=300)
            code, first, last, available, total, seconds = parse_guest_output(
                result.stdout.decode(errors="replace")
            )
            kills = last - first
            error = result.stderr.decode(errors="replace").strip()[-200:] if code else ""
        except VmreclaimError as err:
            log.warning("burst %s: %s", shape, err.message)
    sizes = [size for _, size in watch.samples] or [before]
    let_go = next((at for at, size in watch.samples if size >= before + 16 * MIB), None)
    return BurstResult(
        deflate_on_oom=deflate_on_oom,
        shape=shape,
        repeat=repeat,
        exit_code=code,
        oom_kills=kills,
        seconds=seconds if code == 0 else None,
        guest_available_bytes=available,
        guest_total_bytes=total,
        balloon_before_bytes=before,
        balloon_lowest_bytes=min(sizes),
        balloon_largest_bytes=max(sizes),
        let_go_s=let_go,
        error=error,
    )


def write_config(directory: Path, vm: VirtualMachine) -> Path:
    """The daemon over this one guest; the host short of memory from the first cycle (a
    threshold no host meets); every other key at its default."""
    config = directory / "host.toml"
    config.write_text(
        f'qmp = ["{vm.qmp_socket}"]\n'
        f'socket = "{directory / "run" / "host.sock"}"\n'
        "[metrics]\nport = 0\n"
        '[host]\nkeep_available = "1T"\nrelease_available = "2T"\n'
    )
    return config


def run_bursts(
    repeat: int, settings: Sequence[bool], directory: Path, keep: Path | None = None
) -> list[BurstResult]:
    from vmreclaim.lab.machine import VirtualMachine
    from vmreclaim.lab.qemu_command import MachineConfig

    results: list[BurstResult] = []
    for deflate_on_oom in settings:
        name = f"deflate-on-oom-{'on' if deflate_on_oom else 'off'}"
        config = MachineConfig(memory=RAM_BYTES, cpus=1, deflate_on_oom=deflate_on_oom)
        with VirtualMachine(config) as vm:
            daemon_log = directory / f"{name}.daemon.log"
            try:
                with host_daemon(write_config(directory, vm), daemon_log) as daemon:
                    for index in range(repeat):
                        for shape, _ in SHAPES:
                            squeezed = wait_squeezed(vm, daemon)
                            log.info("%s, %s: squeezed to %s", name, shape, format_size(squeezed))
                            result = burst(vm, deflate_on_oom, shape, index)
                            log.info("%s", describe(result))
                            results.append(result)
                    daemon.stop()
            finally:
                if keep is not None and daemon_log.exists():
                    keep.mkdir(parents=True, exist_ok=True)
                    shutil.copy(daemon_log, keep / daemon_log.name)
    return results


def describe(result: BurstResult) -> str:
    status = (
        "survived"
        if result.survived
        else f"exit {result.exit_code} ({result.error or 'no message'}), "
        f"{result.oom_kills} OOM kill(s)"
        if result.exit_code is not None
        else "the guest's command channel was lost"
    )
    took = f" in {result.seconds:.1f} s" if result.seconds is not None else ""
    let_go = f"{result.let_go_s:.1f} s" if result.let_go_s is not None else "never"
    return (
        f"deflate-on-oom {'on' if result.deflate_on_oom else 'off'}, {result.shape}, "
        f"run {result.repeat + 1}: {status}{took}; "
        f"balloon {format_size(result.balloon_before_bytes)} -> largest "
        f"{format_size(result.balloon_largest_bytes)}, let go after {let_go}"
    )


def summary(results: Sequence[BurstResult]) -> str:
    """One markdown row per setting and shape: survived runs, OOM kills, allocation time and
    when the daemon let go (median, min - max)."""
    rows = [
        "| deflate-on-oom | burst | survived | OOM kills | failed | allocation took "
        "| balloon let go after |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: |",
    ]

    def spread(values: list[float]) -> str:
        if not values:
            return "-"
        return (
            f"{statistics.median(values):.1f} s ({min(values):.1f} - {max(values):.1f})"
            if len(values) > 1
            else f"{values[0]:.1f} s"
        )

    keys = dict.fromkeys((r.deflate_on_oom, r.shape) for r in results)
    for deflate_on_oom, shape in keys:
        runs = [r for r in results if (r.deflate_on_oom, r.shape) == (deflate_on_oom, shape)]
        rows.append(
            f"| {'on' if deflate_on_oom else 'off'} | {shape} "
            f"| {sum(r.survived for r in runs)} of {len(runs)} "
            f"| {sum(r.oom_kills or 0 for r in runs)} "
            f"| {_failures(runs)} "
            f"| {spread([r.seconds for r in runs if r.seconds is not None])} "
            f"| {spread([r.let_go_s for r in runs if r.let_go_s is not None])} |"
        )
    return "\n".join(rows)


def _failure(result: BurstResult) -> str:
    if result.oom_kills:
        return "OOM kill"
    if result.exit_code is None:
        return "channel lost"
    return result.error.split(":")[0] or f"exit {result.exit_code}"


def _failures(runs: Sequence[BurstResult]) -> str:
    """How the runs that did not survive failed, e.g. "MemoryError x3"."""
    counts: dict[str, int] = {}
    for result in runs:
        if not result.survived:
            counts[_failure(result)] = counts.get(_failure(result), 0) + 1
    return ", ".join(f"{what} x{count}" for what, count in counts.items()) or "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--deflate-on-oom",
        choices=("off", "on", "both"),
        default="both",
        help="which balloon setting to measure (default both)",
    )
    parser.add_argument("--out", type=Path, help="write results.json and the daemons' logs here")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat is 1 or more")
    settings = {"off": [False], "on": [True], "both": [False, True]}[args.deflate_on_oom]
    results = run_standalone(
        "bursts", lambda scratch: run_bursts(args.repeat, settings, scratch, args.out)
    )
    if args.out is not None:
        write_results(args.out / "results.json", results)
    print(summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
