"""The agent channel on a real guest: `guest run` in the guest reports on its virtio-serial port,
`host run` on the host reads the reports from the port's socket, and `top` shows them; then a
hostile process in the guest writes garbage and a flood into the port, and the daemon stays up,
keeps serving its view and metrics, and counts what it dropped. The tests run in order on one
guest and one daemon."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import vmreclaim
from vmreclaim.lab import MachineConfig, VirtualMachine

from ..host.daemon_process import free_port, wait_until

MIB = 1 << 20

# Run in the guest by a process that is not the agent: what a compromised guest could send.
HOSTILE = r"""
import glob, json, os, time
name = "org.vmreclaim.agent.0"
ports = glob.glob("/sys/class/virtio-ports/*")
port = next(d for d in ports if open(d + "/name").read().strip() == name)
fd = os.open("/dev/" + os.path.basename(port), os.O_WRONLY)

def send(data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]

send(b"\n")  # whatever the agent left half-written ends here
# Paced under the rate limit (5 a second, bursts of 10), so that each kind is parsed and
# counted for what it is; the flood of lies after them is not.
send(b"\x00\xff\x1b[2J not json at all\n" * 4)
time.sleep(2)
send(b'{"type":"report","v":1,"seq":-5,"policy":"[red]x"}\n' * 4)
time.sleep(2)
send(b"{" + b"x" * 200000 + b"}\n")
report = {"type": "report", "v": 1, "seq": 1, "version": "6.6.6", "policy": "liar",
          "interval_s": 0.001, "reclaimable_bytes": 1 << 40, "cache_bytes": 1 << 40,
          "floor_bytes": 0, "refaulted_bytes": 0, "last_action": "none",
          "last_action_age_s": None}
