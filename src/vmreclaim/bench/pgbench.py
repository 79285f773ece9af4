"""pgbench's per-transaction log (`pgbench -l`), parsed and summed over a window of time.

PostgreSQL 15 writes one line per transaction and client thread:

    client_id transaction_no time script_no time_epoch time_us

`time` is the transaction's latency in microseconds, or `failed` / `skipped`; `time_epoch` and
`time_us` say when it ended, on the guest's clock. Pure: text in, immutable records out.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Transaction:
    ended_at: float
    """Seconds since the epoch, on the clock of the machine pgbench ran on."""
    latency_s: float | None
    """None for a transaction pgbench logged as failed or skipped."""


@dataclass(frozen=True)
class PgbenchFigures:
    """pgbench's throughput and latency over one window."""

    seconds: float
    transactions: int
    """Transactions that ended in the window and succeeded."""
    failures: int
    """Logged as failed or skipped."""
    tps: float
    latency_avg_s: float | None
    latency_p99_s: float | None
    """The nearest-rank 99th percentile: 99 % of the window's transactions took at most this."""
    latency_max_s: float | None = None


_FIELDS = 6
SLOWEST_SHARE = 0.05


def parse_log(text: str) -> list[Transaction]:
    """The transactions of one log file. A last line without its newline is one that pgbench
    was writing when it was stopped, cut anywhere (even inside a number): it is left out."""
    lines = text.split("\n")
    complete = lines[:-1]  # after the last "\n": "" when the file ends whole
    transactions = []
    for number, line in enumerate(complete, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < _FIELDS or not (fields[4].isdigit() and fields[5].isdigit()):
            raise ValueError(f"line {number} is not a pgbench transaction: {line!r}")
        ended_at = int(fields[4]) + int(fields[5]) / 1e6
        latency = fields[2]
        if latency in ("failed", "skipped", "serialization", "deadlock"):
            transactions.append(Transaction(ended_at, None))
        elif latency.isdigit():
            transactions.append(Transaction(ended_at, int(latency) / 1e6))
        else:
            raise ValueError(f"line {number} has no latency: {line!r}")
    return transactions


def nearest_rank(count: int, share: float) -> int:
    """The 1-based rank of the `share` percentile among `count` sorted values."""
    return max(1, math.ceil(share * count))


def percentile(sorted_values: list[float], share: float) -> float:
    """Nearest rank: the smallest value with at least `share` of the values at or below it."""
    return sorted_values[nearest_rank(len(sorted_values), share) - 1]


def summarize(transactions: Iterable[Transaction], start: float, end: float) -> PgbenchFigures:
    """The transactions that ended in [start, end), per second of that window."""
    if end <= start:
        raise ValueError(f"an empty window: {start} to {end}")
    inside = [t for t in transactions if start <= t.ended_at < end]
    latencies = sorted(t.latency_s for t in inside if t.latency_s is not None)
    seconds = end - start
    return PgbenchFigures(
        seconds=seconds,
        transactions=len(latencies),
        failures=len(inside) - len(latencies),
        tps=len(latencies) / seconds,
        latency_avg_s=sum(latencies) / len(latencies) if latencies else None,
        latency_p99_s=percentile(latencies, 0.99) if latencies else None,
        latency_max_s=latencies[-1] if latencies else None,
    )


@dataclass(frozen=True)
class Checkpoint:
    started_at: float
    """Seconds since the epoch, on the server's clock."""
    ended_at: float | None
    """None if it had not completed when the log was read."""


# PostgreSQL's default log_line_prefix ('%m [%p] '): the time in milliseconds and its zone.
_CHECKPOINT_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (?:UTC|GMT) \[\d+\] "
    r"LOG:  checkpoint (starting|complete)"
)


def parse_checkpoints(server_log: str) -> tuple[Checkpoint, ...]:
    """The checkpoints in a PostgreSQL server log with the default line prefix and the clock in
    UTC or GMT (log_checkpoints is on by default since PostgreSQL 15); other lines are skipped."""
    checkpoints: list[Checkpoint] = []
    for line in server_log.splitlines():
        match = _CHECKPOINT_LINE.match(line)
        if match is None:
            continue
        stamp = datetime.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S.%f")
        at = stamp.replace(tzinfo=datetime.timezone.utc).timestamp()
        if match[2] == "starting":
            checkpoints.append(Checkpoint(at, None))
        elif checkpoints and checkpoints[-1].ended_at is None:
            checkpoints[-1] = Checkpoint(checkpoints[-1].started_at, at)
    return tuple(checkpoints)


