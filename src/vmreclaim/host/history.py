"""Pure bookkeeping over a VM's samples: what it has returned since first seen, and its trend."""

from __future__ import annotations

from dataclasses import dataclass

from vmreclaim.host.records import VmObservation, VmSample

TREND_LENGTH = 20
"""Samples kept for the trend: 20 s at top's one-second refresh."""


@dataclass(frozen=True)
class VmHistory:
    pid: int | None
    first_seen: float
    last_host_bytes: int | None
    returned_bytes: int
    trend: tuple[int, ...]


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
    updated = VmHistory(
        sample.pid,
        history.first_seen,
        host if host is not None else history.last_host_bytes,
        returned,
        trend,
    )
    return updated, VmObservation(sample, history.first_seen, returned, trend, None)
