"""Issue 12, point 6: in a guest that `host run` has squeezed, a process that needs 700 MB at
once, or at 100 MB/s, gets it with no OOM kill, with the balloon device as `host
launch-options` gives it (its deflate-on-oom default). The measurement of both settings, three
times each, is `python -m vmreclaim.bench.bursts --repeat 3` (README, "Bursts")."""

from __future__ import annotations

from pathlib import Path

from vmreclaim.bench.bursts import MIB, SHAPES, describe, run_bursts
from vmreclaim.host.launch import DEFLATE_ON_OOM


def test_a_burst_in_a_squeezed_guest_completes_with_no_oom_kill(tmp_path: Path) -> None:
    results = run_bursts(1, [DEFLATE_ON_OOM], tmp_path, keep=tmp_path / "logs")
    assert [r.shape for r in results] == [shape for shape, _ in SHAPES]
    for result in results:
        # Squeezed first: the burst needs memory the balloon holds.
        assert result.balloon_before_bytes < 700 * MIB, describe(result)
        assert result.survived, describe(result)
        assert result.balloon_largest_bytes > result.balloon_before_bytes + 300 * MIB, describe(
            result
        )
