"""The balloon policy: a pure function from what was observed to balloon targets.

`decide(observation, config, state) -> Decision`: no I/O, no clock, no sleeping, so the daemon,
the unit tests and any simulator run the same law. Per cycle:

1. The host decides the mode, with a band for hysteresis (oVirt MoM and Proxmox use thresholds
   alone; they also read no pressure):
   - shrink while MemAvailable < keep_available, or memory PSI some avg10 > max_memory_pressure;
   - grow back while MemAvailable >= release_available and pressure is under the limit;
   - hold in between, so a host near the threshold does not make balloons oscillate.
2. Each VM, guest first:
   - emergency: the guest's available memory is under the margin, its major faults climbed
     faster than the limit since the last cycle, or it took balloon pages back itself
     (deflate-on-oom: the balloon grew past its target): deflate at once to the VM's full RAM,
     unbounded, and leave it alone for `deflate_hold_cycles` (the guest told us it needs the
     memory);
   - shrink: take the VM's share of the host's shortfall (by shares), at most
     min(max_step, max_step_percent of its RAM) a step (MoM's 5 %, Proxmox's 100 MiB), never
     below its minimum and never closer than a step to the guest's available memory margin
     (squeezed to the margin itself, the guest's small swings crossed it and deflated it).
     A step waits for the guest's figures to show the last one: the balloon has reached its
     target and the guest has reported since (its statistics come every 2 s, the cycle is
     1 s; judged on figures from before the balloon moved, steps overshot the margin and the
     guest was squeezed into an emergency deflation, again and again);
   - grow: give back at most the same step a cycle, up to the full RAM.
   - ask first (asking.py): under a shortfall, the agents that offer cold cache are asked
     for it before any balloon moves, the shortfall split among them in proportion to their
     offers (the guests holding most cold cache give most; a guest whose cache is hot offers
     none and is not asked). A VM with a request out holds its balloon until its agent refuses
     or the deadline passes; the other VMs' balloons squeeze, by shares, only for what the
     requests out do not cover. Balloons take whatever the guest kernel picks, the hot set
     included; an agent gives its inactive list only.
3. No action on incomplete data (MoM's rule): without host figures nothing moves; a VM without
   fresh guest statistics (none, or older than `max_stats_age_s`: a paused guest, a balloon
   driver that stopped reporting) is neither shrunk nor judged in need; growing back, which
   only gives memory, goes on. Changes smaller than `min_change` are ignored (MoM ignores
   changes under 0.25 %).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from vmreclaim.host import asking
from vmreclaim.host.asking import Ask, Asking, Outcome
from vmreclaim.host.config import PolicyConfig
from vmreclaim.host.records import HostMemory, VmObservation

PAGE = 4096
"""The balloon moves whole 4 KiB pages; targets are aligned to them."""
SETTLED_SLACK = 4 << 20
"""A balloon within this of its target has reached it (the guest inflates in batches)."""


class Mode(enum.Enum):
    NO_DATA = "no-data"
    SHRINK = "shrink"
    HOLD = "hold"
    GROW = "grow"


@dataclass(frozen=True)
class Observation:
    host: HostMemory | None
    vms: tuple[VmObservation, ...]
    now: float = 0.0
    """The daemon's clock (monotonic seconds), for the deadlines of requests to agents."""


@dataclass(frozen=True)
class VmControl:
    """What the policy remembers of one VM, keyed by its address."""

    target_bytes: int
    last_major_faults: int | None = None
    hold_cycles: int = 0
    unsettled_report: float | None = None
    """The guest report current while the balloon was last moving or given a lower target:
    the next shrink step needs a newer one."""
    last_actual_bytes: int | None = None
    """The balloon's size at the last poll."""
    asking: Asking | None = None
    """The request out to the VM's guest agent, if one is."""
    next_ask_at: float = 0.0
    """When its agent may be asked again (Observation.now's clock)."""


@dataclass(frozen=True)
class PolicyState:
    mode: Mode = Mode.NO_DATA
    vms: Mapping[str, VmControl] = field(default_factory=dict)
    last_request_id: int = 0


@dataclass(frozen=True)
class Action:
    address: str
    name: str
    target_bytes: int
    reason: str


@dataclass(frozen=True)
class Decision:
    mode: Mode
    actions: tuple[Action, ...]
    state: PolicyState
    asks: tuple[Ask, ...] = ()
    """Requests for the daemon to send to guest agents."""
    outcomes: tuple[Outcome, ...] = ()
    """Requests that ended this cycle."""


def host_mode(host: HostMemory | None, config: PolicyConfig) -> Mode:
    if host is None:
        return Mode.NO_DATA
    pressured = (
        config.max_memory_pressure is not None
        and host.psi_some_avg10 is not None
        and host.psi_some_avg10 > config.max_memory_pressure
    )
    if host.available_bytes < config.keep_available_bytes or pressured:
        return Mode.SHRINK
    if host.available_bytes >= config.release_available_bytes:
        return Mode.GROW
    return Mode.HOLD


