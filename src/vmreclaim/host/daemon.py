"""`vmreclaim host run`: poll every VM, decide, steer balloons, publish metrics, once a cycle.

All the judgement is in policy.decide; this module only moves data between the fleet, the
host's /proc, the policy and the balloons, and logs what changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from vmreclaim.errors import VmreclaimError
from vmreclaim.host.backends.base import BackendFactory
from vmreclaim.host.config import HostConfig
from vmreclaim.host.fleet import Discoverer, Fleet, FleetPoll
from vmreclaim.host.hostmem import read_host_memory
from vmreclaim.host.metrics import MetricsServer, MetricsView
from vmreclaim.host.policy import Decision, Observation, PolicyState, decide
from vmreclaim.host.records import HostMemory
from vmreclaim.units import format_size

log = logging.getLogger(__name__)


def describe(config: HostConfig) -> str:
    """The effective configuration, for the log at start (senpai's habit)."""
    policy = config.policy
    return (
        f"config {config.path}: sockets {list(config.qmp)}"
        + "".join(
            f", {kind} {list(named)}"
            for kind, named in (
                ("libvirt", config.libvirt),
                ("cloud_hypervisor", config.cloud_hypervisor),
                ("firecracker", config.firecracker),
            )
            if named
        )
        + f", every {config.interval:g} s, {config.timeout:g} s for a hypervisor to answer, "
        f"guest statistics stale after {policy.max_stats_age_s:g} s; "
        f"keep host MemAvailable >= {format_size(policy.keep_available_bytes)}, grow back "
        f"above {format_size(policy.release_available_bytes)}, memory pressure limit "
        f"{policy.max_memory_pressure}; steps <= {format_size(policy.max_step_bytes)} and "
        f"<= {policy.max_step_fraction:.0%} of a VM; guest margin "
        f"{format_size(policy.guest_available_margin_bytes)}, major faults "
        f"<= {policy.major_faults_per_cycle}/cycle; default minimum "
        f"{format_size(policy.default_minimum_bytes)}, shares {policy.default_shares}, "
        f"{len(policy.rules)} per-VM rule(s); metrics "
        + (
            f"http://{config.metrics_address}:{config.metrics_port}/metrics"
            if config.metrics_port
            else "off"
        )
    )


class Daemon:
    def __init__(
        self,
        config: HostConfig,
        factory: BackendFactory,
        *,
        clock: Callable[[], float] = time.monotonic,
        discoverer: Discoverer | None = None,
    ) -> None:
        self.config = config
        self.fleet = Fleet(
            config.qmp,
            factory,
            sample_timeout=2 * config.timeout + 0.5,
            clock=clock,
            discoverer=discoverer,
        )
        self.state = PolicyState()
        self.cycles = 0
        self._clock = clock
        self.metrics: MetricsServer | None = None

    async def run(self, max_cycles: int | None = None) -> None:
        log.info("%s", describe(self.config))
        if self.config.metrics_port:
            self.metrics = MetricsServer(self.config.metrics_address, self.config.metrics_port)
        try:
            while max_cycles is None or self.cycles < max_cycles:
                started = self._clock()
                await self.cycle()
                elapsed = self._clock() - started
                await asyncio.sleep(max(0.0, self.config.interval - elapsed))
        finally:
            await self.fleet.close()
            if self.metrics is not None:
                self.metrics.close()

    async def cycle(self) -> Decision:
        poll = await self.fleet.poll()
        host = read_host_memory(self.config.proc)
        decision = decide(Observation(host, poll.vms), self.config.policy, self.state)
        if decision.mode is not self.state.mode:
            available = format_size(host.available_bytes) if host else "unknown"
            log.info("policy: %s (host MemAvailable %s)", decision.mode.value, available)
        for action in decision.actions:
            await self._apply(action.address, action.name, action.target_bytes, action.reason)
        self.state = decision.state
        self.cycles += 1
        self._publish(poll, decision, host)
        return decision

    async def _apply(self, address: str, name: str, target: int, reason: str) -> None:
        previous = self.state.vms.get(address)
        before = format_size(previous.target_bytes) if previous else "?"
        backend = self.fleet.backend(address)
        if backend is None:
            return
        try:
            await backend.set_balloon_target(target)
        except VmreclaimError as err:
            # The next poll notices a VM that went away and reconnects it.
            log.warning("%s: cannot set the balloon target: %s", name, err.message)
            return
        log.info("%s: balloon target %s -> %s (%s)", name, before, format_size(target), reason)

    def _publish(self, poll: FleetPoll, decision: Decision, host: HostMemory | None) -> None:
        if self.metrics is None:
            return
        vms = tuple(
            dataclasses.replace(
                vm,
                balloon_target_bytes=(
                    control.target_bytes
                    if (control := decision.state.vms.get(vm.sample.address))
                    else None
                ),
            )
            for vm in poll.vms
        )
        self.metrics.collector.publish(
            MetricsView(
                host,
                decision.mode.value,
                vms,
                len(poll.unreachable),
                self.cycles,
                self.config.policy.max_stats_age_s,
            )
        )


def run_daemon(
    config: HostConfig, factory: BackendFactory, discoverer: Discoverer | None = None
) -> None:
    daemon = Daemon(config, factory, discoverer=discoverer)
    asyncio.run(daemon.run())
