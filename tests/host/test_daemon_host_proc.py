"""`[host] proc`: the daemon judges the host by the meminfo and pressure/memory found there,
verbatim kernel text a test (or the soak) rewrites to swing the host's figures."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from vmreclaim.host.config import load_config
from vmreclaim.host.daemon import Daemon
from vmreclaim.host.policy import Mode
from vmreclaim.host.sources import SourceList, VmSources

MEMINFO = """\
MemTotal:       16384000 kB
MemFree:          512000 kB
MemAvailable:    {available} kB
Buffers:           10240 kB
Cached:           900000 kB
"""
PRESSURE = """\
some avg10={some:.2f} avg60=0.00 avg300=0.00 total=0
full avg10=0.00 avg60=0.00 avg300=0.00 total=0
"""


def write_host(proc: Path, available_kib: int, some: float = 0.0) -> None:
    (proc / "pressure").mkdir(parents=True, exist_ok=True)
    (proc / "meminfo").write_text(MEMINFO.format(available=available_kib))
    (proc / "pressure" / "memory").write_text(PRESSURE.format(some=some))


def mode_after_one_cycle(tmp_path: Path) -> Mode:
    config = tmp_path / "host.toml"
    config.write_text(
        f'socket = ""\n[metrics]\nport = 0\n[host]\nkeep_available = "2G"\n'
        f'release_available = "3G"\nproc = "{tmp_path / "fake"}"\n'
    )
    # Nothing to watch: a glob that matches no file.
    loaded = dataclasses.replace(load_config(config), qmp=(str(tmp_path / "none-*.qmp"),))
    sources = VmSources(SourceList(loaded.qmp))
    daemon = Daemon(loaded, sources.backend, discoverer=sources.discover)
    try:
        return asyncio.run(daemon.cycle()).mode
    finally:
        sources.close()


def test_a_host_short_of_memory_under_host_proc_makes_the_daemon_shrink(tmp_path: Path) -> None:
    write_host(tmp_path / "fake", available_kib=1 << 20)  # 1 GiB < keep_available
    assert mode_after_one_cycle(tmp_path) is Mode.SHRINK


def test_memory_pressure_under_host_proc_makes_the_daemon_shrink(tmp_path: Path) -> None:
    write_host(tmp_path / "fake", available_kib=8 << 20, some=40.0)
    assert mode_after_one_cycle(tmp_path) is Mode.SHRINK


def test_plenty_under_host_proc_makes_the_daemon_grow(tmp_path: Path) -> None:
    write_host(tmp_path / "fake", available_kib=8 << 20)
    assert mode_after_one_cycle(tmp_path) is Mode.GROW


def test_the_daemon_raises_its_soft_limit_of_open_files_to_the_hard_one() -> None:
    """One socket per VM: a soft limit of 1024 would stop a daemon at about 950 VMs."""
    import subprocess
    import sys

    script = (
        "import resource\n"
        "from vmreclaim.host.daemon import raise_open_files\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "raise_open_files()\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard), hard > 256)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"], out.stderr
