"""Pure bookkeeping over a VM's samples: what it has returned since first seen, its trend, and
how old its guest statistics are."""

from __future__ import annotations

from dataclasses import dataclass

from vmreclaim.host.records import GuestStats, VmObservation, VmSample

TREND_LENGTH = 20
"""Samples kept for the trend: 20 s at top's one-second refresh."""


@dataclass(frozen=True)
class VmHistory:
    pid: int | None
    first_seen: float
    last_host_bytes: int | None
    returned_bytes: int
    trend: tuple[int, ...]
    stats_figures: tuple[int | None, ...] | None = None
    """The guest's last figures, for hypervisors that do not date them."""
    stats_changed_at: float | None = None
    """When those figures were first seen as they are."""


def track(
    history: VmHistory | None, sample: VmSample, now: float
) -> tuple[VmHistory, VmObservation]:
    """Fold one sample into the VM's history. A new QEMU process (a restart) starts afresh."""
    if history is None or history.pid != sample.pid:
        history = VmHistory(sample.pid, now, None, 0, ())
    host = sample.host_bytes
    returned = history.returned_bytes
    trend = history.trend
    if host is not None:
        if history.last_host_bytes is not None and host < history.last_host_bytes:
            returned += history.last_host_bytes - host
        trend = (*trend, host)[-TREND_LENGTH:]
    figures, changed_at = _undated_figures(history, sample.guest, now)
    updated = VmHistory(
        sample.pid,
        history.first_seen,
        host if host is not None else history.last_host_bytes,
        returned,
        trend,
        figures,
        changed_at,
    )
    age = _stats_age(sample.guest, changed_at, now)
    return updated, VmObservation(
        sample,
        history.first_seen,
        returned,
        trend,
        None,
        age,
        _report_time(sample.guest, changed_at),
    )


def _undated_figures(
    history: VmHistory, guest: GuestStats | None, now: float
) -> tuple[tuple[int | None, ...] | None, float | None]:
    """For statistics the hypervisor does not date: the figures, and when they last changed.
    A live Linux guest's free memory and fault counters move between reports; figures that
    stand still are as good as a guest that stopped reporting, and are treated so. Figures
    seen once have no age until they change."""
    if guest is None or guest.updated_at is not None:
        return None, None
    figures = (
        guest.total_bytes,
        guest.free_bytes,
        guest.available_bytes,
        guest.cache_bytes,
        guest.major_faults,
        guest.minor_faults,
    )
    if history.stats_figures is None:
        return figures, None  # first sight: how old they are is unknown until they change
    if figures == history.stats_figures:
        return figures, history.stats_changed_at
    return figures, now


def _report_time(guest: GuestStats | None, changed_at: float | None) -> float | None:
    """When the guest made the report these figures come from, by the hypervisor's stamp or,
    undated, when they last changed; None when it never reported."""
    if guest is None:
        return None
    updated_at = guest.updated_at if guest.updated_at is not None else changed_at
    return updated_at if updated_at is not None and updated_at > 0 else None


def _stats_age(guest: GuestStats | None, changed_at: float | None, now: float) -> float | None:
    if guest is None:
        return None
    updated_at = guest.updated_at if guest.updated_at is not None else changed_at
    if updated_at is None or updated_at <= 0:
        return None  # the guest never reported
    # A report stamped a little ahead of our clock (whole seconds, another clock) is new.
    return max(0.0, now - updated_at)
