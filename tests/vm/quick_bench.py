"""`vmreclaim bench --quick` as a user runs it, for the real-guest tests of the benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_quick_bench(out: Path, *options: str, timeout: float) -> dict[str, Any]:
    """Run the benchmark's quick form with `options` into `out`; its results.json. A failed run
    fails the test with the end of what it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "vmreclaim", "bench", "--quick", *options, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    return results
