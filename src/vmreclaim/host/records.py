"""Immutable records of the host side. All memory amounts are bytes (ints); None means unknown,
never zero."""

from __future__ import annotations

from dataclasses import dataclass

from vmreclaim.agent_protocol import AgentReport, ReleaseAnswer
from vmreclaim.qemu.footprint import Footprint


@dataclass(frozen=True)
class GuestStats:
    """What the guest's balloon driver reports (virtio-balloon stats queue). QEMU keeps -1 (as
    2**64 - 1) for a statistic the guest never sent; those become None here."""

    updated_at: float | None
    """The guest's last report, host wall-clock seconds; 0 when it never reported; None when
    the hypervisor does not say when (Firecracker): the fleet then dates the figures by when
    it last saw them change (history.track)."""
    total_bytes: int | None
    free_bytes: int | None
    available_bytes: int | None
    cache_bytes: int | None
    major_faults: int | None
    minor_faults: int | None

    @property
    def used_bytes(self) -> int | None:
        """Memory the guest uses for something other than page cache: total - free - cache."""
        if self.total_bytes is None or self.free_bytes is None or self.cache_bytes is None:
            return None
        return max(0, self.total_bytes - self.free_bytes - self.cache_bytes)


@dataclass(frozen=True)
class BalloonState:
    ram_bytes: int
    """The VM's configured RAM (QEMU's base memory)."""
    actual_bytes: int
    """The guest's size as the balloon sees it: RAM minus inflated pages."""
    free_page_reporting: bool | None
    """Whether the device is configured to accept free page reports; None when unknown."""


@dataclass(frozen=True)
class VmSample:
    """One poll of one VM through its backend."""

    name: str
    address: str
    """How the backend reaches the VM: a QMP socket path for QEMU."""
    pid: int | None
    footprint: Footprint | None
    balloon: BalloonState | None
    guest: GuestStats | None

    @property
    def host_bytes(self) -> int | None:
        """What the VM's guest RAM holds on the host (the whole RSS if the mapping is unknown)."""
        if self.footprint is None:
            return None
        guest_ram = self.footprint.guest_ram_bytes
        return guest_ram if guest_ram is not None else self.footprint.rss_bytes


@dataclass(frozen=True)
class AgentStatus:
    """The guest agent's channel of one VM (host/agents.py): its latest valid report and what
    was dropped. What the report says is the guest's word, unverified."""

    path: str
    """The host end of the channel: the unix socket of the VM's virtio-serial port."""
    connected: bool
    report: AgentReport | None
    """The latest valid report; None until one arrives."""
    report_age_s: float | None
    """Seconds since that report arrived."""
    reports: int
    """Valid reports received since the daemon first connected."""
    dropped: tuple[tuple[str, int], ...]
    """Messages dropped, by reason (agent_protocol.DROP_REASONS), every reason listed."""
    answer: ReleaseAnswer | None = None
    """The latest valid answer to a request (asking.py), the guest's word."""
    requests: tuple[tuple[str, int], ...] = ()
    """Requests to release cache that ended, by result (asking.RESULTS), every result listed."""
    last_request: Exchange | None = None
    """The latest request and how it went."""


@dataclass(frozen=True)
class Exchange:
    """One request to a guest agent to release cold cache, and how it went."""

    id: int
    release_bytes: int
    deadline_s: float
    """The deadline the guest was given."""
    result: str
    """"pending" while out, then one of asking.RESULTS."""
    released_bytes: int | None
    """What the guest said it released; None without an answer."""
    refused: str
    """Why the guest refused, its word; "" if it did not."""
    seen_bytes: int | None
    """How much the VM's footprint on the host dropped meanwhile; None when unknown or
    pending."""


@dataclass(frozen=True)
class VmObservation:
    """A sample with what only history can tell."""

    sample: VmSample
    first_seen: float
    returned_bytes: int
    """Sum of every drop of the host footprint since the VM was first seen: memory handed back
    (guest RAM only grows on the host unless something discards it)."""
    trend: tuple[int, ...]
    """The last host footprints, oldest first."""
    balloon_target_bytes: int | None
    """The last target this process set; QEMU has no query for the target, only for `actual`."""
    stats_age_s: float | None = None
    """Seconds from the guest's last statistics report to this poll; None when there are no
    statistics or the guest never reported."""
    stats_at: float | None = None
    """When the guest made the report its statistics come from (host clock); None when it never
    reported. A report newer than a balloon change is the first to show what the change did."""
    agent: AgentStatus | None = None
    """The guest agent's channel, when one is configured for this VM."""

    def stats_fresh(self, max_age_s: float) -> bool:
        """Whether the guest's statistics are recent enough to act on."""
        return self.stats_age_s is not None and self.stats_age_s <= max_age_s

    def stats_stale(self, max_age_s: float) -> bool:
        """The VM has a balloon whose guest statistics are missing or too old to act on."""
        return self.sample.balloon is not None and not self.stats_fresh(max_age_s)

    @property
    def host_unused_bytes(self) -> int | None:
        """Memory the host holds for the VM that the guest does not use (cache counts as unused:
        it is what a reclaim would give back)."""
        host = self.sample.host_bytes
        used = self.sample.guest.used_bytes if self.sample.guest else None
        if host is None or used is None:
            return None
        return max(0, host - used)


@dataclass(frozen=True)
class HostMemory:
    """The host's memory situation (/proc/meminfo, /proc/pressure/memory)."""

    total_bytes: int
    available_bytes: int
    psi_some_avg10: float | None
    """Percent of the last 10 s in which some task stalled on memory; None without PSI."""
    psi_full_avg10: float | None
