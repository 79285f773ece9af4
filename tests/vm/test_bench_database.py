"""The database scenario in its quick form on a real guest: PostgreSQL 15 from the host's /usr
runs as `postgres` on the scratch disk, pgbench's log comes back and is summed."""

from __future__ import annotations

from vmreclaim.bench.contenders import CONTENDERS
from vmreclaim.bench.runner import run_one
from vmreclaim.bench.scenarios import SCENARIOS

MIB = 1 << 20


def test_quick_pgbench_ro_reports_throughput_latency_and_the_cold_files(guest_image) -> None:
    scenario = SCENARIOS["pgbench-ro"](True)
    result = run_one(scenario, CONTENDERS["reporting"], guest_image, icount=2)

    m = result.measures
    assert m.database is not None
    whole, cold = m.database.whole, m.database.cold_write
    assert cold is not None
    # Under --icount 2 two clients ran about 1,200 read-only transactions a second here.
    assert whole.tps > 100
    assert whole.failures == 0
    assert cold.transactions > 1000
    assert cold.seconds < whole.seconds
    assert cold.latency_avg_s is not None
    assert cold.latency_p99_s is not None
    assert 0 < cold.latency_avg_s <= cold.latency_p99_s < 1.0
    # The writer finished within the run, and its files reached the host's footprint.
    assert m.database.cold_write_seconds is not None
    assert m.database.file_refaults is not None
    assert m.final_bytes > m.rest_bytes + scenario.cold_bytes // 2
