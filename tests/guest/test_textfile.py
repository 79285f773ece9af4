"""The agent's metrics for node_exporter's textfile collector: valid exposition text, rewritten
atomically after every tick, and a bad path refused at start."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from vmreclaim.errors import UsageError
from vmreclaim.guest.policies import POLICIES
from vmreclaim.guest.textfile import TextfileWriter, check_directory

from .simguest import MIB, SimGuest
from .test_daemon import make_agent
from .test_run_cli import run_main


def _samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value; parsing fails on text Prometheus would refuse."""
    text = path.read_text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_after_each_tick_the_file_holds_what_the_agent_did(sim: SimGuest, tmp_path: Path):
    directory = tmp_path / "textfiles"
    directory.mkdir()
    path = directory / "vmreclaim.prom"
    agent = make_agent(sim)
    agent._textfile = TextfileWriter(path, "adaptive", wall_clock=lambda: 1_700_000_000.0)
    agent.run(duration_s=4)  # two ticks: the first measures, the second reclaims
    samples = _samples(path)
    assert samples[("vmreclaim_guest_info", (("policy", "adaptive"), ("version", "0.1.0")))] == 1
    assert samples[("vmreclaim_guest_ticks_total", ())] == 2
    assert samples[("vmreclaim_guest_actions_total", (("action", "reclaim"),))] == 1
    assert samples[("vmreclaim_guest_actions_total", (("action", "drop_caches"),))] == 0
    assert samples[("vmreclaim_guest_floor_bytes", ())] == 128 * MIB
    assert samples[("vmreclaim_guest_cache_returned_bytes_total", ())] > 0
    last = ("vmreclaim_guest_last_action_timestamp_seconds", (("action", "reclaim"),))
    assert samples[last] == 1_700_000_000.0
    assert ("vmreclaim_guest_cpu_seconds_total", (("part", "observing"),)) in samples
    assert ("vmreclaim_guest_refaulted_bytes_total", ()) in samples
    # Readable by node_exporter's own user, and no temporary file left beside it.
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in directory.iterdir()) == ["vmreclaim.prom"]


def test_a_policy_without_a_floor_exports_none(sim: SimGuest, tmp_path: Path):
    path = tmp_path / "vmreclaim.prom"
    agent = make_agent(sim, "dropcache")
    agent._textfile = TextfileWriter(path, "dropcache")
    agent.run(duration_s=2)
    assert not any(name == "vmreclaim_guest_floor_bytes" for name, _ in _samples(path))
    assert POLICIES["dropcache"].floor(POLICIES["dropcache"].config_type(), None) is None


def test_a_write_that_fails_is_logged_once_and_the_agent_goes_on(
    sim: SimGuest, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO)
    directory = tmp_path / "textfiles"
    directory.mkdir()
    agent = make_agent(sim)
    agent._textfile = TextfileWriter(directory / "vmreclaim.prom", "adaptive")
    directory.rmdir()
    assert agent.run(duration_s=6) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"cannot write the textfile {directory}/vmreclaim.prom: ")
    directory.mkdir()
    agent.run(duration_s=2)
    assert (directory / "vmreclaim.prom").is_file()
    assert caplog.messages[-2] == f"the textfile {directory}/vmreclaim.prom is written again"


def test_a_missing_directory_or_a_name_node_exporter_skips_is_refused(tmp_path: Path):
    with pytest.raises(UsageError, match="does not exist") as caught:
        check_directory(tmp_path / "nowhere" / "vmreclaim.prom")
    assert caught.value.hint is not None
    assert "prometheus-node-exporter" in caught.value.hint
    with pytest.raises(UsageError, match=r"does not end in \.prom"):
        check_directory(tmp_path / "vmreclaim.txt")


def test_run_writes_the_file_given_on_the_command_line(debian, tmp_path: Path):
    path = tmp_path / "vmreclaim.prom"
    assert run_main("--once", "--root", str(debian.path), "--textfile", str(path)) == 0
    assert _samples(path)[("vmreclaim_guest_ticks_total", ())] == 1


def test_run_refuses_a_textfile_in_a_missing_directory(debian, tmp_path: Path, capsys):
    missing = tmp_path / "nowhere" / "vmreclaim.prom"
    assert run_main("--once", "--root", str(debian.path), "--textfile", str(missing)) != 0
    assert "does not exist" in capsys.readouterr().err
