"""Repeated runs in one table: per contender, the median of each measure and its range.

TCG and a 2-core host are noisy, so a figure is a median over repeats, and its range says what
lies inside the noise: two contenders whose ranges overlap are not told apart by the run.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vmreclaim.bench.measures import Measures
from vmreclaim.bench.runner import RunResult
from vmreclaim.units import format_size


@dataclass(frozen=True)
class Metric:
    header: str
    value: Callable[[Measures], float | None]
    """None where the run does not measure it; float("inf") for "never"."""
    show: Callable[[float], str]


def _percent(value: float) -> str:
    return f"{value:.0f} %"


def _size(value: float) -> str:
    return format_size(int(value))


def _seconds(value: float) -> str:
    return "never" if value == float("inf") else f"{value:.0f} s"


def _hot_pass(m: Measures) -> float | None:
    return None if m.hot is None else m.hot.median_pass_seconds


def _hot_refaults(m: Measures) -> float | None:
    return None if m.hot is None else float(m.hot.refaults)


def _returned_90(m: Measures) -> float:
    return float("inf") if m.returned_90_s is None else m.returned_90_s


def _cold(m: Measures) -> float | None:
    return None if m.cold_returned_ratio is None else 100 * m.cold_returned_ratio


def _swap(m: Measures) -> float | None:
    return None if m.swap is None else float(m.swap.growth_bytes)


def _heap(m: Measures) -> float | None:
    return None if m.heap is None else 100 * m.heap.returned_30_s_ratio


def _tps(m: Measures) -> float | None:
    if m.database is None:
        return None
    return (m.database.cold_write or m.database.whole).tps


def _p99_ms(m: Measures) -> float | None:
    if m.database is None:
        return None
    p99 = (m.database.cold_write or m.database.whole).latency_p99_s
    return None if p99 is None else 1000 * p99


def _db_refaults(m: Measures) -> float | None:
    if m.database is None or m.database.file_refaults is None:
        return None
    return float(m.database.file_refaults)


METRICS = (
    Metric("excess GiB*s", lambda m: m.excess_gib_s, lambda v: f"{v:.1f}"),
    Metric("final", lambda m: float(m.final_bytes), _size),
    Metric("90 % back", _returned_90, _seconds),
    Metric("cold back", _cold, _percent),
    Metric("hot pass", _hot_pass, lambda v: f"{v:.3f} s"),
    Metric("hot refaults", _hot_refaults, lambda v: f"{v:.0f}"),
    Metric("swap growth", _swap, _size),
    Metric("heap back in 30 s", _heap, _percent),
    Metric("pgbench TPS, cold-write", _tps, lambda v: f"{v:.0f}"),
    Metric("latency p99, cold-write", _p99_ms, lambda v: f"{v:.2f} ms"),
    Metric("file refaults", _db_refaults, lambda v: f"{v:.0f}"),
)


def _cell(values: list[float], show: Callable[[float], str]) -> str:
    if not values:
        return ""
    middle = statistics.median(values)
    if len(values) == 1:
        return show(middle)
    return f"{show(middle)} ({show(min(values))} - {show(max(values))})"


def repeats_summary(runs: Sequence[RunResult]) -> list[str]:
    """Markdown lines: per contender, median (min - max) over its runs of each measure that
    any of them has."""
    metrics = [m for m in METRICS if any(m.value(r.measures) is not None for r in runs)]
    contenders = list(dict.fromkeys(r.contender for r in runs))
    lines = [
        "Over the repeats, median (min - max):",
        "",
        "| contender | runs | " + " | ".join(m.header for m in metrics) + " |",
        "| --- | ---: |" + " ---: |" * len(metrics),
    ]
    for name in contenders:
        mine = [r.measures for r in runs if r.contender == name]
        cells = []
        for metric in metrics:
            values = [v for v in (metric.value(m) for m in mine) if v is not None]
            cells.append(_cell(values, metric.show))
        lines.append(f"| {name} | {len(mine)} | " + " | ".join(cells) + " |")
    return lines
