"""The host asks, the guest gives, on a real guest: `host run` on a host short of memory asks
the guest agent for its cold page cache before it moves the balloon; the agent releases it and
the VM's footprint on the host drops, through free page reporting, before the balloon moves.
Then a process in the guest in the agent's place refuses every request, or claims releases it
never made: the balloon squeezes as it does without an agent, right after the refusal or the
deadline, and the liar is not asked again before its back-off. One guest; a daemon a case,
each stopped (giving the balloon back) before the next."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from vmreclaim.bench.soak_processes import FakeHostProc, HostLoad
from vmreclaim.lab import MachineConfig, VirtualMachine

from ..host.daemon_process import free_port, wait_until

MIB = 1 << 20
COLD = 300 * MIB
WORKLOADS = "python3 -m vmreclaim.workloads"
GIB = 1 << 30
CALM = HostLoad("calm", 12 * GIB, 0.0)
SHORT = HostLoad("short", 1 * GIB, 0.0)
"""The fake host's MemAvailable against keep_available = 2G: nothing to do, then 1 GiB short."""

# The adaptive agent with its own reclaim steps at 0 and drop-behind off: it reclaims only when
# the host asks, so that what leaves the guest here is the host's doing.
PASSIVE = """
[adaptive]
busy_max_step_bytes = 0
idle_max_step_bytes = 0
drop_behind_age_s = 0
"""

