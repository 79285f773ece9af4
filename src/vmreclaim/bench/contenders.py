"""What the benchmark compares: how the VM is set up and which agent runs in it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Contender:
    name: str
    label: str
    free_page_reporting: bool
    agent_policy: str | None
    """`vmreclaim guest run --policy ...` in the guest, or no agent."""


CONTENDERS = {
    c.name: c
    for c in (
        Contender("no-reporting", "no free page reporting (QEMU's default)", False, None),
        Contender("reporting", "free page reporting only", True, None),
        Contender("wsl2-dropcache", "WSL2 autoMemoryReclaim=dropcache", True, "dropcache"),
        Contender("wsl2-gradual", "WSL2 autoMemoryReclaim=gradual", True, "gradual"),
        Contender("adaptive", "vmreclaim adaptive", True, "adaptive"),
        # Not in the default set: the agent observing and never acting, so that what its ticks
        # alone cost a workload can be told from what its actions cost.
        Contender("agent-off", "vmreclaim agent that never acts (policy off)", True, "off"),
    )
}
