"""pgbench's per-transaction log, from verbatim lines that PostgreSQL 15's pgbench wrote in a lab
guest (2 clients, one thread each, `-S`), stopped by SIGTERM as the benchmark stops it."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmreclaim.bench.pgbench import (
    Checkpoint,
    Transaction,
    database_load,
    parse_checkpoints,
    parse_log,
    percentile,
    slowest,
    summarize,
)

# The start of thread 0's file (pgbench_log.177) and its end: the last line was cut inside its
# microseconds (951xxx) when pgbench was stopped.
THREAD_0 = """\
0 1 10523 0 1796072104 523181
0 2 961 0 1796072104 524208
0 3 3118 0 1796072104 527344
0 2000 1270 0 1796072107 399065
0 2001 1202 0 1796072107 400286
0 10314 608 0 1796072117 952083
0 10315 1236 0 1796072117 953338
0 10316 1830 0 1796072117 95"""
# Thread 1's file (pgbench_log.177.1), cut the same way.
THREAD_1 = """\
1 1 13659 0 1796072104 526265
1 2 2932 0 1796072104 529271
1 3 1712 0 1796072104 531001
1 10314 1193 0 1796072117 970342
1 10315 1695 0 1796072117 972057
1 10316 1238 0 1"""


def _logs(tmp_path: Path) -> list[str]:
    """Written to files and read back, as the runner reads them from the guest."""
    (tmp_path / "log.177").write_text(THREAD_0)
    (tmp_path / "log.177.1").write_text(THREAD_1)
    return [path.read_text() for path in sorted(tmp_path.glob("log.*"))]


def test_a_line_gives_when_the_transaction_ended_and_its_latency(tmp_path: Path) -> None:
    first = parse_log(_logs(tmp_path)[0])[0]
    assert first == Transaction(ended_at=1796072104.523181, latency_s=0.010523)


def test_the_line_pgbench_was_writing_when_stopped_is_left_out(tmp_path: Path) -> None:
    thread_0, thread_1 = (parse_log(text) for text in _logs(tmp_path))
    assert len(thread_0) == 7
    assert len(thread_1) == 5
    assert thread_0[-1] == Transaction(1796072117.953338, 0.001236)


def test_a_whole_file_keeps_its_last_line() -> None:
    assert len(parse_log(THREAD_1.rsplit("\n", 1)[0] + "\n")) == 5


def test_failed_transactions_count_apart_from_the_latencies() -> None:
    # PostgreSQL 15 writes `failed` in the latency's place (pgbench docs, "Per-Transaction
    # Logging"); this line is made after that format, not captured.
    transactions = parse_log("0 7 failed 0 1796072105 100000\n0 8 2000 0 1796072105 200000\n")
    figures = summarize(transactions, 1796072105.0, 1796072106.0)
    assert (figures.transactions, figures.failures) == (1, 1)
    assert figures.latency_avg_s == pytest.approx(0.002)


def test_text_that_is_no_pgbench_log_is_refused() -> None:
    with pytest.raises(ValueError, match="line 1 is not a pgbench transaction"):
        parse_log("pgbench: setting random seed to 1\n")


def test_the_window_counts_transactions_that_ended_in_it(tmp_path: Path) -> None:
    transactions = [t for text in _logs(tmp_path) for t in parse_log(text)]
    # 1796072104 to 1796072107.4: the three first of each thread and 0/2000
    figures = summarize(transactions, 1796072104.0, 1796072107.4)
    assert figures.transactions == 7
    assert figures.tps == pytest.approx(7 / 3.4)
    assert figures.latency_avg_s == pytest.approx(
        (10523 + 961 + 3118 + 1270 + 13659 + 2932 + 1712) / 7 / 1e6
    )
    assert figures.latency_p99_s == pytest.approx(0.013659)


def test_p99_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 201)]
    assert percentile(values, 0.99) == 198.0
    assert percentile(values[:100], 0.99) == 99.0
    assert percentile([5.0], 0.99) == 5.0


def test_the_cold_window_starts_at_the_writers_mark(tmp_path: Path) -> None:
    load = database_load(
        _logs(tmp_path),
        started_at=1796072104.0,
        stopped_at=1796072118.0,
        cold_started_at=1796072117.0,
        cold_ended_at=1796072160.0,
    )
    assert load.whole.transactions == 12
    assert load.whole.seconds == pytest.approx(14.0)
    assert load.cold_write is not None
    assert load.cold_write.transactions == 4
    assert load.cold_write_seconds == pytest.approx(43.0)
    assert load.file_refaults is None  # the guest's readings add it


def test_the_cold_window_lasts_the_scenarios_guest_seconds(tmp_path: Path) -> None:
    load = database_load(
        _logs(tmp_path), 1796072104.0, 1796072118.0, cold_started_at=1796072104.0, window_s=3.4
    )
    assert load.cold_write is not None
    assert load.cold_write.seconds == pytest.approx(3.4)
    assert load.cold_write.transactions == 7
    assert load.whole.transactions == 12


def test_without_the_writers_mark_there_is_no_cold_window(tmp_path: Path) -> None:
    load = database_load(_logs(tmp_path), 1796072104.0, 1796072118.0, cold_started_at=None)
    assert load.cold_write is None
    assert load.cold_write_seconds is None


def test_an_empty_window_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty window"):
        summarize([], 10.0, 10.0)


def test_each_second_has_its_own_figures(tmp_path: Path) -> None:
    load = database_load(_logs(tmp_path), 1796072104.0, 1796072117.96, cold_started_at=1796072117.0)
    seconds = load.per_second
    assert len(seconds) == 14  # 13 whole seconds and the part of one up to the stop
    assert seconds[-1].seconds == pytest.approx(0.96)
    # the stop leaves out thread 1's two last, at .970 and .972
    assert [s.transactions for s in seconds] == [6, 0, 0, 2] + [0] * 9 + [2]
    assert seconds[0].latency_max_s == pytest.approx(0.013659)
    assert seconds[1].latency_p99_s is None  # nothing ended in it
    assert seconds[13].latency_max_s == pytest.approx(0.001236)
    assert sum(s.transactions for s in seconds) == load.whole.transactions
    assert load.started_at == 1796072104.0
    assert load.cold_started_at == 1796072117.0


def test_the_slowest_twentieth_is_kept_slowest_first(tmp_path: Path) -> None:
    load = database_load(_logs(tmp_path), 1796072104.0, 1796072118.0, cold_started_at=None)
    # 12 transactions: the slowest 5 % rounds up to one, 1/1's 13,659 us
    assert load.slowest == (Transaction(1796072104.526265, 0.013659),)
    many = [Transaction(1796072104.0 + i / 100, i / 1e3) for i in range(100)]
    assert [t.latency_s for t in slowest(many, 1796072104.0, 1796072106.0)] == [
        0.099,
        0.098,
        0.097,
        0.096,
        0.095,
    ]


# PostgreSQL 15's server log with its defaults (log_line_prefix '%m [%p] ', log_checkpoints on),
# from a lab guest: the start and the setup's CHECKPOINT verbatim, then two checkpoints the WAL
# asked for, written in the same form.
SERVER_LOG = """\
2026-12-07 21:42:01.883 UTC [143] LOG:  starting PostgreSQL 15.18 (Debian 15.18-0+deb12u1) on x86_64-pc-linux-gnu, compiled by gcc (Debian 12.2.0-14+deb12u1) 12.2.0, 64-bit
2026-12-07 21:42:01.889 UTC [143] LOG:  listening on Unix socket "/tmp/.s.PGSQL.5432"
2026-12-07 21:42:01.917 UTC [146] LOG:  database system was shut down at 2026-12-07 21:42:01 UTC
2026-12-07 21:42:02.030 UTC [143] LOG:  database system is ready to accept connections
2026-12-07 21:42:09.833 UTC [144] LOG:  checkpoint starting: immediate force wait
2026-12-07 21:42:09.957 UTC [144] LOG:  checkpoint complete: wrote 70 buffers (1.7%); 0 WAL file(s) added, 0 removed, 0 recycled; write=0.035 s, sync=0.072 s, total=0.123 s; sync files=54, longest=0.004 s, average=0.002 s; distance=267 kB, estimate=267 kB
2026-12-07 21:42:48.000 UTC [144] LOG:  checkpoint starting: wal
2026-12-07 21:43:07.250 UTC [144] LOG:  checkpoint complete: wrote 2210 buffers (27.0%); 0 WAL file(s) added, 0 removed, 2 recycled; write=18.903 s, sync=0.211 s, total=19.261 s; sync files=14, longest=0.120 s, average=0.015 s; distance=65570 kB, estimate=65570 kB
2026-12-07 21:43:58.500 UTC [144] LOG:  checkpoint starting: wal
"""
AT_21_42_09 = 1796679729.0


def test_checkpoints_are_read_from_the_servers_log() -> None:
    assert parse_checkpoints(SERVER_LOG) == (
        Checkpoint(AT_21_42_09 + 0.833, AT_21_42_09 + 0.957),
        Checkpoint(AT_21_42_09 + 39.0, AT_21_42_09 + 58.25),
        Checkpoint(AT_21_42_09 + 109.5, None),  # not complete when the log was read
    )


def test_only_the_checkpoints_that_overlap_pgbenchs_run_are_kept() -> None:
    load = database_load(
        [],
        AT_21_42_09 + 40.0,
        AT_21_42_09 + 100.0,
        cold_started_at=None,
        server_log=SERVER_LOG,
    )
    assert [c.started_at for c in load.checkpoints] == [AT_21_42_09 + 39.0]