# In the agent's place: a report a second offering 1 TiB, and an answer to each request that
# refuses (`refuse`) or claims 1 TiB released without doing anything (`lie`).
IMPOSTOR = r"""
import glob, json, os, select, sys, time
mode = sys.argv[1]
name = "org.vmreclaim.agent.0"
port = next(d for d in glob.glob("/sys/class/virtio-ports/*")
            if open(d + "/name").read().strip() == name)
fd = os.open("/dev/" + os.path.basename(port), os.O_RDWR)

def send(message):
    os.write(fd, (json.dumps(message) + "\n").encode())

seq, pending, due = 0, b"", 0.0
send_ok = True
while True:
    if time.monotonic() >= due:
        seq += 1
        send({"type": "report", "v": 1, "seq": seq, "version": "6.6.6", "policy": mode,
              "interval_s": 1.0, "reclaimable_bytes": 1 << 40, "cache_bytes": 1 << 40,
              "floor_bytes": 0, "refaulted_bytes": 0, "last_action": "none",
              "last_action_age_s": None})
        due = time.monotonic() + 1.0
    if not select.select([fd], [], [], 0.2)[0]:
        continue
    data = os.read(fd, 4096)
    if not data:
        time.sleep(0.2)  # no host on the other end
        continue
    pending += data
    while b"\n" in pending:
        line, pending = pending.split(b"\n", 1)
        request = json.loads(line)
        print("request", request["id"], request["release_bytes"], flush=True)
        if mode == "refuse":
            send({"type": "answer", "v": 1, "id": request["id"], "released_bytes": 0,
                  "refused": "memory_pressure"})
        else:
            send({"type": "answer", "v": 1, "id": request["id"], "released_bytes": 1 << 40,
                  "refused": ""})
"""


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    log: Path
    socket: Path
    port: int
    vm: VirtualMachine
    host: FakeHostProc

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def metrics(self) -> dict[tuple[str, str], float]:
        """(metric name, result label or "") -> value, for this VM and the host."""
        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://127.0.0.1:{self.port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        return {
            (sample.name, sample.labels.get("result", "")): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.labels.get("address") in (None, str(self.vm.qmp_socket))
        }

    def top(self) -> dict[str, object]:
        argv = [sys.executable, "-m", "vmreclaim", "top", "--once", "--json"]
        argv += ["--socket", str(self.socket)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        (entry,) = json.loads(done.stdout)["vms"]
        assert isinstance(entry, dict)
        return entry

    def short_once_the_agent_reports(self) -> None:
        """Wait for the agent's first report in the daemon's view, then make the host short:
        before it, the daemon would squeeze a VM whose agent it has not heard yet."""

        def reported() -> bool:
            assert self.process.poll() is None, self.log_text()
            argv = [sys.executable, "-m", "vmreclaim", "top", "--once", "--json"]
            done = subprocess.run(
                [*argv, "--socket", str(self.socket)], capture_output=True, text=True, timeout=30
            )
            if done.returncode != 0:
                return False  # the daemon's view is not up yet
            vms = json.loads(done.stdout)["vms"]
            return bool(vms) and bool((vms[0]["agent"] or {}).get("report"))

        assert wait_until(reported, 90, 1), self.log_text()[-3000:]
        self.host.set(SHORT)


@contextmanager
def host_run(vm: VirtualMachine, directory: Path, **balloon: str) -> Iterator[Daemon]:
    """`host run` over a fake host's memory figures, calm until `short_once_the_agent_reports`;
    stopped by SIGTERM at the end, which gives the balloon back."""
    port = free_port()
    socket = directory / "host.sock"
    knobs = "".join(f"{key} = {value}\n" for key, value in balloon.items())
    host = FakeHostProc(directory / "host-proc", 16 * GIB)
    host.set(CALM)
    config = directory / "host.toml"
    config.write_text(
        f'qmp = ["{vm.qmp_socket}"]\n'
        f'agent = ["{vm.agent_socket.parent}/*.agent"]\n'
        f'socket = "{socket}"\n'
        f"[metrics]\nport = {port}\n"
        f'[host]\nkeep_available = "2G"\nproc = "{host.directory}"\n'
        f"[balloon]\nmajor_faults_per_cycle = 100000\n{knobs}"
    )
    log = directory / "daemon.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "vmreclaim", "-v", "host", "run", "--config", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    daemon = Daemon(process, log, socket, port, vm, host)
    try:
        yield daemon
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def vm(guest_image) -> Iterator[VirtualMachine]:
    config = MachineConfig(memory=1024 * MIB, cpus=1, agent_port=True, scratch_disk=512 * MIB)
    with VirtualMachine(config, guest_image) as machine:
        yield machine


@contextmanager
def in_guest(vm: VirtualMachine, command: str, log: str) -> Iterator[None]:
    """`command` running in the guest in the background, its output in `log`; at the end
    SIGTERM, and wait until it is gone: the port takes one opener at a time."""
    vm.check(f"{command} >{log} 2>&1 & echo $! >/tmp/in_guest.pid")
    try:
        yield
    finally:
        vm.check(
            "pid=$(cat /tmp/in_guest.pid); kill -TERM $pid; "
            "while kill -0 $pid 2>/dev/null; do sleep 0.2; done",
            timeout=60,
        )


def _logged(daemon: Daemon, pattern: str) -> bool:
    return bool(_lines(daemon.log_text(), pattern))


def _lines(text: str, pattern: str) -> list[int]:
    return [index for index, line in enumerate(text.splitlines()) if re.search(pattern, line)]


def test_the_agent_releases_cold_cache_on_request_before_the_balloon_moves(
    vm: VirtualMachine, tmp_path: Path
) -> None:
    vm.check(f"{WORKLOADS} write-files /mnt/scratch/cold {COLD}", timeout=600)
    vm.check(f"cat >/tmp/passive.ini <<'EOF'\n{PASSIVE}\nEOF")
    agent = (
        "python3 -m vmreclaim guest run --policy adaptive --interval 1 --config /tmp/passive.ini"
    )
    with (
        in_guest(vm, agent, "/tmp/agent.log"),
        host_run(vm, tmp_path, ask_deadline="8.0") as daemon,
    ):
        daemon.short_once_the_agent_reports()
        started = time.monotonic()
        ended = r"agent says it released .* \(request 1\)"
        assert wait_until(lambda: _logged(daemon, ended), 120, 1), (
            daemon.log_text()[-4000:],
            vm.run("cat /tmp/agent.log").text[-3000:],
        )
        assert wait_until(lambda: _logged(daemon, "balloon target"), 30, 1)
        text = daemon.log_text()
        agent_log = vm.run("cat /tmp/agent.log").text
        last = daemon.top()["agent"]
        metrics = daemon.metrics()
    print(f"released and squeezed after {time.monotonic() - started:.1f} s")
    asked = _lines(text, r"asked its agent to release .* \(request 1;")
    (end,) = _lines(text, ended)
    squeezed = _lines(text, "balloon target")
    # Asked first; the balloon moved only once the request had ended.
    assert asked, text[-4000:]
    assert asked[0] < end < squeezed[0], text[-4000:]
    line = text.splitlines()[end]
    seen = re.search(r"footprint on the host dropped ([\d.]+) MiB", line)
    print(line)
    assert seen is not None, line
    assert float(seen.group(1)) >= 100, line
    released = re.search(
        r"host asked to release .*\(request 1\): reclaimed ([\d.]+) MiB", agent_log
    )
    assert released is not None, agent_log[-3000:]
    print(next(line for line in agent_log.splitlines() if "(request 1)" in line))
    print(text.splitlines()[asked[0]])
    assert float(released.group(1)) >= 150, agent_log[-3000:]
    assert isinstance(last, dict)
    assert last["requests"]["released"] >= 1, last
    assert metrics[("vmreclaim_vm_agent_requests_total", "released")] >= 1


def test_a_refusing_guest_gets_todays_balloon_right_after_its_answer(
    vm: VirtualMachine, tmp_path: Path
) -> None:
    vm.check(f"cat >/tmp/impostor.py <<'EOF'\n{IMPOSTOR}\nEOF")
    with (
        in_guest(vm, "python3 /tmp/impostor.py refuse", "/tmp/impostor.log"),
        host_run(vm, tmp_path, ask_deadline="8.0") as daemon,
    ):
        daemon.short_once_the_agent_reports()
        refused = r"agent refused \(memory_pressure\) .* \(request 1\)"
        assert wait_until(lambda: _logged(daemon, refused), 120, 1), (
            daemon.log_text()[-4000:],
            vm.run("cat /tmp/impostor.log").text,
        )
        assert wait_until(lambda: _logged(daemon, "balloon target"), 30, 0.5)
        text = daemon.log_text()
        metrics = daemon.metrics()
    (asked,) = _lines(text, r"asked its agent to release .* \(request 1;")
    (end,) = _lines(text, refused)
    first = _lines(text, "balloon target")[0]
    assert asked < end < first, text[-4000:]
    stamps = [_stamp(text.splitlines()[index]) for index in (asked, first)]
    print(f"refused; the balloon moved {stamps[1] - stamps[0]} s after the request")
    # The refusal ended the hold: the balloon moved well before the 8 s deadline.
    assert stamps[1] - stamps[0] < 6, text[-4000:]
    assert metrics[("vmreclaim_vm_agent_requests_total", "refused")] >= 1


def test_a_lying_guest_gains_nothing_and_is_asked_again_only_after_its_back_off(
    vm: VirtualMachine, tmp_path: Path
) -> None:
    vm.check(f"cat >/tmp/impostor.py <<'EOF'\n{IMPOSTOR}\nEOF")
    with (
        in_guest(vm, "python3 /tmp/impostor.py lie", "/tmp/liar.log"),
        host_run(vm, tmp_path, ask_deadline="4.0", ask_backoff="600.0") as daemon,
    ):
        daemon.short_once_the_agent_reports()
        ended = r"agent says it released 1\.0 TiB .* \(request 1\)"
        assert wait_until(lambda: _logged(daemon, ended), 120, 1), (
            daemon.log_text()[-4000:],
            vm.run("cat /tmp/liar.log").text,
        )
        # The balloon squeezes on, as it would without an agent, and no second request comes.
        targets: list[float] = []

        def squeezing() -> bool:
            value = daemon.metrics().get(("vmreclaim_vm_balloon_target_bytes", ""))
            if value is not None:
                targets.append(value)
            return len(set(targets)) >= 3

        assert wait_until(squeezing, 60, 1), (targets, daemon.log_text()[-4000:])
        text = daemon.log_text()
        metrics = daemon.metrics()
    line = text.splitlines()[_lines(text, ended)[0]]
    print(line)
    seen = re.search(r"footprint on the host dropped ([\d.]+) (\w+)", line)
    assert seen is not None, line
    assert seen.group(2) != "TiB"
    assert len(_lines(text, "asked its agent to release")) == 1, text[-4000:]
    assert metrics[("vmreclaim_vm_agent_requests_total", "released")] == 1
    # Steps as without an agent: bounded, downwards.
    assert targets == sorted(targets, reverse=True)


def _stamp(line: str) -> int:
    """Seconds of the day of a daemon's log line (`2026-12-01T03:30:09 INFO ...`)."""
    match = re.match(r"\S+T(\d\d):(\d\d):(\d\d) ", line)
    assert match is not None, line
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds)
