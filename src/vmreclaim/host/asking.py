"""Ask before squeezing: the part of the balloon law that talks to guest agents. Pure.

Under host pressure a VM whose agent is connected, reported recently and says it has cold
cache above its floor is first asked to release it (agent_protocol.ReleaseRequest), and its
balloon holds while the request is out. The request concludes when

- the agent refuses (or releases nothing): at once, and the balloon goes on as without an
  agent;
- the deadline passes, answered or not. A release is only seen on the host once the guest's
  free page reporting hands the freed pages back, PAGE_REPORTING_DELAY (2 s, mm/page_reporting.c)
  after they were freed; the deadline covers that, so an early answer does not end the hold.
  A release the footprint shows arriving (a quarter of the claim or more, not yet nine tenths)
  holds on for at most one more deadline: reporting paces itself over several rounds.

Then the balloon covers what is still short, which the law reads from the host's MemAvailable as
always: nothing the guest claims enters it. The guest's `released_bytes` decides only whether
to ask it again soon: when the VM's footprint on the host did not drop by a quarter of what it
claimed (or the host cannot tell), or it refused, or did not answer, it is not asked for
`ask_backoff_s`. A guest that
lies can therefore cost the host one deadline per back-off, and only for its own VM: the others
are asked, or squeezed, on their own clocks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from vmreclaim.agent_protocol import ReleaseAnswer, ReleaseRequest
from vmreclaim.host.config import PolicyConfig
from vmreclaim.host.records import VmObservation
from vmreclaim.units import format_size

PAGE_REPORTING_DELAY_S = 2.0
"""The guest kernel reports freed pages to the host this long after they were freed."""
MIN_ASK_BYTES = 16 << 20
"""Smaller amounts are not worth a request (the adaptive agent's least reclaim step)."""
MAX_REPORT_AGE_S = 30.0
"""A report older than this is too old to ask on, whatever interval the agent claims."""

RELEASED = "released"
REFUSED = "refused"
EXPIRED = "expired"
RESULTS = (RELEASED, REFUSED, EXPIRED)
"""How a request ends, as the daemon logs and counts it."""


@dataclass(frozen=True)
class Asking:
    """A request out to one VM's agent."""

    id: int
    release_bytes: int
    asked_at: float
    deadline_at: float
    footprint_bytes: int | None
    """The VM's footprint on the host when asked: what it drops by shows the release."""
    answer: ReleaseAnswer | None = None


@dataclass(frozen=True)
class Ask:
    """A request for the daemon to send."""

    address: str
    name: str
    request: ReleaseRequest
    reason: str


@dataclass(frozen=True)
class Outcome:
    """How a request ended, for the daemon's log line and counters."""

    address: str
    name: str
    id: int
    release_bytes: int
    result: str
    """One of RESULTS."""
    answer: ReleaseAnswer | None
    seen_bytes: int | None
    """How much the VM's footprint on the host dropped while the request was out; None when
    the host cannot tell (no footprint)."""
    waited_s: float


def agent_offer(vm: VmObservation) -> int | None:
    """What the VM's agent says it could release now, when it may be asked: connected, a
    recent report, enough above its floor. None otherwise."""
    agent = vm.agent
    report = agent.report if agent else None
    if agent is None or report is None or not agent.connected or agent.report_age_s is None:
        return None
    if agent.report_age_s > min(MAX_REPORT_AGE_S, 2 * report.interval_s + 1):
        return None
    offer = report.reclaimable_bytes
    return offer if offer is not None and offer >= MIN_ASK_BYTES else None


def ask(
    vm: VmObservation, config: PolicyConfig, now: float, wanted: int, request_id: int
) -> tuple[Ask, Asking] | None:
    """A request for `wanted` (at most what the agent offers), or None when this VM's agent is
    not to be asked now. The caller holds back the balloon step while it is out."""
    offer = agent_offer(vm)
    if not config.ask_agents or offer is None or wanted < MIN_ASK_BYTES:
        return None
    amount = min(wanted, offer)
    amount -= amount % 4096
    # The guest has what is left after the host's wait for free page reporting to act.
    guest_deadline = max(1.0, config.ask_deadline_s - PAGE_REPORTING_DELAY_S)
    request = ReleaseRequest(request_id, amount, guest_deadline)
    asking = Asking(request_id, amount, now, now + config.ask_deadline_s, vm.sample.host_bytes)
    reason = f"host short of memory; the agent offers {format_size(offer)}"
    return Ask(vm.sample.address, vm.sample.name, request, reason), asking


def conclude(vm: VmObservation, asking: Asking, now: float) -> tuple[Asking | None, Outcome | None]:
    """(the request still out or None, how it ended when it did this cycle)."""
    agent = vm.agent
    answer = agent.answer if agent is not None else None
    if asking.answer is None and answer is not None and answer.id == asking.id:
        asking = dataclasses.replace(asking, answer=answer)
        if answer.refused or answer.released_bytes == 0:
            return None, _outcome(vm, asking, REFUSED, now)
    if now < asking.deadline_at or _arriving(vm, asking, now):
        return asking, None
    return None, _outcome(vm, asking, EXPIRED if asking.answer is None else RELEASED, now)


def _arriving(vm: VmObservation, asking: Asking, now: float) -> bool:
    """Past the deadline, whether the release is still reaching the host: answered, a quarter
    of it or more seen in the footprint but not yet nine tenths, and within a second deadline.
    Free page reporting paces itself (page_reporting_cycle() in mm/page_reporting.c reports
    about a sixteenth of each order's free list, at least 32 blocks, every 2 s), so a release of
    a few hundred MiB reaches the host over several rounds: seen on three 1 GiB guests, 167 MiB
    released, 92 MiB seen 5 s after the request. Squeezing for the rest then would take it
    twice. A guest whose footprint shows nothing of its claim is not waited for."""
    answer = asking.answer
    footprint = vm.sample.host_bytes
    if answer is None or footprint is None or asking.footprint_bytes is None:
        return False
    if now >= asking.deadline_at + (asking.deadline_at - asking.asked_at):
        return False
    claimed = min(answer.released_bytes, asking.release_bytes)
    seen = asking.footprint_bytes - footprint
    return claimed // 4 <= seen < claimed * 9 // 10


def _outcome(vm: VmObservation, asking: Asking, result: str, now: float) -> Outcome:
    footprint = vm.sample.host_bytes
    seen = (
        None
        if footprint is None or asking.footprint_bytes is None
        else max(0, asking.footprint_bytes - footprint)
    )
    return Outcome(
        vm.sample.address,
        vm.sample.name,
        asking.id,
        asking.release_bytes,
        result,
        asking.answer,
        seen,
        now - asking.asked_at,
    )


def next_ask_at(outcome: Outcome, config: PolicyConfig, now: float) -> float:
    """When this VM's agent may be asked again: soon after a release the host saw, later after
    a refusal, silence, or a release claimed and not seen."""
    answer = outcome.answer
    if outcome.result == RELEASED and answer is not None:
        claimed = min(answer.released_bytes, outcome.release_bytes)
        # Without a footprint the host cannot check the claim: it trusts it no more than silence.
        if outcome.seen_bytes is not None and outcome.seen_bytes >= claimed // 4:
            return now + config.ask_interval_s
    return now + config.ask_backoff_s
