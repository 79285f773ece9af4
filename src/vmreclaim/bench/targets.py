"""The benchmark's targets (issues 5, 10 and 11), each judged with the figures behind it.

A target is judged in each repeat on that repeat's runs; with several repeats the line says in
how many it was met and lists every repeat's figures, since one run is not a measurement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vmreclaim.bench.measures import Measures
from vmreclaim.bench.runner import RunResult
from vmreclaim.units import format_size

PAGE_BYTES = 4096  # the guest's page: workingset_refault_file counts pages

# busy-with-cold-cache-swap: swap growth allowed, as a share of the cold cache returned.
SWAP_GROWTH_RATIO = 0.01
# pgbench-*: what adaptive may cost the database against reporting only (issue 11), over the
# cold writer's window: throughput kept, and the rise of the 99th percentile latency.
DATABASE_TPS_KEPT = 0.98
DATABASE_P99_RISE = 0.05
# busy-with-cold-cache: the hot set's refaults allowed, as a share of the hot set (issue 11: in
# every repeated run, where one run had 19 % and another none before drop-behind).
HOT_REFAULTS_RATIO = 0.02


@dataclass(frozen=True)
class Verdict:
    target: str
    ok: bool | None
    """None: a figure shown beside a target (a baseline's), not judged."""
    figures: str


def _by(results: Sequence[RunResult], scenario: str) -> dict[str, RunResult]:
    return {r.contender: r for r in results if r.scenario == scenario}


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f} s"


# How soon after the guest goes idle adaptive must have returned 90 % of the reclaimable:
# issue 5 set 30 s for build-then-idle; issue 11 asks 15 s of a build, whose "20 s today" was
# build-then-idle's, and build-real joined it.
BUILD_THEN_IDLE_WITHIN_S = 15.0
BUILD_REAL_WITHIN_S = 15.0


def _idle_after(scenario: str, within_s: float, runs: dict[str, RunResult]) -> list[Verdict]:
    """A scenario that ends idle: adaptive's 90 % back, and its excess against WSL2 gradual's."""
    if "adaptive" not in runs:
        return []
    a = runs["adaptive"].measures
    t90 = a.returned_90_s
    verdicts = [
        Verdict(
            f"{scenario}: adaptive returns 90 % of the reclaimable within {within_s:.0f} s of idle",
            t90 is not None and t90 <= within_s,
            _seconds(t90),
        )
    ]
    if "wsl2-gradual" in runs:
        g = runs["wsl2-gradual"].measures
        ratio = a.excess_gib_s / g.excess_gib_s if g.excess_gib_s else float("inf")
        verdicts.append(
            Verdict(
                f"{scenario}: adaptive's excess is at most 1/4 of WSL2 gradual's",
                ratio <= 0.25,
                f"{a.excess_gib_s:.1f} vs {g.excess_gib_s:.1f} GiB*s, {ratio:.2f}",
            )
        )
    return verdicts


def _cold_back(scenario: str, a: Measures, when: str = "while busy") -> Verdict:
    cold = a.cold_returned_ratio or 0.0
    figures = f"{100 * cold:.0f} %"
    net, growth = a.cold_returned_net_ratio, a.cold_need_growth_bytes
    if net is not None and growth is not None and growth > 0:
        # Shown, not judged: the footprint's rise also carries what the workload took.
        figures += (
            f" ({100 * net:.0f} % net of the {format_size(growth)} the guest's own need grew by)"
        )
    return Verdict(
        f"{scenario}: adaptive returns 80 % of the cold cache {when}", cold >= 0.8, figures
    )


def _busy(runs: dict[str, RunResult]) -> list[Verdict]:
    if "adaptive" not in runs:
        return []
    a = runs["adaptive"].measures
    verdicts = [_cold_back("busy-with-cold-cache", a)]
    base = runs.get("reporting")
    if base and base.measures.hot and a.hot and base.measures.hot.median_pass_seconds:
        rise = a.hot.median_pass_seconds / base.measures.hot.median_pass_seconds - 1
        verdicts.append(
            Verdict(
                "busy-with-cold-cache: hot set re-read time rises by 5 % at most",
                rise <= 0.05,
                f"{100 * rise:+.1f} % median pass against reporting only, "
                f"{a.hot.refaults} refaults",
            )
        )
    if a.hot and a.hot.size_bytes:
        refaulted = a.hot.refaults * PAGE_BYTES
        verdicts.append(
            Verdict(
                "busy-with-cold-cache: hot set refaults at most 2 % of the hot set",
                refaulted <= HOT_REFAULTS_RATIO * a.hot.size_bytes,
                f"{a.hot.refaults} pages, {format_size(refaulted)} of "
                f"{format_size(a.hot.size_bytes)} ({100 * refaulted / a.hot.size_bytes:.1f} %)",
            )
        )
    for name in ("wsl2-dropcache", "wsl2-gradual"):
        if name in runs:
            ratio = runs[name].measures.cold_returned_ratio or 0.0
            verdicts.append(
                Verdict(
                    f"busy-with-cold-cache: {name} returns nothing while busy",
                    ratio < 0.1,
                    f"{100 * ratio:.0f} % of the cold cache",
                )
            )
    return verdicts


