"""The benchmark's outputs: results.json, results.md (tables and targets) and one PNG per
scenario with the host footprint over time."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vmreclaim.bench.contenders import CONTENDERS
from vmreclaim.bench.measures import Measures
from vmreclaim.bench.recorder import Recording
from vmreclaim.bench.repeats import repeats_summary
from vmreclaim.bench.runner import RunResult
from vmreclaim.bench.targets import targets
from vmreclaim.units import format_size

MIB = float(1 << 20)


def to_json(results: Sequence[RunResult], meta: dict[str, Any]) -> dict[str, Any]:
    runs = []
    for result in results:
        recording = result.recording
        runs.append(
            {
                "scenario": result.scenario,
                "contender": result.contender,
                "repeat": result.repeat,
                "accel": result.accel,
                "boot_seconds": round(result.boot_seconds, 2),
                "source": result.source or None,
                "measures": dataclasses.asdict(result.measures),
                "phases": [{"name": n, "start_s": round(s, 2)} for n, s in recording.phases],
                "samples": [
                    [round(s.seconds, 2), s.guest_ram_bytes, s.rss_bytes] for s in recording.samples
                ],
                "needs": [[round(n.seconds, 2), n.needed_bytes] for n in recording.needs],
                "agent_log": _log_name(result) if result.agent_log else None,
            }
        )
    return {"meta": meta, "runs": runs}


def _log_name(result: RunResult) -> str:
    repeat = f".{result.repeat + 1}" if result.repeat else ""
    return f"agent-logs/{result.scenario}.{result.contender}{repeat}.log"


def _label(result: RunResult, repeated: bool) -> str:
    return f"{result.contender} #{result.repeat + 1}" if repeated else result.contender


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f} s"


def _by(results: Sequence[RunResult], scenario: str) -> dict[str, RunResult]:
    return {r.contender: r for r in results if r.scenario == scenario}


def markdown(results: Sequence[RunResult], meta: dict[str, Any]) -> str:
    out = [f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']}  ", ""]
    for scenario in dict.fromkeys(r.scenario for r in results):
        out += [
            f"### {scenario}",
            "",
            "| contender | excess GiB*s | peak | final | reclaimable | 50 % back | 90 % back "
            "| cold back | fragmented back | hot pass, median (refaults) | agent CPU |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        runs = [r for r in results if r.scenario == scenario]
        built = dict.fromkeys(r.source for r in runs if r.source)
        if built:
            out[-2:-2] = [f"Built: {', '.join(built)}", ""]
        repeated = any(r.repeat for r in runs)
        extra = _extra_columns(runs)
        out[-2] += "".join(f" {header} |" for header, _ in extra)
        out[-1] += " ---: |" * len(extra)
        for result in runs:
            m = result.measures
            cold = "" if m.cold_returned_ratio is None else f"{100 * m.cold_returned_ratio:.0f} %"
            frag = (
                ""
                if m.fragmented_returned_bytes is None
                else format_size(m.fragmented_returned_bytes)
            )
            hot = "" if m.hot is None else f"{m.hot.median_pass_seconds:.2f} s ({m.hot.refaults})"
            cpu = "" if m.agent_cpu_ratio is None else f"{100 * m.agent_cpu_ratio:.1f} %"
            out.append(
                f"| {_label(result, repeated)} | {m.excess_gib_s:.1f} "
                f"| {format_size(m.peak_bytes)} "
                f"| {format_size(m.final_bytes)} | {format_size(m.reclaimable_bytes)} "
                f"| {_seconds(m.returned_50_s)} "
                f"| {_seconds(m.returned_90_s)} | {cold} | {frag} | {hot} | {cpu} |"
                + "".join(f" {cell(m)} |" for _, cell in extra)
            )
        if repeated:
            out += ["", *repeats_summary(runs)]
        out += ["", *_excess_by_phase([r for r in runs if not r.repeat]), ""]
    verdicts = targets(results)
    if verdicts:
        out += ["### Targets", "", *verdicts, ""]
    return "\n".join(out)


Column = tuple[str, Callable[[Measures], str]]


def _swap_cell(m: Measures) -> str:
    if m.swap is None:
        return ""
    return f"{format_size(m.swap.growth_bytes)} ({format_size(m.swap.swapped_out_bytes)})"


def _heap_freed_cell(m: Measures) -> str:
    if m.heap is None:
        return ""
    return f"{format_size(m.heap.freed_bytes)} ({format_size(m.heap.held_bytes)})"


def _heap_back_cell(m: Measures) -> str:
    return "" if m.heap is None else f"{100 * m.heap.returned_30_s_ratio:.0f} %"


def _heap_end_cell(m: Measures) -> str:
    if m.heap is None or m.heap.thp_held_end_bytes is None:
        return ""
    return format_size(m.heap.thp_held_end_bytes)


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{1000 * seconds:.2f} ms"


def _tps_cell(m: Measures) -> str:
    if m.database is None:
        return ""
    cold = m.database.cold_write
    whole = f"{m.database.whole.tps:.0f}"
    return whole if cold is None else f"{cold.tps:.0f} ({whole})"


def _latency_avg_cell(m: Measures) -> str:
    if m.database is None:
        return ""
    figures = m.database.cold_write or m.database.whole
    return _ms(figures.latency_avg_s)


def _latency_p99_cell(m: Measures) -> str:
    if m.database is None:
        return ""
    cold = m.database.cold_write
    whole = _ms(m.database.whole.latency_p99_s)
    return whole if cold is None else f"{_ms(cold.latency_p99_s)} ({whole})"


def _writer_cell(m: Measures) -> str:
    if m.database is None:
        return ""
    took = m.database.cold_write_seconds
    return "unfinished" if took is None else f"{took:.0f} s"


def _refaults_cell(m: Measures) -> str:
    if m.database is None or m.database.file_refaults is None:
        return ""
    return str(m.database.file_refaults)


def _extra_columns(runs: list[RunResult]) -> list[Column]:
    """Columns only the scenarios that measure them get, so the others' tables stay as they
    were: swap use, a runtime's freed heap, a database's throughput and latency."""
    columns: list[Column] = []
    if any(r.measures.swap is not None for r in runs):
        columns.append(("swap growth (swapped out)", _swap_cell))
    if any(r.measures.heap is not None for r in runs):
        columns += [
            ("heap freed (held in huge pages)", _heap_freed_cell),
            ("heap back in 30 s", _heap_back_cell),
            ("held in huge pages at the end", _heap_end_cell),
        ]
    if any(r.measures.database is not None for r in runs):
        # Over the window from the cold writer's start, then over pgbench's whole run.
        columns += [
            ("pgbench TPS, cold-write (whole run)", _tps_cell),
            ("latency avg, cold-write", _latency_avg_cell),
            ("latency p99, cold-write (whole run)", _latency_p99_cell),
            ("file refaults", _refaults_cell),
            ("cold writer took (guest clock)", _writer_cell),
        ]
    return columns


def _excess_by_phase(runs: list[RunResult]) -> list[str]:
    """Where each contender's excess accrued: a policy can only differ once it may act."""
    phases = [name for name, _ in runs[0].measures.excess_by_phase]
    lines = [
        "Excess GiB*s by phase:",
        "",
        "| contender | " + " | ".join(phases) + " |",
        "| --- |" + " ---: |" * len(phases),
    ]
    for result in runs:
        values = dict(result.measures.excess_by_phase)
        cells = " | ".join(f"{values.get(phase, 0.0):.1f}" for phase in phases)
        lines.append(f"| {result.contender} | {cells} |")
    return lines