def max_step(ram_bytes: int, config: PolicyConfig) -> int:
    return _page_down(min(config.max_step_bytes, int(ram_bytes * config.max_step_fraction)))


def _page_down(value: int) -> int:
    return value - value % PAGE


def _fault_burst(vm: VmObservation, control: VmControl, config: PolicyConfig) -> int | None:
    guest = vm.sample.guest
    faults = guest.major_faults if guest else None
    if faults is None or control.last_major_faults is None or faults < control.last_major_faults:
        return None
    burst = faults - control.last_major_faults
    return burst if burst > config.major_faults_per_cycle else None


def decide(observation: Observation, config: PolicyConfig, state: PolicyState) -> Decision:
    mode = host_mode(observation.host, config)
    if mode is Mode.NO_DATA:
        return Decision(mode, (), dataclasses.replace(state, mode=mode))
    host = observation.host
    assert host is not None
    now = observation.now
    shortfall = max(0, config.keep_available_bytes - host.available_bytes)

    outcomes: list[Outcome] = []
    controls: dict[str, VmControl] = {}
    ballooned = [vm for vm in observation.vms if vm.sample.balloon is not None]
    for vm in ballooned:  # no balloon: nothing to steer, nothing to remember
        balloon = vm.sample.balloon
        assert balloon is not None
        address = vm.sample.address
        control = state.vms.get(address) or VmControl(target_bytes=balloon.actual_bytes)
        control, outcome = _conclude(vm, control, config, now)
        if outcome is not None:
            outcomes.append(outcome)
        controls[address] = control

    asks: list[Ask] = []
    request_id = state.last_request_id
    if mode is Mode.SHRINK:
        for vm, amount in _asks(ballooned, controls, config, now, shortfall):
            asked = asking.ask(vm, config, now, amount, request_id + 1)
            if asked is not None:
                request_id += 1
                asks.append(asked[0])
                address = vm.sample.address
                controls[address] = dataclasses.replace(controls[address], asking=asked[1])
    # The balloons squeeze for what the requests out do not cover, among the VMs not asked.
    out = sum(c.asking.release_bytes for c in controls.values() if c.asking is not None)
    squeeze = max(0, shortfall - out)
    squeezable = [
        vm
        for vm in ballooned
        if _complete(vm, config) and controls[vm.sample.address].asking is None
    ]
    total_shares = sum(config.shares_for(vm.sample.name, vm.sample.address) for vm in squeezable)

    actions: list[Action] = []
    for vm in ballooned:
        balloon = vm.sample.balloon
        assert balloon is not None
        address = vm.sample.address
        control = controls[address]
        # PSI alone (MemAvailable above the threshold) gives no amount: None, a full step.
        share = (
            squeeze * config.shares_for(vm.sample.name, address) // (total_shares or 1)
            if shortfall > 0
            else None
        )
        target, reason, hold = _next_target(vm, control, config, mode, share)
        if control.asking is not None and target < control.target_bytes:
            target, reason = control.target_bytes, ""  # its agent has until its deadline
        guest = vm.sample.guest
        faults = guest.major_faults if guest else None
        unsettled = control.unsettled_report
        if target < control.target_bytes or abs(balloon.actual_bytes - target) > SETTLED_SLACK:
            unsettled = vm.stats_at if vm.stats_at is not None else unsettled
        controls[address] = dataclasses.replace(
            control,
            target_bytes=target,
            last_major_faults=faults,
            hold_cycles=hold,
            unsettled_report=unsettled,
            last_actual_bytes=balloon.actual_bytes,
        )
        if target != control.target_bytes:
            actions.append(Action(address, vm.sample.name, target, reason))
    return Decision(
        mode,
        tuple(actions),
        PolicyState(mode, controls, request_id),
        tuple(asks),
        tuple(outcomes),
    )


def withdraw(state: PolicyState, address: str, now: float, config: PolicyConfig) -> PolicyState:
    """The state with the VM's request dropped, when it could not be sent (no channel, or the
    write failed): nothing holds its balloon from the next cycle on, and its agent is not asked
    again for ask_backoff_s, as after silence."""
    control = state.vms.get(address)
    if control is None or control.asking is None:
        return state
    control = dataclasses.replace(control, asking=None, next_ask_at=now + config.ask_backoff_s)
    return dataclasses.replace(state, vms={**state.vms, address: control})


