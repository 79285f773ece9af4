"""`pip install <checkout>` with no extras, for real, in a fresh virtualenv: the guest install.

It brings no third-party package, its guest commands run, and a host command says which extra
to install instead of failing with a traceback. pip builds the package in an isolated
environment, for which it fetches setuptools from PyPI (or its cache): hence the mark.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.network


def run(*command: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    # No PYTHONPATH: the checkout's src/ must not stand in for what pip installed.
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=300,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout: setuptools' build/ and egg-info land there, not in the worktree."""
    project = tmp_path_factory.mktemp("install") / "project"
    project.mkdir()
    shutil.copy(PROJECT / "pyproject.toml", project)
    shutil.copy(PROJECT / "README.md", project)
    shutil.copytree(
        PROJECT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    return project


@pytest.fixture(scope="module")
def venv(project: Path) -> Path:
    """A fresh virtualenv (no system site-packages) with a plain `pip install` of the checkout."""
    venv = project.parent / "venv"
    made = run(sys.executable, "-m", "venv", venv, cwd=project.parent)
    assert made.returncode == 0, made.stderr
    installed = run(venv / "bin/python", "-m", "pip", "install", "-q", project, cwd=project.parent)
    assert installed.returncode == 0, installed.stderr
    return venv


def test_the_plain_install_brings_no_third_party_package(venv: Path) -> None:
    listed = run(venv / "bin/python", "-m", "pip", "list", "--format", "json", cwd=venv)
    assert listed.returncode == 0, listed.stderr
    names = {package["name"].lower() for package in json.loads(listed.stdout)}
    # What `python -m venv` itself puts there, and the package.
    assert names - {"pip", "setuptools", "wheel"} == {"vmreclaim"}


def test_the_guest_agent_runs_from_the_plain_install(venv: Path) -> None:
    status = run(venv / "bin/vmreclaim", "guest", "status", "--json", cwd=venv)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["memory"]["total_bytes"] > 0
    module = run(venv / "bin/python", "-m", "vmreclaim", "guest", "status", "--help", cwd=venv)
    assert module.returncode == 0, module.stderr
    assert module.stdout.startswith("usage: vmreclaim guest status")


def test_help_works_without_the_host_extra(venv: Path) -> None:
    for command in ([], ["top"], ["host", "run"], ["bench"], ["lab", "run"]):
        shown = run(venv / "bin/vmreclaim", *command, "--help", cwd=venv)
        assert shown.returncode == 0, (command, shown.stderr)
        assert shown.stdout.startswith("usage: vmreclaim"), command


def test_a_host_command_names_the_extra_to_install(venv: Path) -> None:
    top = run(venv / "bin/vmreclaim", "top", "--once", cwd=venv)
    assert top.returncode == 3
    assert "vmreclaim: error: vmreclaim top: needs the host extra, and qemu.qmp, rich" in top.stderr
    assert "hint: pip install 'vmreclaim[host]'" in top.stderr
    assert "Traceback" not in top.stderr


def test_the_one_file_bundle_builds_and_runs_from_the_plain_install(venv: Path) -> None:
    bundle = venv.parent / "vmreclaim.pyz"
    built = run(venv / "bin/vmreclaim", "guest", "bundle", "--out", bundle, cwd=venv)
    assert built.returncode == 0, built.stderr
    # The bundle runs on the system's python3, outside the virtualenv.
    python3 = shutil.which("python3", path="/usr/bin:/bin") or "python3"
    status = run(python3, bundle, "guest", "status", "--json", cwd=venv)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["memory"]["total_bytes"] > 0


def test_the_plain_install_ships_both_systemd_units(venv: Path) -> None:
    package = next((venv / "lib").glob("python3*/site-packages/vmreclaim"))
    for unit in ("guest/vmreclaim-guest.service", "host/vmreclaim-host.service"):
        assert (package / unit).read_text() == (PROJECT / "src/vmreclaim" / unit).read_text()


def test_the_guest_units_layout_runs_on_the_system_python3(project: Path) -> None:
    """What docs/cloud-init-guest.yaml does in a VM: `pip install --target DIR` (no venv, no
    extras), then the unit's command, the system python3 with PYTHONPATH=DIR."""
    python3 = shutil.which("python3", path="/usr/bin:/bin")
    if python3 is None:
        pytest.skip("no system python3 in /usr/bin or /bin")
    target = project.parent / "opt-vmreclaim-lib"
    pip = (sys.executable, "-m", "pip", "install", "-q", "--target", target, project)
    installed = run(*pip, cwd=project.parent)
    assert installed.returncode == 0, installed.stderr
    assert sorted(path.name for path in target.iterdir() if not path.name.endswith("-info")) == [
        "bin",
        "vmreclaim",
    ]
    assert (target / "vmreclaim/guest/vmreclaim-guest.service").is_file()
    environment = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    status = subprocess.run(
        [python3, "-m", "vmreclaim", "guest", "status", "--json"],
        capture_output=True,
        text=True,
        cwd=project.parent,
        env=environment,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["memory"]["total_bytes"] > 0
