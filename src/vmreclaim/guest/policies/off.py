"""`off`: never acts. The agent still observes and logs, so its own cost can be measured."""

from __future__ import annotations

from dataclasses import dataclass

from vmreclaim.guest.observe import Observation
from vmreclaim.guest.policies.base import Decision, Policy, no_action


@dataclass(frozen=True)
class OffConfig:
    """No knobs."""


@dataclass(frozen=True)
class OffState:
    """Nothing to remember."""


def decide(obs: Observation, config: OffConfig, state: OffState) -> tuple[Decision, OffState]:
    return no_action("policy off"), state


OFF: Policy[OffConfig, OffState] = Policy(
    name="off",
    summary="never reclaims or compacts",
    decide=decide,
    config_type=OffConfig,
    initial_state=OffState,
)
