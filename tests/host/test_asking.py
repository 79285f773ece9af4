"""Ask before squeezing: the balloon law with guest agents, pure. Each test names one rule."""

from __future__ import annotations

import dataclasses

from vmreclaim.agent_protocol import AgentReport, ReleaseAnswer
from vmreclaim.host.asking import EXPIRED, REFUSED, RELEASED
from vmreclaim.host.policy import Decision, Observation, PolicyState, decide, withdraw
from vmreclaim.host.records import AgentStatus, VmObservation
from vmreclaim.qemu.footprint import Footprint

from .test_policy import CONFIG, GIB, MIB, host, targets, vm

ADDRESS = "/run/a.qmp"


def report(reclaimable: int | None = 600 * MIB, interval: float = 2.0) -> AgentReport:
    return AgentReport(
        seq=1,
        version="0.1",
        policy="adaptive",
        interval_s=interval,
        reclaimable_bytes=reclaimable,
        cache_bytes=700 * MIB,
        floor_bytes=100 * MIB,
        refaulted_bytes=0,
        last_action="none",
        last_action_age_s=None,
    )


def with_agent(
    observed: VmObservation,
    *,
    offer: int | None = 600 * MIB,
    answer: ReleaseAnswer | None = None,
    connected: bool = True,
    age: float = 1.0,
    footprint: int | None = 4 * GIB,
) -> VmObservation:
    agent = AgentStatus(
        f"/run/{observed.sample.name}.agent",
        connected,
        report(offer),
        age,
        1,
        (),
        answer=answer,
    )
    sample = observed.sample
    if footprint is not None:
        sample = dataclasses.replace(sample, footprint=Footprint(0.0, footprint, footprint))
    return dataclasses.replace(observed, sample=sample, agent=agent)


def cycle(
    state: PolicyState | None,
    now: float,
    *vms: VmObservation,
    available: int = 1 * GIB,
    config=CONFIG,
) -> Decision:
    return decide(Observation(host(available), vms, now), config, state or PolicyState())


def test_a_short_host_asks_an_agent_with_cold_cache_before_moving_its_balloon() -> None:
    decision = cycle(None, 100.0, with_agent(vm()))
    assert targets(decision) == {}
    (asked,) = decision.asks
    assert asked.address == ADDRESS
    # The VM's share of the 3 GiB shortfall, at most what the agent offers.
    assert asked.request.release_bytes == 600 * MIB
    assert 0 < asked.request.deadline_s < CONFIG.ask_deadline_s


def test_the_request_is_for_the_vms_share_when_the_agent_offers_more() -> None:
    decision = cycle(None, 100.0, with_agent(vm()), available=4 * GIB - 200 * MIB)
    assert decision.asks[0].request.release_bytes == 200 * MIB


def test_a_vm_without_an_agent_is_squeezed_as_before() -> None:
    decision = cycle(None, 100.0, vm())
    assert decision.asks == ()
    assert targets(decision) == {"a": 4 * GIB - 100 * MIB}


def test_an_agent_with_little_to_offer_is_not_asked() -> None:
    decision = cycle(None, 100.0, with_agent(vm(), offer=4 * MIB))
    assert decision.asks == ()
    assert targets(decision) == {"a": 4 * GIB - 100 * MIB}


def test_a_disconnected_or_silent_agent_is_not_asked() -> None:
    for agent_vm in (with_agent(vm(), connected=False), with_agent(vm(), age=60.0)):
        decision = cycle(None, 100.0, agent_vm)
        assert decision.asks == ()
        assert targets(decision) == {"a": 4 * GIB - 100 * MIB}


def test_asking_can_be_turned_off() -> None:
    config = dataclasses.replace(CONFIG, ask_agents=False)
    decision = cycle(None, 100.0, with_agent(vm()), config=config)
    assert decision.asks == ()
    assert targets(decision) == {"a": 4 * GIB - 100 * MIB}


def test_a_host_with_enough_memory_asks_nothing() -> None:
    decision = cycle(None, 100.0, with_agent(vm()), available=5 * GIB)
    assert decision.asks == ()


def test_the_balloon_holds_while_the_request_is_out_and_only_one_is_out() -> None:
    first = cycle(None, 100.0, with_agent(vm()))
    later = cycle(first.state, 102.0, with_agent(vm(updated=1002.0)))
    assert targets(later) == {}
    assert later.asks == ()


def test_a_refusal_ends_the_hold_at_once_and_the_balloon_squeezes() -> None:
    first = cycle(None, 100.0, with_agent(vm()))
    request_id = first.asks[0].request.id
    refusal = ReleaseAnswer(request_id, 0, "memory_pressure")
    refused = cycle(first.state, 101.0, with_agent(vm(updated=1001.0), answer=refusal))
    assert [outcome.result for outcome in refused.outcomes] == [REFUSED]
    assert refused.outcomes[0].answer == refusal
    assert targets(refused) == {"a": 4 * GIB - 100 * MIB}


