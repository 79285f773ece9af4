"""A real database under load: PostgreSQL 15 (Debian's postgresql-15, from the host's /usr) with
its data on the scratch disk and pgbench's clients running until the host says stop.

The server and pgbench run as the user `postgres` (PostgreSQL refuses root); the lab image's
/etc/passwd has it. pgbench writes one line per transaction (`-l`), which the benchmark parses
on the host (vmreclaim.bench.pgbench); this module only starts, stops and times things.
Standard library only: it runs in the guest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from vmreclaim.errors import MissingDependencyError, VmreclaimError
from vmreclaim.workloads.kinds import wait_for

BIN_DIR = Path("/usr/lib/postgresql/15/bin")
USER = "postgres"
SOCKET_DIR = Path("/tmp")
# pgbench's own database: its tables are created by `pgbench -i`.
DATABASE = "postgres"
# Settings for a scratch cluster that exists for one run. WAL: `minimal` lets `pgbench -i` load
# its tables without logging them (COPY into a table truncated in the same transaction), and a
# small max_wal_size keeps the WAL's own page cache small beside the tables'.
_SERVER_SETTINGS = {
    "listen_addresses": "''",
    "unix_socket_directories": f"'{SOCKET_DIR}'",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "'128MB'",
    "min_wal_size": "'32MB'",
    "logging_collector": "off",
    "dynamic_shared_memory_type": "posix",
    "huge_pages": "off",
}
# After the host asks pgbench to stop, it keeps running this long before it is interrupted:
# pgbench flushes its per-transaction log only when its stdio buffer fills or it exits
# normally, so the transactions it finished before `stopped_at` must be in the file already.
_FLUSH_SECONDS = 1.5


@dataclass(frozen=True)
class PgbenchRun:
    """When pgbench ran, on the guest's clock (seconds since the epoch, as in pgbench's log)."""

    started_at: float
    stopped_at: float
    """When the host's stop file was seen: transactions up to here are all in the log."""
    exit_code: int
    """pgbench's exit status; -SIGTERM when it was stopped after `stopped_at`, as planned."""
    stderr: str
    """The end of pgbench's stderr (it says why when it fails to connect or a query fails)."""
    marked_at: float | None = None
    """When the `mark` file was made (its mtime), if it was: a scenario touches it as another
    load starts, so the host can sum the log from that moment on."""


def check_installed(bin_dir: Path = BIN_DIR) -> None:
    for program in ("initdb", "pg_ctl", "postgres", "psql", "pgbench"):
        if not (bin_dir / program).is_file():
            raise MissingDependencyError(
                f"PostgreSQL 15 is not installed: {bin_dir / program} is missing",
                hint="run scripts/setup (it installs postgresql-15)",
            )


def _as_postgres(argv: Sequence[str], timeout: float) -> str:
    """Run a PostgreSQL program as the postgres user; its output, or an error with it."""
    try:
        done = subprocess.run(
            list(argv),
            user=USER,
            group=USER,
            extra_groups=[],
            cwd=SOCKET_DIR,
            env={"PATH": f"{BIN_DIR}:/usr/bin:/bin", "TZ": "UTC", "LANG": "C"},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise VmreclaimError(f"{argv[0]} could not run: {err}") from err
    if done.returncode != 0:
        raise VmreclaimError(
            f"{Path(argv[0]).name} failed with exit code {done.returncode}: "
            f"{(done.stdout + done.stderr)[-2000:]}"
        )
    return done.stdout


def server_log(data_dir: Path) -> Path:
    """Where the server started on `data_dir` writes its log: beside the cluster, not in it."""
    return data_dir.parent / "postgresql.log"


def prepare(data_dir: Path, scale: int, shared_buffers: str) -> None:
    """Make a cluster in `data_dir`, start its server, load pgbench's tables at `scale` (about
    15 MiB each) and read their files once, so that the database starts in the page cache."""
    check_installed()
    data_dir.mkdir(parents=True)
    os.chown(data_dir, *_ids())
    _as_postgres(
        [
            str(BIN_DIR / "initdb"),
            "--pgdata",
            str(data_dir),
            "--username",
            USER,
            "--auth",
            "trust",
            "--locale",
            "C",
            "--encoding",
            "UTF8",
            "--no-sync",
        ],
        timeout=600,
    )
    settings = {**_SERVER_SETTINGS, "shared_buffers": f"'{shared_buffers}'"}
    with (data_dir / "postgresql.conf").open("a") as conf:
        conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
    log = server_log(data_dir)
    log.touch()
    os.chown(log, *_ids())
    _as_postgres(
        [str(BIN_DIR / "pg_ctl"), "--pgdata", str(data_dir), "--log", str(log), "-w", "start"],
        timeout=300,
    )
    _as_postgres(_client("pgbench", "--initialize", "--quiet", "--scale", str(scale)), 3600)
    _as_postgres(_client("psql", "--command", "CHECKPOINT"), timeout=600)
    for path in sorted((data_dir / "base").rglob("*")):
        if path.is_file():
            with path.open("rb") as data:
                while data.read(1 << 20):
                    pass


def _client(program: str, *options: str) -> list[str]:
    """A client program's argv, connected to the scratch cluster's socket."""
    return [str(BIN_DIR / program), "-h", str(SOCKET_DIR), "-U", USER, *options, DATABASE]


def _ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(USER)
    return entry.pw_uid, entry.pw_gid


def run_pgbench(
    *,
    clients: int,
    select_only: bool,
    log_prefix: Path,
    until: Path,
    report: Path,
    seconds: float,
    mark: Path | None = None,
) -> PgbenchRun:
    """pgbench with `clients` clients (one thread each), every transaction logged under
    `log_prefix`, until `until` exists (or `seconds` pass); then what `report` gets as JSON,
    with the time `mark` was made if it exists.
    The seed is fixed, so every run draws the same accounts in the same order."""
    check_installed()
    log_prefix.parent.mkdir(parents=True, exist_ok=True)
    os.chown(log_prefix.parent, *_ids())
    argv = _client(
        "pgbench",
        "--no-vacuum",
        "--client",
        str(clients),
        "--jobs",
        str(clients),
        "--time",
        str(max(1, round(seconds))),
        "--random-seed",
        "1",
        "--log",
        "--log-prefix",
        str(log_prefix),
        *(["--select-only"] if select_only else []),
    )
    started_at = time.time()
    stderr = log_prefix.parent / "pgbench.stderr"
    with stderr.open("w") as errors:
        pgbench = subprocess.Popen(
            argv,
            user=USER,
            group=USER,
            extra_groups=[],
            cwd=log_prefix.parent,
            env={"PATH": f"{BIN_DIR}:/usr/bin:/bin", "TZ": "UTC", "LANG": "C"},
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        try:
            while pgbench.poll() is None and not until.exists():
                wait_for(until, 0.2)
            stopped_at = time.time()
            if pgbench.poll() is None:
                time.sleep(_FLUSH_SECONDS)
            # SIGTERM, not SIGINT: a shell starts background jobs with SIGINT ignored, and
            # pgbench inherits that.
            if pgbench.poll() is None:
                pgbench.send_signal(signal.SIGTERM)
            exit_code = pgbench.wait(30)
        finally:
            if pgbench.poll() is None:
                pgbench.kill()
                pgbench.wait()
    marked_at = mark.stat().st_mtime if mark is not None and mark.exists() else None
    run = PgbenchRun(started_at, stopped_at, exit_code, stderr.read_text()[-2000:], marked_at)
    report.write_text(json.dumps(asdict(run)) + "\n")
    return run
