"""Reclaim policies: pure `decide(observation, config, state) -> (Decision, new_state)` functions.

`adaptive` is ours and the default; `gradual` and `dropcache` re-implement WSL2's
autoMemoryReclaim modes as the baselines to beat; `off` never acts. `get_policy` looks one up by
name for the CLI and the config file.
"""

from __future__ import annotations

from typing import Any

from vmreclaim.errors import UsageError
from vmreclaim.guest.policies.adaptive import ADAPTIVE, AdaptiveConfig, AdaptiveState
from vmreclaim.guest.policies.base import Decision, Policy
from vmreclaim.guest.policies.dropcache import DROPCACHE, DropcacheConfig, DropcacheState
from vmreclaim.guest.policies.gradual import GRADUAL, GradualConfig, GradualState
from vmreclaim.guest.policies.off import OFF, OffConfig, OffState

DEFAULT_POLICY = "adaptive"

POLICIES: dict[str, Policy[Any, Any]] = {
    "adaptive": ADAPTIVE,
    "gradual": GRADUAL,
    "dropcache": DROPCACHE,
    "off": OFF,
}


def get_policy(name: str) -> Policy[Any, Any]:
    """The policy called `name`; UsageError naming the valid ones otherwise."""
    try:
        return POLICIES[name]
    except KeyError:
        raise UsageError(
            f"unknown policy {name!r}", hint=f"use one of: {', '.join(POLICIES)}"
        ) from None


__all__ = [
    "DEFAULT_POLICY",
    "POLICIES",
    "AdaptiveConfig",
    "AdaptiveState",
    "Decision",
    "DropcacheConfig",
    "DropcacheState",
    "GradualConfig",
    "GradualState",
    "OffConfig",
    "OffState",
    "Policy",
    "get_policy",
]
