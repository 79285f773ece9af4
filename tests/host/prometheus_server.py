"""A real Prometheus (Debian's `prometheus` package) the test owns: its own configuration,
storage and loopback port, killed and reaped when the block ends, on errors too, and by a
parent-death signal if the test process itself is killed."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmreclaim.qemu.process import set_parent_death_signal

from .daemon_process import free_port

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
NOT_INSTALLED = "prometheus is not installed (scripts/setup installs Debian's prometheus package)"


@dataclass
class Prometheus:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def api(self, path: str, **params: str) -> Any:
        """The `data` of an HTTP API answer; fails on an error status."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=5) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's vector: each series' labels (`metric`) and `value`."""
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_for(self, promql: str, seconds: float = 30.0) -> list[dict[str, Any]]:
        """The query's result once it is not empty; fails after `seconds` with the log."""
        deadline = time.monotonic() + seconds
        while True:
            assert self.process.poll() is None, self.log_text()
            result = self.query(promql)
            if result or time.monotonic() > deadline:
                assert result, f"no series for {promql} within {seconds:g} s\n{self.log_text()}"
                return result
            time.sleep(0.5)


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text(errors="replace")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass  # not listening yet
        time.sleep(0.2)
    raise AssertionError(f"prometheus not ready within {seconds:g} s\n" + log.read_text())


@contextlib.contextmanager
def prometheus(directory: Path, targets: list[str], rule_files: list[Path]) -> Iterator[Prometheus]:
    """Scrape `targets` (host:port) as the job "vmreclaim" every second and evaluate
    `rule_files` every second."""
    assert PROMETHEUS is not None, NOT_INSTALLED
    config = directory / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(path) for path in rule_files],
                "scrape_configs": [
                    {"job_name": "vmreclaim", "static_configs": [{"targets": targets}]}
                ],
            }
        )
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = directory / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=set_parent_death_signal,  # noqa: PLW1509 - prctl must run in the child
        )
    try:
        _wait_ready(url, process, log, 60)
        yield Prometheus(process, url, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait()