def _fragmented(runs: dict[str, RunResult]) -> list[Verdict]:
    if "adaptive" not in runs or "reporting" not in runs:
        return []
    a_back = runs["adaptive"].measures.fragmented_returned_bytes or 0
    r_back = runs["reporting"].measures.fragmented_returned_bytes or 0
    return [
        Verdict(
            "fragmented-free: adaptive returns at least twice what reporting alone returns",
            a_back >= 2 * max(r_back, 1),
            f"{format_size(a_back)} vs {format_size(r_back)}",
        )
    ]


def _busy_swap(runs: dict[str, RunResult]) -> list[Verdict]:
    if "adaptive" not in runs:
        return []
    a = runs["adaptive"].measures
    verdicts = [_cold_back("busy-with-cold-cache-swap", a)]
    if a.swap is not None and a.cold_returned_ratio is not None:
        returned = int(a.cold_returned_ratio * a.cold_bytes)
        growth = a.swap.growth_bytes
        verdicts.append(
            Verdict(
                "busy-with-cold-cache-swap: swap used grows by at most 1 % of what adaptive "
                "returned",
                growth <= SWAP_GROWTH_RATIO * returned,
                f"{format_size(growth)} for {format_size(returned)}, "
                f"{format_size(a.swap.swapped_out_bytes)} written to swap",
            )
        )
    return verdicts


def _thp_heap(runs: dict[str, RunResult]) -> list[Verdict]:
    verdicts = []
    for name, run in runs.items():
        heap = run.measures.heap
        if heap is None:
            continue
        share = heap.returned_30_s_ratio
        verdicts.append(
            Verdict(
                f"thp-heap-freed: {name} returns 80 % of what the program freed within 30 s"
                if name == "adaptive"
                else f"thp-heap-freed: {name}, beside it",
                share >= 0.8 if name == "adaptive" else None,
                f"{100 * share:.0f} % of {format_size(heap.freed_bytes)}",
            )
        )
    return verdicts


def _database(scenario: str, runs: dict[str, RunResult]) -> list[Verdict]:
    if "adaptive" not in runs:
        return []
    a = runs["adaptive"].measures
    verdicts = [_cold_back(scenario, a, "within the cold-write phase, under pgbench")]
    base = runs.get("reporting")
    if a.database is None or base is None or base.measures.database is None:
        return verdicts
    mine = a.database.cold_write or a.database.whole
    theirs = base.measures.database.cold_write or base.measures.database.whole
    kept = mine.tps / theirs.tps if theirs.tps else 0.0
    verdicts.append(
        Verdict(
            f"{scenario}: pgbench keeps {100 * DATABASE_TPS_KEPT:.0f} % of its TPS "
            "under adaptive against reporting only",
            kept >= DATABASE_TPS_KEPT,
            f"{mine.tps:.0f} vs {theirs.tps:.0f} TPS while the cold files are written, "
            f"{100 * kept:.1f} %",
        )
    )
    if mine.latency_p99_s is not None and theirs.latency_p99_s:
        rise = mine.latency_p99_s / theirs.latency_p99_s - 1
        verdicts.append(
            Verdict(
                f"{scenario}: pgbench's p99 latency rises by {100 * DATABASE_P99_RISE:.0f} % "
                "at most under adaptive against reporting only",
                rise <= DATABASE_P99_RISE,
                f"{1000 * mine.latency_p99_s:.2f} vs {1000 * theirs.latency_p99_s:.2f} ms, "
                f"{100 * rise:+.1f} %, {a.database.file_refaults} file refaults",
            )
        )
    return verdicts


def verdicts(results: Sequence[RunResult]) -> list[Verdict]:
    """Every target the runs of one repeat allow to judge."""
    return [
        *_idle_after("build-then-idle", BUILD_THEN_IDLE_WITHIN_S, _by(results, "build-then-idle")),
        *_idle_after("build-real", BUILD_REAL_WITHIN_S, _by(results, "build-real")),
        *_busy(_by(results, "busy-with-cold-cache")),
        *_fragmented(_by(results, "fragmented-free")),
        *_busy_swap(_by(results, "busy-with-cold-cache-swap")),
        *_thp_heap(_by(results, "thp-heap-freed")),
        *_database("pgbench-ro", _by(results, "pgbench-ro")),
        *_database("pgbench-rw", _by(results, "pgbench-rw")),
    ]


def _word(ok: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "measured"}[ok]


def targets(results: Sequence[RunResult]) -> list[str]:
    """One line per target: its verdict and figures, over every repeat (each repeat's figures
    separated by "; ")."""
    repeats = sorted({r.repeat for r in results})
    judged = [verdicts([r for r in results if r.repeat == repeat]) for repeat in repeats]
    if len(judged) <= 1:
        return [f"- {v.target}: {_word(v.ok)} ({v.figures})" for v in (judged or [[]])[0]]
    lines = []
    names = dict.fromkeys(v.target for verdicts_ in judged for v in verdicts_)
    for name in names:
        found = [v for verdicts_ in judged for v in verdicts_ if v.target == name]
        figures = "; ".join(v.figures for v in found)
        if found[0].ok is None:
            lines.append(f"- {name}: measured in {len(found)} runs ({figures})")
            continue
        met = sum(1 for v in found if v.ok)
        word = "met" if met == len(found) else "MISSED, met"
        lines.append(f"- {name}: {word} in {met} of {len(found)} runs ({figures})")
    return lines
