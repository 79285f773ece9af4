"""What every standalone benchmark's main() shares (`python -m vmreclaim.bench.NAME`): log lines
prefixed with its name, SIGTERM stopping it as Ctrl-C does (so that the context managers that
own its QEMUs and daemons run), a scratch folder removed at the end, errors turned into exit
statuses, and results written as JSON."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from vmreclaim.errors import VmreclaimError

R = TypeVar("R")

INTERRUPTED = 130
"""The exit status after Ctrl-C (128 + SIGINT), as a shell reports it."""


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def run_standalone(
    name: str,
    work: Callable[[Path], R],
    *,
    level: int = logging.INFO,
    before_cleanup: Callable[[Path], None] | None = None,
) -> R:
    """Run `work(scratch)` with a new scratch folder, removed afterwards (`before_cleanup` may
    copy what is worth keeping out of it first, whatever the outcome). A VmreclaimError is
    printed as `NAME: error: ...` and exits with status 1, Ctrl-C with 130, SIGTERM with 143."""
    logging.basicConfig(level=level, format=f"{name}: %(message)s")
    logging.getLogger("qemu").setLevel(logging.WARNING)  # the QMP library's own chatter
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    scratch = Path(tempfile.mkdtemp(prefix=f"vmreclaim-bench-{name}-"))
    try:
        return work(scratch)
    except VmreclaimError as err:
        print(f"{name}: error: {err.message}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(INTERRUPTED) from None
    finally:
        try:
            if before_cleanup is not None:
                before_cleanup(scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def write_results(path: Path, results: Sequence[Any] | Any) -> None:
    """Dataclass records (one, or a list) as indented JSON at `path`, its folder made."""
    data = [asdict(r) for r in results] if isinstance(results, Sequence) else asdict(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