def plot(results: Sequence[RunResult], scenario: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = _by([r for r in results if not r.repeat], scenario)  # the first repeat
    figure, axes = plt.subplots(figsize=(10, 5.5), dpi=110)
    for name, result in runs.items():
        samples = result.recording.samples
        axes.plot(
            [s.seconds for s in samples],
            [s.guest_ram_bytes / MIB for s in samples],
            label=CONTENDERS[name].label if name in CONTENDERS else name,
            linewidth=1.6,
        )
    reference = runs.get("reporting") or next(iter(runs.values()))
    needs = reference.recording.needs
    if needs:
        axes.step(
            [n.seconds for n in needs],
            [n.needed_bytes / MIB for n in needs],
            where="post",
            color="black",
            linestyle="--",
            linewidth=1.0,
            label="what the guest needs (RAM - available)",
        )
    _finish(figure, axes, reference.recording, f"{scenario}: guest RAM resident on the host", path)


def _finish(figure: Any, axes: Any, recording: Recording, title: str, path: Path) -> None:
    """Phase marks, labels, legend; save and close."""
    import matplotlib.pyplot as plt

    span = max((s.seconds for s in recording.samples), default=1.0) or 1.0
    level, previous = 0, None
    for phase, start in recording.phases:
        # A phase that starts close to the previous one gets its label one line lower.
        close = previous is not None and start - previous < 0.08 * span
        level, previous = (level + 1 if close else 0), start
        axes.axvline(start, color="grey", linewidth=0.8, alpha=0.6)
        axes.annotate(
            phase,
            (start, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -12 - 11 * level),
            textcoords="offset points",
            fontsize=8,
            color="dimgrey",
        )
    axes.set_title(title)
    axes.set_xlabel("seconds")
    axes.set_ylabel("MiB")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, 0.86))
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_timeline(recording: Recording, title: str, path: Path) -> None:
    """One guest's footprint and need over time, its phases marked (the demo's picture)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 5.5), dpi=110)
    samples = recording.samples
    axes.plot(
        [s.seconds for s in samples],
        [s.guest_ram_bytes / MIB for s in samples],
        label="guest RAM resident on the host",
        linewidth=1.6,
    )
    if recording.needs:
        axes.step(
            [n.seconds for n in recording.needs],
            [n.needed_bytes / MIB for n in recording.needs],
            where="post",
            color="black",
            linestyle="--",
            linewidth=1.0,
            label="what the guest needs (RAM - available)",
        )
    _finish(figure, axes, recording, title, path)


def write(results: Sequence[RunResult], meta: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json", out / "results.md"]
    written[0].write_text(json.dumps(to_json(results, meta), indent=1) + "\n")
    written[1].write_text(markdown(results, meta))
    for scenario in dict.fromkeys(r.scenario for r in results):
        path = out / f"{scenario}.png"
        plot(results, scenario, path)
        written.append(path)
    for result in results:
        if result.agent_log:
            path = out / _log_name(result)
            path.parent.mkdir(exist_ok=True)
            path.write_text(result.agent_log)
            written.append(path)
    return written
