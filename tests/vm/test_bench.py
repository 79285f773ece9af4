"""The benchmark in its quick form: one scenario, two contenders, short phases."""

from __future__ import annotations

from pathlib import Path

from .quick_bench import run_quick_bench


def test_quick_bench_writes_its_outputs_and_reporting_holds_less(
    tmp_path: Path, guest_image
) -> None:
    out = tmp_path / "bench"
    results = run_quick_bench(
        out,
        "--scenario",
        "build-then-idle",
        "--policy",
        "no-reporting",
        "--policy",
        "reporting",
        timeout=1200,
    )
    runs = {run["contender"]: run for run in results["runs"]}
    assert set(runs) == {"no-reporting", "reporting"}
    for run in runs.values():
        assert run["scenario"] == "build-then-idle"
        assert [p["name"] for p in run["phases"]] == ["build", "write", "idle"]
        # 4 Hz over the run, and the guest's need from the balloon's statistics
        assert len(run["samples"]) > 4 * 40
        assert run["needs"]
    held = {name: run["measures"] for name, run in runs.items()}
    assert held["no-reporting"]["mean_bytes"] > held["reporting"]["mean_bytes"]
    # The scenario frees 512 MiB of anonymous memory and then writes 256 MiB of files.
    assert held["no-reporting"]["final_bytes"] > held["reporting"]["final_bytes"] + (128 << 20)
    assert held["no-reporting"]["excess_gib_s"] > held["reporting"]["excess_gib_s"]

    assert (out / "build-then-idle.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "results.md").read_text()
    assert "| no-reporting |" in table
    assert "| reporting |" in table
