"""build-real in its quick form: the pinned source package reaches the guest on its scratch
disk and the host's make, gcc and tclsh build it there."""

from __future__ import annotations

from pathlib import Path

from vmreclaim.bench.scenarios import BUILD_PACKAGE
from vmreclaim.bench.sources import find_source

from .quick_bench import run_quick_bench

MIB = 1 << 20


def test_quick_build_real_builds_the_pinned_source_and_records_its_version(
    tmp_path: Path, guest_image
) -> None:
    source = find_source(BUILD_PACKAGE)  # scripts/setup downloads it
    out = tmp_path / "bench"
    results = run_quick_bench(out, "--scenario", "build-real", "--policy", "reporting", timeout=900)
    (run,) = results["runs"]
    assert run["source"] == source.label
    assert f"Built: {source.label}" in (out / "results.md").read_text()
    phases = {p["name"]: p["start_s"] for p in run["phases"]}
    # The build phase lasts as long as the build: tens of seconds of make under TCG.
    assert phases["idle"] - phases["build"] > 30
    # Unpacking 108 MB of sources and building fills the guest's page cache: the host holds
    # well over the guest at rest when the idle phase begins.
    m = run["measures"]
    assert m["last_phase_start_bytes"] > m["rest_bytes"] + 100 * MIB
