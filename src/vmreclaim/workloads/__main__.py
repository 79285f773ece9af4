"""`python3 -m vmreclaim.workloads KIND ...` inside a guest."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from vmreclaim.errors import UsageError
from vmreclaim.units import parse_size

_PAGE = 4096


def _wait_for(path: Path | None, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (path is not None and path.exists()):
        time.sleep(0.05)


def alloc(size: int, ready: Path | None, release: Path | None, hold: float) -> None:
    """Allocate `size` bytes of anonymous memory and write every page, so the guest really
    backs it; create `ready`; hold until `release` exists (or `hold` seconds); then free it."""
    block = bytearray(size)
    for offset in range(0, size, _PAGE):
        block[offset] = 1
    if ready is not None:
        ready.write_text(f"{size}\n")
    _wait_for(release, hold)
    del block


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m vmreclaim.workloads")
    kinds = parser.add_subparsers(dest="kind", required=True)
    p_alloc = kinds.add_parser("alloc", help="allocate, touch, hold and free anonymous memory")
    p_alloc.add_argument("size")
    p_alloc.add_argument("--ready", type=Path, help="file to create once the memory is held")
    p_alloc.add_argument("--release", type=Path, help="free the memory once this file exists")
    p_alloc.add_argument("--hold", type=float, default=0.0, help="longest hold, seconds")
    args = parser.parse_args(argv)
    try:
        if args.kind == "alloc":
            alloc(parse_size(args.size), args.ready, args.release, args.hold)
    except UsageError as err:
        print(f"workloads: {err.message} ({err.hint})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
