"""The database workload's own checks, natively (the real server runs in tests/vm)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmreclaim.errors import MissingDependencyError
from vmreclaim.workloads.database import check_installed


def test_missing_postgresql_binaries_say_to_run_setup(tmp_path: Path) -> None:
    for program in ("initdb", "pg_ctl", "postgres", "psql"):
        (tmp_path / program).write_text("")
    with pytest.raises(MissingDependencyError, match="pgbench is missing") as caught:
        check_installed(tmp_path)
    assert caught.value.hint is not None
    assert "scripts/setup" in caught.value.hint


def test_a_complete_bin_directory_passes(tmp_path: Path) -> None:
    for program in ("initdb", "pg_ctl", "postgres", "psql", "pgbench"):
        (tmp_path / program).write_text("")
    check_installed(tmp_path)