def _asks(
    vms: list[VmObservation],
    controls: Mapping[str, VmControl],
    config: PolicyConfig,
    now: float,
    shortfall: int,
) -> list[tuple[VmObservation, int]]:
    """Which agents to ask this cycle and for how much: the host's shortfall not yet covered by
    requests out, split among the agents that offer cold cache in proportion to their offers,
    so that the guests holding the most cold cache give the most and a guest whose cache is hot
    is not asked at all. Under pressure alone (no shortfall), each for a balloon step."""
    if not config.ask_agents:
        return []
    offers: list[tuple[VmObservation, int]] = []
    for vm in vms:
        control = controls[vm.sample.address]
        if control.asking is not None or now < control.next_ask_at or control.hold_cycles > 0:
            continue
        if not _complete(vm, config) or _emergency(vm, control, config) is not None:
            continue  # a guest short of memory itself has nothing cold to give
        offer = asking.agent_offer(vm)
        if offer is not None:
            offers.append((vm, offer))
    if shortfall == 0:
        return [
            (vm, min(offer, max_step(vm.sample.balloon.ram_bytes, config)))
            for vm, offer in offers
            if vm.sample.balloon is not None
        ]
    out = sum(c.asking.release_bytes for c in controls.values() if c.asking is not None)
    wanted = shortfall - out
    total = sum(offer for _, offer in offers)
    if wanted < asking.MIN_ASK_BYTES or total == 0:
        return []
    return [(vm, min(offer, wanted * offer // total)) for vm, offer in offers]


def _conclude(
    vm: VmObservation, control: VmControl, config: PolicyConfig, now: float
) -> tuple[VmControl, Outcome | None]:
    """The VM's control with its request to the agent ended, if it ends this cycle."""
    if control.asking is None:
        return control, None
    out, outcome = asking.conclude(vm, control.asking, now)
    control = dataclasses.replace(control, asking=out)
    if outcome is not None:
        next_at = asking.next_ask_at(outcome, config, now)
        control = dataclasses.replace(control, next_ask_at=next_at)
    return control, outcome


def _complete(vm: VmObservation, config: PolicyConfig) -> bool:
    guest = vm.sample.guest
    return (
        vm.sample.balloon is not None
        and guest is not None
        and vm.stats_fresh(config.max_stats_age_s)
        and guest.available_bytes is not None
    )


def _next_target(
    vm: VmObservation, control: VmControl, config: PolicyConfig, mode: Mode, share: int | None
) -> tuple[int, str, int]:
    """The VM's new target, why, and how many cycles it stays on hold."""
    balloon = vm.sample.balloon
    assert balloon is not None
    current = control.target_bytes
    minimum = min(balloon.ram_bytes, config.minimum_for(vm.sample.name, vm.sample.address))
    if current < minimum:
        return minimum, "below its minimum", control.hold_cycles
    emergency = _emergency(vm, control, config)
    if emergency is not None and current < balloon.ram_bytes:
        return balloon.ram_bytes, emergency, config.deflate_hold_cycles
    if control.hold_cycles > 0:
        return current, "", control.hold_cycles - 1
    if mode is Mode.SHRINK:
        target = _shrink(vm, current, minimum, config, share) if _settled(vm, control) else current
        return target, "host short of memory", 0
    if mode is Mode.GROW:
        return _grow(balloon.ram_bytes, current, config), "host has memory to spare", 0
    return current, "", 0


def _emergency(vm: VmObservation, control: VmControl, config: PolicyConfig) -> str | None:
    """Why the guest needs its memory back now, or None."""
    balloon = vm.sample.balloon
    if (
        balloon is not None
        and control.last_actual_bytes is not None
        and balloon.actual_bytes > control.last_actual_bytes + SETTLED_SLACK
        and balloon.actual_bytes > control.target_bytes + SETTLED_SLACK
    ):
        # Grown past its target without being asked: the guest is taking balloon pages back
        # on the verge of OOM (deflate-on-oom). Seen at the next poll, before its statistics.
        return "the guest took balloon pages back (deflate-on-oom)"
    guest = vm.sample.guest
    if not _complete(vm, config) or guest is None or guest.available_bytes is None:
        return None
    if guest.available_bytes < config.guest_available_margin_bytes:
        return "guest available memory under the margin"
    burst = _fault_burst(vm, control, config)
    return f"{burst} major faults in the guest" if burst is not None else None


def _settled(vm: VmObservation, control: VmControl) -> bool:
    """Whether the guest's figures show the balloon where it was last put: it has reached its
    target, and the guest reported after it last moved."""
    balloon = vm.sample.balloon
    if balloon is None or abs(balloon.actual_bytes - control.target_bytes) > SETTLED_SLACK:
        return False
    if control.unsettled_report is None:
        return True
    return vm.stats_at is not None and vm.stats_at > control.unsettled_report


def _shrink(
    vm: VmObservation, current: int, minimum: int, config: PolicyConfig, share: int | None
) -> int:
    balloon = vm.sample.balloon
    guest = vm.sample.guest
    if (
        not _complete(vm, config)
        or balloon is None
        or guest is None
        or guest.available_bytes is None
    ):
        return current  # no fresh guest figures: no action
    step = max_step(balloon.ram_bytes, config)
    amount = step if share is None else min(step, share)
    # Never take what the guest would miss: stop a step above its available memory's margin,
    # so that the guest's own small swings do not cross it and deflate it all at once.
    spare = guest.available_bytes - config.guest_available_margin_bytes - step
    floor = max(minimum, balloon.actual_bytes - max(0, spare))
    target = max(floor, _page_down(current - amount))
    return target if current - target >= config.min_change_bytes else current


def _grow(ram: int, current: int, config: PolicyConfig) -> int:
    target = min(ram, current + max_step(ram, config))
    if target - current < config.min_change_bytes and target != ram:
        return current
    return target
