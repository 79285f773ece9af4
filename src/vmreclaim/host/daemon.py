"""`vmreclaim host run`: poll every VM, decide, steer balloons, publish metrics and the view
for `top` (view.py), once a cycle.

All the judgement is in policy.decide; this module only moves data between the fleet, the
host's /proc, the policy and the balloons, and logs what changed.

Stopping: SIGTERM and SIGINT cancel the step under way (every hypervisor call is bounded, so
none is left waiting), give back every balloon this daemon left below its VM's RAM unless
`keep_balloons` is set (no guest stays squeezed with no one watching it: a daemon that is gone
cannot deflate a guest that comes to need its memory), close the connections and exit 0, all
within STOP_WITHIN_S.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import resource
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from vmreclaim.agent_protocol import VSOCK_PORT
from vmreclaim.errors import VmreclaimError
from vmreclaim.host.agents import AgentChannels
from vmreclaim.host.asking import EXPIRED, REFUSED, Ask, Outcome
from vmreclaim.host.backends.base import BackendFactory
from vmreclaim.host.config import HostConfig
from vmreclaim.host.fleet import Discoverer, Fleet, FleetPoll
from vmreclaim.host.hostmem import read_host_memory
from vmreclaim.host.metrics import MetricsServer, MetricsView
from vmreclaim.host.policy import Action, Decision, Observation, PolicyState, decide, withdraw
from vmreclaim.host.records import HostMemory
from vmreclaim.host.top import snapshot_json
from vmreclaim.host.view import ViewServer
from vmreclaim.units import format_size

T = TypeVar("T")

log = logging.getLogger(__name__)


def describe(config: HostConfig) -> str:
    """The effective configuration, for the log at start (senpai's habit)."""
    policy = config.policy
    return (
        f"config {config.path}: "
        + (
            f"sockets {list(config.qmp)}"
            if config.has_vms
            else "every VM found on the host (QEMU command lines, managers' socket folders, "
            "local libvirt)"
        )
        + "".join(
            f", {kind} {list(named)}"
            for kind, named in (
                ("libvirt", config.libvirt),
                ("cloud_hypervisor", config.cloud_hypervisor),
                ("firecracker", config.firecracker),
            )
            if named
        )
        + (
            f", agent channels {list(config.agent)}"
            + (
                f" and vsock {list(config.agent_vsock)} (listening at each _{VSOCK_PORT})"
                if config.agent_vsock
                else ""
            )
            + " ("
            + (
                f"asked for cold cache before a squeeze: {policy.ask_deadline_s:g} s deadline, "
                f"again after {policy.ask_interval_s:g} s, or {policy.ask_backoff_s:g} s after "
                "a refusal, silence or an unseen release)"
                if policy.ask_agents
                else "never asked: ask_agents = false)"
            )
            if config.agent or config.agent_vsock
            else ""
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
        + f"; view for top at {config.socket or 'nowhere'}; on stop, balloons "
        + ("left as they are (keep_balloons)" if config.keep_balloons else "given back")
        + (f"; host memory read under {config.host_proc}" if config.host_proc else "")
    )


STOP_WITHIN_S = 2.0
"""SIGTERM or SIGINT to exit: what a service manager may expect of us."""
GIVE_BACK_WITHIN_S = 1.0
"""Of that, the time the balloons have to be given back (all at once, each call also bounded
by the hypervisor timeout); the rest is for closing connections and the servers."""


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
        self.agents = AgentChannels(config.agent, vsock=config.agent_vsock, clock=clock)
        self.state = PolicyState()
        self.cycles = 0
        self._clock = clock
        self.metrics: MetricsServer | None = None
        self.view: ViewServer | None = None
        self._stop: asyncio.Event | None = None
        """Made in `run`: before 3.10 an Event binds to the loop current when it is made."""
        self._stop_requested = False
        self._stop_reason = ""
        self._ram: dict[str, int] = {}
        """Every VM whose balloon this daemon set, with its full RAM: what to give back."""
        self._asked: dict[str, int] = {}
        """The last target this daemon asked of each of them."""

    def stop(self, reason: str = "asked to") -> None:
        """End `run` after the current step; safe from a signal handler."""
        self._stop_reason = self._stop_reason or reason
        self._stop_requested = True
        if self._stop is not None:
            self._stop.set()

    async def run(self, max_cycles: int | None = None) -> None:
        log.info("%s", describe(self.config))
        raise_open_files()
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT)
        for signum in signals:
            loop.add_signal_handler(signum, self.stop, signal.Signals(signum).name)
        try:
            if self.config.metrics_port:
                self.metrics = MetricsServer(self.config.metrics_address, self.config.metrics_port)
            if self.config.socket is not None:
                self.view = ViewServer(self.config.socket)
                await self.view.start()
            while not self._stop_requested and (max_cycles is None or self.cycles < max_cycles):
                started = self._clock()
                if not await self._unless_stopped(self.cycle()):
                    break
                elapsed = self._clock() - started
                await self._unless_stopped(asyncio.sleep(max(0.0, self.config.interval - elapsed)))
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
            await self._shut_down()

    async def _unless_stopped(self, step: Awaitable[object]) -> bool:
        """Run `step` unless a stop comes first, which cancels it; False when stopped."""
        assert self._stop is not None
        task = asyncio.ensure_future(step)
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not stopping.done():
                stopping.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if stopping.done() and not stopping.cancelled():
            stopping.result()  # a wait that failed must not pass for a stop
        if task.cancelled():
            return False
        task.result()  # a step's own error goes on up
        return True

    async def _shut_down(self) -> None:
        started = time.monotonic()
        closing_metrics = None
        if self.metrics is not None:
            # Its HTTP server notices a shutdown only at its next poll (up to 0.5 s): meanwhile
            # the balloons are given back.
            closing_metrics = asyncio.get_running_loop().run_in_executor(None, self.metrics.close)
        given = await self._give_back()
        await _bounded_quietly(self.fleet.close(), STOP_WITHIN_S / 4, "closing the VMs")
        await _bounded_quietly(self.agents.close(), STOP_WITHIN_S / 4, "closing agent channels")
        if self.view is not None:
            await self.view.close()
        if closing_metrics is not None:
            await _bounded_quietly(closing_metrics, STOP_WITHIN_S / 4, "closing metrics")
        log.info(
            "stopped after %d cycle(s)%s: %s in %.2f s",
            self.cycles,
            f" ({self._stop_reason})" if self._stop_reason else "",
            given,
            time.monotonic() - started,
        )

    async def _give_back(self) -> str:
        """Deflate every balloon this daemon left below its VM's RAM, so nothing stays squeezed
        with no one watching the guest (unless keep_balloons says otherwise)."""
        squeezed = {
            address: ram
            for address, ram in self._ram.items()
            if self._asked.get(address, ram) < ram
        }
        if not squeezed:
            return "no balloon to give back"
        if self.config.keep_balloons:
            names = ", ".join(sorted(squeezed))
            return f"{len(squeezed)} balloon(s) left as they are (keep_balloons): {names}"
        calls = {address: self._give_back_one(address, ram) for address, ram in squeezed.items()}
        done = await _bounded_quietly(
            asyncio.gather(*calls.values(), return_exceptions=True),
            GIVE_BACK_WITHIN_S,
            "giving the balloons back",
        )
        results = done if isinstance(done, list) else [False] * len(calls)
        given = sum(1 for result in results if result is True)
        return f"{given} of {len(squeezed)} balloon(s) given back to their guests' full RAM"

    async def _give_back_one(self, address: str, ram: int) -> bool:
        backend = self.fleet.backend(address)
        if backend is None:
            log.warning("%s is not connected: its balloon stays where it is", address)
            return False
        try:
            await backend.set_balloon_target(ram)
        except VmreclaimError as err:
            log.warning("%s: cannot give its balloon back: %s", backend.name, err.message)
            return False
        log.info("%s: balloon target -> %s (stopping)", backend.name, format_size(ram))
        return True

    async def cycle(self) -> Decision:
        await self.agents.refresh()
        poll = await self.fleet.poll()
        poll = FleetPoll(self.agents.attach(poll.vms), poll.unreachable)
        host = read_host_memory(self.config.host_memory_proc)
        observation = Observation(host, poll.vms, self._clock())
        decision = decide(observation, self.config.policy, self.state)
        if decision.mode is not self.state.mode:
            available = format_size(host.available_bytes) if host else "unknown"
            log.info("policy: %s (host MemAvailable %s)", decision.mode.value, available)
        ram = {
            vm.sample.address: vm.sample.balloon.ram_bytes for vm in poll.vms if vm.sample.balloon
        }
        for outcome in decision.outcomes:
            self._ended(outcome)
        state = decision.state
        for ask in decision.asks:
            if not self._ask(ask):
                state = withdraw(state, ask.address, observation.now, self.config.policy)
        await self.apply_all(decision.actions, ram)
        self.state = state
        self.cycles += 1
        if decision.asks or decision.outcomes:
            poll = FleetPoll(self.agents.attach(poll.vms), poll.unreachable)
        self._publish(poll, decision, host)
        return decision

    async def apply_all(self, actions: Sequence[Action], ram: Mapping[str, int]) -> None:
        """Every VM's new target at once: each call is bounded, and a VM that hangs must not
        hold back the others' (a hung VM used to delay each one after it by the timeout)."""
        await asyncio.gather(*(self._apply(a, ram.get(a.address)) for a in actions))

    def _ask(self, ask: Ask) -> bool:
        """Send a request to the VM's agent; whether it went. One that cannot go is withdrawn:
        the balloon does not wait on it, and the agent is asked again after its back-off."""
        request = ask.request
        link = self.agents.link_for(ask.address)
        sent = link is not None and link.send(request)
        log.info(
            "%s: %s its agent to release %s of cold cache within %g s (request %d; %s)",
            ask.name,
            "asked" if sent else "could not ask",
            format_size(request.release_bytes),
            request.deadline_s,
            request.id,
            ask.reason if sent else "withdrawn: the balloon goes on without it",
        )
        return sent

    def _ended(self, outcome: Outcome) -> None:
        link = self.agents.link_for(outcome.address)
        if link is not None:
            link.ended(outcome)
        answer = outcome.answer
        seen = (
            "unknown"
            if outcome.seen_bytes is None
            else f"{format_size(outcome.seen_bytes)} in {outcome.waited_s:.1f} s"
        )
        if outcome.result == EXPIRED:
            said = f"no answer within {outcome.waited_s:.1f} s"
        elif outcome.result == REFUSED and answer is not None:
            said = f"refused ({answer.refused or 'released nothing'})"
        else:
            released = answer.released_bytes if answer else 0
            said = f"says it released {format_size(released)}"
        log.info(
            "%s: agent %s of the %s asked (request %d); its footprint on the host dropped %s; "
            "the balloon covers what the host still lacks",
            outcome.name,
            said,
            format_size(outcome.release_bytes),
            outcome.id,
            seen,
        )

    async def _apply(self, action: Action, ram: int | None) -> None:
        previous = self.state.vms.get(action.address)
        before = format_size(previous.target_bytes) if previous else "?"
        backend = self.fleet.backend(action.address)
        if backend is None:
            return
        if ram is not None:
            # Noted before the call: a stop that cancels it must still give this one back.
            self._ram[action.address] = ram
            self._asked[action.address] = action.target_bytes
        try:
            await backend.set_balloon_target(action.target_bytes)
        except VmreclaimError as err:
            # The next poll notices a VM that went away and reconnects it.
            log.warning("%s: cannot set the balloon target: %s", action.name, err.message)
            return
        log.info(
            "%s: balloon target %s -> %s (%s)",
            action.name,
            before,
            format_size(action.target_bytes),
            action.reason,
        )

    def _publish(self, poll: FleetPoll, decision: Decision, host: HostMemory | None) -> None:
        if self.metrics is None and self.view is None:
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
        max_age = self.config.policy.max_stats_age_s
        if self.metrics is not None:
            self.metrics.collector.publish(
                MetricsView(
                    host, decision.mode.value, vms, len(poll.unreachable), self.cycles, max_age
                )
            )
        if self.view is not None:
            view = snapshot_json(FleetPoll(vms, poll.unreachable), host, time.time(), max_age)
            self.view.publish(view)


async def _bounded_quietly(step: Awaitable[T], seconds: float, what: str) -> T | None:
    """`step`'s result, or None when it failed or took longer than `seconds` (logged): a
    stopping daemon goes on stopping."""
    try:
        return await asyncio.wait_for(step, seconds)
    except asyncio.TimeoutError:
        log.warning("stopping: %s took longer than %.1f s; left as it is", what, seconds)
    except Exception as err:
        log.warning("stopping: %s failed: %r", what, err)
    return None


def run_daemon(
    config: HostConfig, factory: BackendFactory, discoverer: Discoverer | None = None
) -> None:
    """Run until SIGTERM or SIGINT, then stop within STOP_WITHIN_S."""
    daemon = Daemon(config, factory, discoverer=discoverer)
    asyncio.run(daemon.run())


def raise_open_files() -> None:
    """Raise the soft limit of open files to the hard one: a VM costs the daemon one socket,
    and the usual soft limit (1024, systemd's too) runs out at about 950 VMs, where the hard
    one (524288 under systemd) does not."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or (hard != resource.RLIM_INFINITY and soft >= hard):
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as err:
        log.warning("cannot raise the limit of open files from %d: %s", soft, err)
        return
    log.debug("open files: soft limit raised from %d to %s", soft, hard)