@dataclass(frozen=True)
class DatabaseLoad:
    """What pgbench got from the database over a run, and what reclaim cost it."""

    whole: PgbenchFigures
    """From pgbench's start until the host stopped it."""
    cold_write: PgbenchFigures | None
    """From the cold writer's start, for the scenario's window of guest seconds or until pgbench
    was stopped if that came first (its `seconds` say so): while the files are written and
    reclaim has them to take. None if the writer never started."""
    cold_write_seconds: float | None = None
    """How long the cold writer took, on the guest's clock; None if it had not finished when
    pgbench was stopped (then "cold back" counts files that were never written)."""
    file_refaults: int | None = None
    """/proc/vmstat workingset_refault_file over the run: file pages read back after reclaim
    evicted them. Only the database's files are read again and again here, so these are its
    pages taken from the cache."""
    started_at: float | None = None
    """When pgbench started, in seconds since the epoch on the guest's clock: the agent's log
    (the same clock) says what it did at each of `per_second`."""
    cold_started_at: float | None = None
    per_second: tuple[PgbenchFigures, ...] = ()
    """Second by second from pgbench's start: where in the run the slow transactions fell, next
    to what the agent did then. A p99 over a window follows its slowest 1 %, and a few seconds
    can hold all of them."""
    checkpoints: tuple[Checkpoint, ...] = ()
    """The server's checkpoints during the run: each writes the tables' dirty pages out and
    syncs them, the database's own cause of slow seconds."""
    slowest: tuple[Transaction, ...] = ()
    """The run's slowest SLOWEST_SHARE of transactions, slowest first: enough to recount a
    window's p99 without some of its seconds (one rank in a hundred of the window is needed,
    one in twenty of the run is kept)."""


def database_load(
    logs: Iterable[str],
    started_at: float,
    stopped_at: float,
    *,
    cold_started_at: float | None,
    cold_ended_at: float | None = None,
    window_s: float = float("inf"),
    server_log: str = "",
) -> DatabaseLoad:
    """The figures of one pgbench run from the text of its log files (one per thread) and the
    guest's times of its start and stop and of the cold writer's start and end; the cold
    writer's window lasts `window_s`; the checkpoints from the server's log that overlap the run."""
    transactions = [t for text in logs for t in parse_log(text)]
    cold = None
    if cold_started_at is not None and cold_started_at < stopped_at:
        cold_end = min(stopped_at, cold_started_at + window_s)
        cold = summarize(transactions, cold_started_at, cold_end)
    writer = None
    if cold_started_at is not None and cold_ended_at is not None:
        writer = cold_ended_at - cold_started_at
    return DatabaseLoad(
        summarize(transactions, started_at, stopped_at),
        cold,
        writer,
        started_at=started_at,
        cold_started_at=cold_started_at,
        per_second=per_second(transactions, started_at, stopped_at),
        checkpoints=tuple(
            c
            for c in parse_checkpoints(server_log)
            if c.started_at < stopped_at and (c.ended_at is None or c.ended_at >= started_at)
        ),
        slowest=slowest(transactions, started_at, stopped_at),
    )


def slowest(
    transactions: Iterable[Transaction], start: float, end: float
) -> tuple[Transaction, ...]:
    """The slowest SLOWEST_SHARE of the transactions that ended in [start, end), slowest first."""
    done = [t for t in transactions if start <= t.ended_at < end and t.latency_s is not None]
    done.sort(key=lambda t: t.latency_s or 0.0, reverse=True)
    return tuple(done[: math.ceil(SLOWEST_SHARE * len(done))])


def per_second(
    transactions: Iterable[Transaction], start: float, end: float
) -> tuple[PgbenchFigures, ...]:
    """The figures of each whole second from `start`; the last, shorter one up to `end`."""
    by_second: dict[int, list[Transaction]] = {}
    for t in transactions:
        if start <= t.ended_at < end:
            by_second.setdefault(int(t.ended_at - start), []).append(t)
    return tuple(
        summarize(by_second.get(i, ()), start + i, min(end, start + i + 1))
        for i in range(math.ceil(end - start))
    )