def test_an_agent_that_refused_is_not_asked_again_until_its_back_off() -> None:
    first = cycle(None, 100.0, with_agent(vm()))
    refusal = ReleaseAnswer(first.asks[0].request.id, 0, "within_floor")
    refused = cycle(first.state, 101.0, with_agent(vm(updated=1001.0), answer=refusal))
    state = refused.state
    for now in (110.0, 150.0):
        settled = vm(actual=state.vms[ADDRESS].target_bytes, updated=now + 1000)
        decision = cycle(state, now, with_agent(settled, answer=refusal))
        assert decision.asks == ()
        state = decision.state
    settled = vm(actual=state.vms[ADDRESS].target_bytes, updated=2000.0)
    assert cycle(state, 101.0 + CONFIG.ask_backoff_s, with_agent(settled)).asks != ()


def test_silence_costs_the_vm_its_deadline_then_the_balloon_squeezes() -> None:
    first = cycle(None, 100.0, with_agent(vm()))
    waiting = cycle(first.state, 104.0, with_agent(vm(updated=1004.0)))
    assert targets(waiting) == {}
    expired = cycle(waiting.state, 105.0, with_agent(vm(updated=1005.0)))
    assert [outcome.result for outcome in expired.outcomes] == [EXPIRED]
    assert targets(expired) == {"a": 4 * GIB - 100 * MIB}
    assert expired.asks == ()


def test_an_answer_to_another_request_is_ignored() -> None:
    first = cycle(None, 100.0, with_agent(vm()))
    stale = ReleaseAnswer(first.asks[0].request.id + 7, 0, "within_floor")
    later = cycle(first.state, 101.0, with_agent(vm(updated=1001.0), answer=stale))
    assert later.outcomes == ()
    assert targets(later) == {}


def test_a_release_holds_the_balloon_until_the_deadline_so_the_host_can_see_it() -> None:
    first = cycle(None, 100.0, with_agent(vm()))
    released = ReleaseAnswer(first.asks[0].request.id, 600 * MIB, "")
    answered = cycle(first.state, 101.0, with_agent(vm(updated=1001.0), answer=released))
    assert answered.outcomes == ()
    assert targets(answered) == {}
    # The guest released it, the footprint shows it, and the host has enough now.
    after = with_agent(vm(updated=1005.0), answer=released, footprint=4 * GIB - 600 * MIB)
    done = cycle(answered.state, 105.0, after, available=4 * GIB + 100 * MIB)
    (outcome,) = done.outcomes
    assert (outcome.result, outcome.seen_bytes) == (RELEASED, 600 * MIB)
    assert targets(done) == {}


def test_after_a_release_the_balloon_covers_only_what_is_still_short() -> None:
    first = cycle(None, 100.0, with_agent(vm()), available=4 * GIB - 300 * MIB)
    released = ReleaseAnswer(first.asks[0].request.id, 250 * MIB, "")
    after = with_agent(vm(updated=1005.0), answer=released, footprint=4 * GIB - 250 * MIB)
    done = cycle(first.state, 105.0, after, available=4 * GIB - 50 * MIB)
    assert targets(done) == {"a": 4 * GIB - 50 * MIB}


def test_a_claimed_release_the_host_did_not_see_backs_the_agent_off() -> None:
    first = cycle(None, 100.0, with_agent(vm()))
    lie = ReleaseAnswer(first.asks[0].request.id, 600 * MIB, "")
    done = cycle(first.state, 105.0, with_agent(vm(updated=1005.0), answer=lie))
    assert done.outcomes[0].seen_bytes == 0
    # The claim changed nothing the host measures: the balloon squeezes as without an agent.
    assert targets(done) == {"a": 4 * GIB - 100 * MIB}
    assert done.state.vms[ADDRESS].next_ask_at == 105.0 + CONFIG.ask_backoff_s


def test_a_seen_release_lets_the_agent_be_asked_again_soon() -> None:
    first = cycle(None, 100.0, with_agent(vm()))
    released = ReleaseAnswer(first.asks[0].request.id, 600 * MIB, "")
    after = with_agent(vm(updated=1005.0), answer=released, footprint=4 * GIB - 560 * MIB)
    done = cycle(first.state, 105.0, after)
    assert done.state.vms[ADDRESS].next_ask_at == 105.0 + CONFIG.ask_interval_s


def test_one_silent_agent_does_not_hold_another_vms_balloon() -> None:
    quiet = with_agent(vm("a"))
    other = vm("b")
    decision = cycle(None, 100.0, quiet, other)
    assert [asked.name for asked in decision.asks] == ["a"]
    assert set(targets(decision)) == {"b"}


def test_request_ids_count_up_across_vms() -> None:
    decision = cycle(None, 100.0, with_agent(vm("a")), with_agent(vm("b")))
    assert [asked.request.id for asked in decision.asks] == [1, 2]
    assert decision.state.last_request_id == 2