send((json.dumps(report) + "\n").encode() * 500)
print("flooding", flush=True)
send(b"y" * (1 << 20))
send(b"\n")
print("done", flush=True)
"""


@dataclass
class Setup:
    vm: VirtualMachine
    daemon: subprocess.Popen[bytes]
    log: Path
    socket: Path
    port: int

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def metrics(self) -> dict[tuple[str, str], float]:
        """(metric name, reason label or "") -> value, for this VM and the host."""
        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://127.0.0.1:{self.port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        return {
            (sample.name, sample.labels.get("reason", "")): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.labels.get("address") in (None, str(self.vm.qmp_socket))
        }

    def top(self) -> dict[str, Any]:
        """This VM's entry in `top --once --json`, from the daemon's view."""
        argv = [sys.executable, "-m", "vmreclaim", "top", "--once", "--json"]
        argv += ["--socket", str(self.socket)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        (entry,) = json.loads(done.stdout)["vms"]
        assert isinstance(entry, dict)
        return entry


def start_agent(vm: VirtualMachine) -> None:
    vm.check(
        "python3 -m vmreclaim guest run --policy adaptive --interval 1 "
        ">/tmp/agent.log 2>&1 & echo $! >/tmp/agent.pid"
    )


def stop_agent(vm: VirtualMachine) -> str:
    return vm.check(
        "pid=$(cat /tmp/agent.pid); kill -TERM $pid; "
        "while kill -0 $pid 2>/dev/null; do sleep 0.2; done; cat /tmp/agent.log",
        timeout=60,
    ).text


@pytest.fixture(scope="module")
def setup(guest_image, tmp_path_factory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("agent")
    port = free_port()
    config = MachineConfig(memory=768 * MIB, cpus=1, agent_port=True)
    with VirtualMachine(config, guest_image) as vm:
        host_toml = directory / "host.toml"
        socket = directory / "host.sock"
        # A host that is never short: this daemon watches, it does not squeeze.
        host_toml.write_text(
            f"""
            qmp = ["{vm.qmp_socket}"]
            agent = ["{vm.agent_socket.parent}/*.agent"]
            socket = "{socket}"
            [metrics]
            port = {port}
            [host]
            keep_available = "1M"
            """.replace("            ", "")
        )
        log = directory / "daemon.log"
        with log.open("wb") as log_file:
            daemon = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "vmreclaim",
                    "-v",
                    "host",
                    "run",
                    "--config",
                    str(host_toml),
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        setup = Setup(vm, daemon, log, socket, port)
        try:
            assert wait_until(lambda: _serving(setup), 30), setup.log_text()
            assert wait_until(lambda: _watching(setup), 30), setup.log_text()
            yield setup
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


def _serving(setup: Setup) -> bool:
    assert setup.daemon.poll() is None, setup.log_text()
    try:
        setup.metrics()
    except OSError:
        return False
    return True


def _watching(setup: Setup) -> bool:
    """The daemon's view lists the VM: it connected to its monitor."""
    argv = [sys.executable, "-m", "vmreclaim", "top", "--once", "--json"]
    argv += ["--socket", str(setup.socket)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return done.returncode == 0


def _report(setup: Setup) -> dict[str, Any] | None:
    agent = setup.top()["agent"]
    return None if agent is None else agent["report"]


PROBE = r"""
import errno, glob, os
name = "org.vmreclaim.agent.0"
ports = glob.glob("/sys/class/virtio-ports/*")
port = next(d for d in ports if open(d + "/name").read().strip() == name)
fd = os.open("/dev/" + os.path.basename(port), os.O_WRONLY | os.O_NONBLOCK)
print("opened", flush=True)
try:
    os.write(fd, b"hello\n")
    print("written")
except OSError as err:
    print(errno.errorcode[err.errno])
"""


def test_without_a_host_a_port_write_would_block_and_the_agent_drops_its_reports(
    guest_image,
) -> None:
    """What virtio-serial does with nobody on the host's end, and what the agent makes of it:
    a non-blocking write fails with EAGAIN, a blocking one waits; the agent drops its reports
    and ticks on, and the first report after the host connects shows the gap."""
    import socket

    from vmreclaim.agent_protocol import parse_report

    config = MachineConfig(memory=512 * MIB, cpus=1, agent_port=True)
    with VirtualMachine(config, guest_image) as vm:
        vm.check(f"cat >/tmp/probe.py <<'EOF'\n{PROBE}\nEOF")
        assert vm.check("python3 /tmp/probe.py").text.split() == ["opened", "EAGAIN"]
        blocking = PROBE.replace(" | os.O_NONBLOCK", "")
        vm.check(f"cat >/tmp/blocking.py <<'EOF'\n{blocking}\nEOF")
        # Opened, then killed by timeout while its write still waits for a host.
        waited = vm.run("timeout 12 python3 /tmp/blocking.py", timeout=60)
        assert (waited.exit_code != 0, waited.text.split()) == (True, ["opened"])
        start_agent(vm)
        vm.check(
            "for i in $(seq 60); do grep -q 'does not read the channel' /tmp/agent.log && break; "
            "sleep 1; done",
            timeout=90,
        )
        time.sleep(3)  # a few more ticks, dropped
        with socket.socket(socket.AF_UNIX) as host:
            host.settimeout(20)
            host.connect(str(vm.agent_socket))
            data = b""
            while data.count(b"\n") < 2:
                data += host.recv(4096)
        first = parse_report(data.split(b"\n")[0])
        log = stop_agent(vm)
    assert first.seq > 3, log
    assert log.count("the host does not read the channel") == 1, log
    assert "reports reach the host again" in log, log


def test_the_agents_report_reaches_top_within_a_few_ticks(setup: Setup) -> None:
    started = time.monotonic()
    start_agent(setup.vm)
    # python3 starts in about 5 s in a TCG guest, then a report a tick (1 s).
    assert wait_until(lambda: _report(setup) is not None, 90, interval=1), (
        setup.vm.run("cat /tmp/agent.log").text,
        setup.log_text()[-3000:],
    )
    print(f"first report in top after {time.monotonic() - started:.1f} s")
    report = _report(setup)
    assert report is not None
    assert report["policy"] == "adaptive"
    assert report["version"] == vmreclaim.__version__
    assert report["interval_s"] == 1.0
    assert report["floor_bytes"] == 128 * MIB
    assert report["cache_bytes"] is not None
    # Its cold cache: above the floor, and only the inactive list's share of that.
    assert 0 <= report["reclaimable_bytes"] <= max(0, report["cache_bytes"] - 128 * MIB)
    log = setup.vm.run("cat /tmp/agent.log").text
    assert "host channel: a report after every tick on /dev/vport" in log, log
    metrics = setup.metrics()
    assert metrics[("vmreclaim_vm_agent_connected", "")] == 1
    assert metrics[("vmreclaim_vm_agent_reports_total", "")] >= 1
    assert ("vmreclaim_vm_agent_reclaimable_bytes", "") in metrics
    assert metrics[("vmreclaim_vm_agent_report_age_seconds", "")] < 10
    # Sequence numbers count up, one a tick.
    first = report["seq"]
    assert wait_until(lambda: (_report(setup) or {}).get("seq", 0) >= first + 3, 30)


def test_a_hostile_guest_neither_stops_nor_stalls_the_daemon(setup: Setup) -> None:
    stop_agent(setup.vm)  # a port takes one writer at a time
    before = setup.metrics()
    assert not [key for key, value in before.items() if "dropped" in key[0] and value], before
    setup.vm.check(f"cat >/tmp/hostile.py <<'EOF'\n{HOSTILE}\nEOF")
    setup.vm.check("timeout 60 python3 /tmp/hostile.py >/tmp/hostile.log 2>&1 &")

    def dropped(reason: str) -> float:
        return setup.metrics().get(("vmreclaim_vm_agent_messages_dropped_total", reason), 0.0)

    # Served all along: the view (top) and the metrics answer, cycles go on.
    slowest = 0.0
    cycles = before[("vmreclaim_cycles_total", "")]
    deadline = time.monotonic() + 90
    reasons = ("not_json", "invalid", "too_long", "rate_limited")
    while time.monotonic() < deadline:
        asked = time.monotonic()
        setup.top()
        slowest = max(slowest, time.monotonic() - asked)
        assert setup.daemon.poll() is None, setup.log_text()[-3000:]
        if all(dropped(reason) > 0 for reason in reasons):
            break
        time.sleep(1)
    hostile = setup.vm.run("cat /tmp/hostile.log").text
    metrics = setup.metrics()
    counts = {r: metrics.get(("vmreclaim_vm_agent_messages_dropped_total", r)) for r in reasons}
    print(f"dropped: {counts}; slowest top: {slowest:.2f} s; guest: {hostile!r}")
    for reason in reasons:
        assert dropped(reason) > 0, (reason, counts, setup.log_text()[-3000:])
    assert metrics[("vmreclaim_cycles_total", "")] > cycles
    assert slowest < 10
    # The liar's reports got through validation, as far as the rate allows: what they say is
    # the guest's word, shown as such.
    report = _report(setup)
    assert report is not None
    assert report["policy"] in ("liar", "adaptive")
    assert "Traceback" not in setup.log_text()


def test_the_honest_agent_is_heard_again_after_the_flood(setup: Setup) -> None:
    setup.vm.check("pkill -f hostile.py; while pgrep -f hostile.py >/dev/null; do sleep 0.2; done")
    start_agent(setup.vm)
    assert wait_until(lambda: (_report(setup) or {}).get("policy") == "adaptive", 120, 1), (
        setup.vm.run("cat /tmp/agent.log").text,
        setup.log_text()[-3000:],
    )
    assert setup.daemon.poll() is None
    stop_agent(setup.vm)
