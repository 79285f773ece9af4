"""One-off analysis (2026-12-07, issue 11): where in the cold writer's window the slowest 1 % of
pgbench's transactions fell, next to what the agent did then and to the server's checkpoints,
and the window's p99 recounted without the seconds of the agent's compactions.

It reads a `vmreclaim bench` output directory whose runs hold pgbench's per-second figures, its
slowest 5 % and the checkpoints (code b782210 on), and the agent logs beside them. The agent
logs in whole seconds: a compaction counts from its "write '1' to compact_memory" line's second
to the end of the second of its "compact:" line; both clocks are the guest's.

Run from the checkout:
PYTHONPATH=src .venv/bin/python docs/benchmarks/one-off/pgbench_slow_seconds.py /tmp/b-rw
"""

import datetime
import json
import re
import sys
from pathlib import Path

from vmreclaim.bench.pgbench import nearest_rank

LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d) \w+ vmreclaim: (.*)$")


def stamp(text):
    at = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S")
    return at.replace(tzinfo=datetime.timezone.utc).timestamp()


def compactions(agent_log):
    """(start, end) of each compaction the agent ran, in guest seconds since the epoch."""
    spans, began = [], None
    for line in agent_log.splitlines():
        match = LINE.match(line)
        if match is None:
            continue
        at, what = stamp(match[1]), match[2]
        if what.startswith("write '1' to /proc/sys/vm/compact_memory"):
            began = at
        elif what.startswith("compact:") and began is not None:
            spans.append((began, at + 1.0))
            began = None
    return spans


def inside(at, spans):
    return any(start <= at < end for start, end in spans)


def main(out):
    data = json.loads((out / "results.json").read_text())
    for run in data["runs"]:
        db = run["measures"].get("database")
        if not db or not db.get("per_second") or db["cold_write"] is None:
            continue
        name = f"{run['contender']} #{run['repeat'] + 1}"
        start = db["cold_started_at"]
        end = start + db["cold_write"]["seconds"]
        count = db["cold_write"]["transactions"]
        over = count - nearest_rank(count, 0.99)  # transactions slower than the window's p99
        slow = [t for t in db["slowest"] if start <= t["ended_at"] < end]
        if len(slow) <= over:
            print(f"{name}: the kept slowest do not reach the window's p99")
            continue
        log = run.get("agent_log")
        spans = compactions((out / log).read_text()) if log else []
        spans = [(a, b) for a, b in spans if a < end and b > start]
        points = [(c["started_at"], c["ended_at"] or end) for c in db["checkpoints"]]
        points = [(a, b) for a, b in points if a < end and b > start]
        worst = slow[:over]
        in_pass = sum(inside(t["ended_at"], spans) for t in worst)
        in_checkpoint = sum(inside(t["ended_at"], points) for t in worst)
        pass_s = sum(min(b, end) - max(a, start) for a, b in spans)
        # Without the compactions' seconds: the window's transactions less those that ended in
        # them (their count from per_second, whole seconds from pgbench's start).
        first = db["started_at"]
        left_out = sum(
            s["transactions"]
            for i, s in enumerate(db["per_second"])
            if inside(first + i + 0.5, spans) and start <= first + i + 0.5 < end
        )
        rest = [t for t in slow if not inside(t["ended_at"], spans)]
        rest_count = count - left_out
        rest_over = rest_count - nearest_rank(rest_count, 0.99)
        p99_rest = rest[rest_over]["latency_s"] if len(rest) > rest_over else None
        print(
            f"{name}: window {end - start:.0f} s, {count} transactions, p99 "
            f"{db['cold_write']['latency_p99_s'] * 1e3:.2f} ms; its {over} slower: "
            f"{in_pass} in compactions ({pass_s:.1f} s of the window), {in_checkpoint} in "
            f"checkpoints ({len(points)}); p99 without the compactions' seconds "
            + (f"{p99_rest * 1e3:.2f} ms" if p99_rest is not None else "n/a")
        )
        for a, b in spans:
            print(f"    compaction {a - start:+.0f} to {b - start:+.0f} s")
        for a, b in points:
            print(f"    checkpoint {a - start:+.1f} to {b - start:+.1f} s")
        by_second = {}
        for t in worst:
            key = int(t["ended_at"] - start)
            by_second[key] = by_second.get(key, 0) + 1
        print("    slower than p99, by second of the window:", dict(sorted(by_second.items())))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
