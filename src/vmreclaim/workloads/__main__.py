"""`python3 -m vmreclaim.workloads KIND ...` inside a guest."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from vmreclaim.errors import UsageError, VmreclaimError
from vmreclaim.units import parse_size
from vmreclaim.workloads import database, kinds, runtime_heap


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m vmreclaim.workloads")
    sub = parser.add_subparsers(dest="kind", required=True)
    p = sub.add_parser("alloc", help="allocate, touch, hold and free anonymous memory")
    p.add_argument("size")
    p.add_argument("--ready", type=Path, help="file to create once the memory is held")
    p.add_argument("--release", type=Path, help="free the memory once this file exists")
    p.add_argument("--hold", type=float, default=0.0, help="longest hold, seconds")
    p.add_argument("--rate", help="allocate this much a second (e.g. 100M), not all at once")
    p = sub.add_parser("fragment", help="free every other page of a region and hold the rest")
    p.add_argument("size")
    p.add_argument("--ready", type=Path, help="file to create once the pattern is in place")
    p.add_argument("--hold", type=float, default=0.0, help="seconds to hold the rest")
    p = sub.add_parser(
        "runtime-heap", help="a Go program builds a heap, frees most of it itself, and holds"
    )
    p.add_argument("size")
    p.add_argument("--ready", type=Path, help="file to create once the heap is built")
    p.add_argument("--release", type=Path, help="free the heap once this file exists")
    p.add_argument("--report", type=Path, help="write what was freed here as JSON")
    p.add_argument("--hold", type=float, default=0.0, help="longest wait, then hold, seconds")
    p.add_argument(
        "--workdir", type=Path, default=Path("/tmp/vmreclaim-runtime-heap"), help="build here"
    )
    p = sub.add_parser("write-files", help="write files and sync them: page cache")
    p.add_argument("directory", type=Path)
    p.add_argument("size")
    p.add_argument("--file-size", default="64M")
    p = sub.add_parser("busy", help="keep a CPU lightly busy")
    p.add_argument("--duty", type=float, default=0.05, help="fraction of one CPU (0-1)")
    p.add_argument("--seconds", type=float, required=True)
    p = sub.add_parser("reread", help="re-read a file set in a loop, report pass times")
    p.add_argument("directory", type=Path)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--pause", type=float, default=0.5, help="seconds between passes")
    p.add_argument("--report", type=Path, help="write the summary here as JSON")
    p.add_argument("--until", type=Path, metavar="FILE", help="stop early once FILE exists")
    p = sub.add_parser(
        "database", help="make a PostgreSQL 15 cluster, start it and load pgbench's tables"
    )
    p.add_argument("data_dir", type=Path)
    p.add_argument("--scale", type=int, required=True, help="pgbench -s: 100,000 accounts each")
    p.add_argument("--shared-buffers", default="32MB")
    p = sub.add_parser("pgbench", help="run pgbench against that cluster until a file exists")
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--select-only", action="store_true", help="pgbench -S instead of TPC-B")
    p.add_argument("--log-prefix", type=Path, required=True, help="per-transaction logs")
    p.add_argument("--until", type=Path, required=True, metavar="FILE", help="stop once it exists")
    p.add_argument("--report", type=Path, required=True, help="write when it ran here as JSON")
    p.add_argument("--seconds", type=float, required=True, help="longest run")
    p.add_argument("--mark", type=Path, help="report when this file was made, if it was")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.kind == "alloc":
            rate = parse_size(args.rate) if args.rate else None
            took = kinds.alloc(parse_size(args.size), args.ready, args.release, args.hold, rate)
            print(json.dumps({"allocated_bytes": parse_size(args.size), "seconds": took}))
        elif args.kind == "fragment":
            kinds.fragment(parse_size(args.size), args.ready, args.hold)
        elif args.kind == "runtime-heap":
            report = runtime_heap.run(
                parse_size(args.size),
                args.workdir,
                ready=args.ready,
                release=args.release,
                report=args.report,
                hold=args.hold,
            )
            print(json.dumps(dataclasses.asdict(report)))
        elif args.kind == "write-files":
            kinds.write_files(args.directory, parse_size(args.size), parse_size(args.file_size))
        elif args.kind == "busy":
            if not 0 < args.duty <= 1:
                raise UsageError("--duty is a fraction of one CPU", hint="e.g. --duty 0.05")
            kinds.busy(args.duty, args.seconds)
        elif args.kind == "reread":
            print(
                json.dumps(
                    kinds.reread(args.directory, args.seconds, args.pause, args.report, args.until)
                )
            )
        elif args.kind == "database":
            database.prepare(args.data_dir, args.scale, args.shared_buffers)
        elif args.kind == "pgbench":
            run = database.run_pgbench(
                clients=args.clients,
                select_only=args.select_only,
                log_prefix=args.log_prefix,
                until=args.until,
                report=args.report,
                seconds=args.seconds,
                mark=args.mark,
            )
            print(json.dumps(dataclasses.asdict(run)))
    except UsageError as err:
        print(f"workloads: {err.message} ({err.hint})", file=sys.stderr)
        return 2
    except VmreclaimError as err:
        print(f"workloads: {err.message}" + (f" ({err.hint})" if err.hint else ""), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