def test_an_emergency_deflates_even_while_a_request_is_out() -> None:
    first = cycle(None, 100.0, with_agent(vm(actual=3 * GIB)))
    squeezed = vm(actual=3 * GIB, available=64 * MIB, updated=1001.0)
    decision = cycle(first.state, 101.0, with_agent(squeezed))
    assert targets(decision) == {"a": 4 * GIB}


def test_offers_that_cover_the_shortfall_spare_the_vm_whose_cache_is_hot() -> None:
    # 400 MiB short; b holds 600 MiB of cold cache, c 200 MiB, a none (its cache is hot): b and
    # c are asked in proportion to their offers, and no balloon moves, a's least of all.
    hot = with_agent(vm("a"), offer=0)
    cold, colder = with_agent(vm("b"), offer=200 * MIB), with_agent(vm("c"), offer=600 * MIB)
    decision = cycle(None, 100.0, hot, cold, colder, available=4 * GIB - 400 * MIB)
    assert {asked.name: asked.request.release_bytes for asked in decision.asks} == {
        "b": 100 * MIB,
        "c": 300 * MIB,
    }
    assert targets(decision) == {}


def test_the_balloons_squeeze_only_for_what_the_offers_do_not_cover() -> None:
    hot = with_agent(vm("a"), offer=0)
    cold, colder = with_agent(vm("b"), offer=200 * MIB), with_agent(vm("c"), offer=600 * MIB)
    decision = cycle(None, 100.0, hot, cold, colder, available=4 * GIB - 850 * MIB)
    assert sorted(asked.request.release_bytes for asked in decision.asks) == [200 * MIB, 600 * MIB]
    # The 50 MiB the offers leave short falls on the one balloon not held by a request.
    assert targets(decision) == {"a": 4 * GIB - 50 * MIB}


def test_requests_out_count_against_the_shortfall_until_they_end() -> None:
    first = cycle(None, 100.0, with_agent(vm("b")), available=4 * GIB - 300 * MIB)
    assert [asked.request.release_bytes for asked in first.asks] == [300 * MIB]
    # A second agent appears while b's request is out: the shortfall is covered, so it is not
    # asked and nothing squeezes.
    later = cycle(
        first.state,
        101.0,
        with_agent(vm("b", updated=1001.0)),
        with_agent(vm("c", updated=1001.0)),
        available=4 * GIB - 300 * MIB,
    )
    assert later.asks == ()
    assert targets(later) == {}


def test_under_pressure_alone_each_agent_is_asked_for_a_balloon_step() -> None:
    decision = cycle(
        None, 100.0, with_agent(vm("a")), with_agent(vm("b"), offer=40 * MIB), available=5 * GIB
    )
    assert decision.asks == ()  # no shortfall, no pressure: nothing
    pressed = decide(
        Observation(
            host(5 * GIB, psi=50.0),
            (with_agent(vm("a")), with_agent(vm("b"), offer=40 * MIB)),
            100.0,
        ),
        CONFIG,
        PolicyState(),
    )
    assert [asked.request.release_bytes for asked in pressed.asks] == [100 * MIB, 40 * MIB]


def test_a_request_that_could_not_be_sent_holds_nothing() -> None:
    first = cycle(None, 100.0, with_agent(vm()))
    state = withdraw(first.state, ADDRESS, 100.0, CONFIG)
    assert state.vms[ADDRESS].asking is None
    later = cycle(state, 101.0, with_agent(vm(updated=1001.0)))
    assert later.asks == ()  # backed off, as after silence
    assert targets(later) == {"a": 4 * GIB - 100 * MIB}
    assert withdraw(later.state, ADDRESS, 101.0, CONFIG) == later.state


def test_a_release_still_arriving_holds_the_balloon_for_one_more_deadline() -> None:
    # Free page reporting hands a large release back over several 2 s rounds: at the deadline
    # half of it is seen, so the balloon waits rather than take the rest a second time.
    first = cycle(None, 100.0, with_agent(vm()))
    released = ReleaseAnswer(first.asks[0].request.id, 600 * MIB, "")
    half = with_agent(vm(updated=1005.0), answer=released, footprint=4 * GIB - 300 * MIB)
    waiting = cycle(first.state, 105.0, half)
    assert (waiting.outcomes, targets(waiting)) == ((), {})
    # Nine tenths seen: done, before the second deadline.
    most = with_agent(vm(updated=1007.0), answer=released, footprint=4 * GIB - 550 * MIB)
    (outcome,) = cycle(waiting.state, 107.0, most).outcomes
    assert (outcome.result, outcome.seen_bytes) == (RELEASED, 550 * MIB)
    # Still half at the second deadline: the wait ends there.
    stuck = with_agent(vm(updated=1010.0), answer=released, footprint=4 * GIB - 300 * MIB)
    assert cycle(waiting.state, 109.0, stuck).outcomes == ()
    (ended,) = cycle(waiting.state, 110.0, stuck).outcomes
    assert ended.seen_bytes == 300 * MIB
