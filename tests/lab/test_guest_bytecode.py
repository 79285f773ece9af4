"""The lab compiles the package for the guest's python3, which cannot write bytecode itself."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from vmreclaim.lab.machine import compile_for_guest


def _package(root: Path) -> Path:
    package = root / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text("VALUE = 42\n")
    return package


def test_the_guest_loads_the_compiled_bytecode_instead_of_compiling(tmp_path: Path) -> None:
    package = _package(tmp_path)
    assert compile_for_guest(package, Path(sys.executable))
    assert Path(importlib.util.cache_from_source(str(package / "mod.py"))).is_file()
    # As the guest runs it: no bytecode written, so only what the host compiled can be read.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(tmp_path)}
    env.pop("PYTHONPYCACHEPREFIX", None)
    done = subprocess.run(
        [sys.executable, "-v", "-c", "import pkg.mod; print(pkg.mod.VALUE)"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert done.stdout == "42\n"
    assert f"matches {package / 'mod.py'}" in done.stderr


def test_a_source_changed_since_is_compiled_again_not_run_stale(tmp_path: Path) -> None:
    package = _package(tmp_path)
    assert compile_for_guest(package, Path(sys.executable))
    # Longer: within the same second as the first write, the size tells the two apart.
    (package / "mod.py").write_text("VALUE = 'changed, and longer'\n")
    assert compile_for_guest(package, Path(sys.executable))
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", "import pkg.mod; print(pkg.mod.VALUE)"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert done.stdout == "changed, and longer\n"


def test_no_interpreter_or_a_tree_that_does_not_compile_only_costs_speed(tmp_path: Path) -> None:
    package = _package(tmp_path)
    assert not compile_for_guest(package, tmp_path / "no-python3")
    (package / "broken.py").write_text("def (:\n")
    assert not compile_for_guest(package, Path(sys.executable))
