"""`vmreclaim host run` steering two real guests: it shrinks balloons in bounded steps while the
host is (by configuration) short, gives a guest its memory back the moment the guest needs it,
and survives `kill -9` of one VM. The tests run in order on one daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vmreclaim.lab import MachineConfig, VirtualMachine

from ..host.daemon_process import free_port, wait_until

MIB = 1 << 20
BIG_RAM = 1024 * MIB
SMALL_RAM = 512 * MIB
BIG_MINIMUM = 640 * MIB


@dataclass
class Setup:
    big: VirtualMachine
    small: VirtualMachine
    daemon: subprocess.Popen[bytes]
    log: Path
    port: int

    def metrics(self) -> dict[tuple[str, str], float]:
        """(metric name, address label or "") -> value."""
        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://127.0.0.1:{self.port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        return {
            (sample.name, sample.labels.get("address", "")): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def vm_metric(self, name: str, vm: VirtualMachine) -> float | None:
        return self.metrics().get((f"vmreclaim_vm_{name}", str(vm.qmp_socket)))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def setup(guest_image, tmp_path_factory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("daemon")
    port = free_port()
    with (
        VirtualMachine(MachineConfig(memory=BIG_RAM, cpus=1), guest_image) as big,
        VirtualMachine(MachineConfig(memory=SMALL_RAM, cpus=1), guest_image) as small,
    ):
        config = directory / "host.toml"
        # A threshold no host meets: the policy is short of memory from the first cycle.
        config.write_text(
            f"""
            qmp = ["{big.qmp_socket}", "{small.qmp_socket}"]
            socket = "{directory / "host.sock"}"
            [metrics]
            port = {port}
            [host]
            keep_available = "1T"
            max_memory_pressure = 100.0
            [balloon]
            guest_available_margin = "200M"
            major_faults_per_cycle = 100000
            [vm_defaults]
            minimum = "384M"
            [[vm]]
            name = "{big.qmp_socket}"
            minimum = "{BIG_MINIMUM // MIB}M"
            """.replace("            ", "")
        )
        log = directory / "daemon.log"
        with log.open("wb") as log_file:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "vmreclaim", "-v", "host", "run", "--config", str(config)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        setup = Setup(big, small, daemon, log, port)

        def serving() -> bool:
            assert daemon.poll() is None, setup.log_text()
            try:
                setup.metrics()
            except OSError:
                return False
            return True

        try:
            assert wait_until(serving, 30), setup.log_text()
            yield setup
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


def test_a_short_host_shrinks_the_balloon_in_bounded_steps(setup: Setup) -> None:
    bound = min(100 * MIB, BIG_RAM * 5 // 100)
    seen: list[tuple[float, float]] = []  # (cycles, target)

    def reached_minimum() -> bool:
        metrics = setup.metrics()
        target = metrics.get(("vmreclaim_vm_balloon_target_bytes", str(setup.big.qmp_socket)))
        if target is not None:
            seen.append((metrics[("vmreclaim_cycles_total", "")], target))
        return target == BIG_MINIMUM

    assert wait_until(reached_minimum, 90, interval=0.3), (seen, setup.log_text()[-3000:])
    steps = [
        (before - after, cycles_after - cycles_before)
        for (cycles_before, before), (cycles_after, after) in zip(seen, seen[1:])
    ]
    assert all(shrunk >= 0 for shrunk, _ in steps), steps
    assert all(shrunk <= bound * cycles for shrunk, cycles in steps if cycles), steps
    assert min(target for _, target in seen) >= BIG_MINIMUM
    # The guest really gave the memory up: the balloon's actual follows the target.
    assert wait_until(
        lambda: (
            (setup.vm_metric("balloon_actual_bytes", setup.big) or BIG_RAM)
            <= BIG_MINIMUM + 16 * MIB
        ),
        30,
    ), setup.log_text()[-2000:]


def test_a_guest_that_needs_memory_gets_its_balloon_deflated(setup: Setup) -> None:
    setup.big.check(
        "python3 -m vmreclaim.workloads alloc 400M --ready /tmp/held --hold 600 >/dev/null 2>&1 &"
    )
    setup.big.check("while [ ! -e /tmp/held ]; do sleep 0.1; done", timeout=300)
    assert wait_until(lambda: setup.vm_metric("balloon_target_bytes", setup.big) == BIG_RAM, 30), (
        setup.log_text()[-3000:]
    )
    assert "guest available memory under the margin" in setup.log_text()
    assert wait_until(
        lambda: (setup.vm_metric("balloon_actual_bytes", setup.big) or 0) >= BIG_RAM - 16 * MIB,
        30,
    )


def test_kill_9_of_one_vm_leaves_the_others_served(setup: Setup) -> None:
    os.kill(setup.small.pid, signal.SIGKILL)
    assert wait_until(lambda: setup.vm_metric("host_bytes", setup.small) is None, 20)
    cycles = setup.metrics()[("vmreclaim_cycles_total", "")]
    assert wait_until(lambda: setup.metrics()[("vmreclaim_cycles_total", "")] >= cycles + 2, 10)
    assert setup.vm_metric("host_bytes", setup.big) is not None
    assert setup.daemon.poll() is None
    assert f"lost VM vmreclaim-lab ({setup.small.qmp_socket})" in setup.log_text()
