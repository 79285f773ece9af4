"""Which contenders `vmreclaim bench` runs: all the comparable ones by default, the agent's
cost alone (agent-off) only when named."""

from __future__ import annotations

import pytest

from vmreclaim.bench.cli import _CONTENDERS, _OTHER_CONTENDERS, _check
from vmreclaim.bench.contenders import CONTENDERS
from vmreclaim.errors import UsageError

KNOWN = _CONTENDERS + _OTHER_CONTENDERS


def test_by_default_every_contender_but_the_agent_that_never_acts() -> None:
    chosen = _check(None, KNOWN, "policy", default=_CONTENDERS)
    assert chosen == list(_CONTENDERS)
    assert "agent-off" not in chosen


def test_the_agent_that_never_acts_runs_when_named() -> None:
    assert _check(["reporting", "agent-off"], KNOWN, "policy", default=_CONTENDERS) == [
        "reporting",
        "agent-off",
    ]
    assert CONTENDERS["agent-off"].agent_policy == "off"
    assert CONTENDERS["agent-off"].free_page_reporting


def test_an_unknown_contender_is_refused_with_the_names_to_choose_from() -> None:
    with pytest.raises(UsageError) as raised:
        _check(["fast"], KNOWN, "policy", default=_CONTENDERS)
    assert "unknown policy fast" in str(raised.value)
    assert "agent-off" in str(raised.value.hint)


def test_every_name_the_command_offers_is_a_contender() -> None:
    assert set(KNOWN) == set(CONTENDERS)
