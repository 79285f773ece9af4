"""Which pip extra each command needs, checked before it runs, and kept in step with the imports
in src/ and with pyproject's extras."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from vmreclaim import extras
from vmreclaim.cli import main

PROJECT = Path(__file__).resolve().parents[2]
# Imported only by the libvirt backend, which says itself how to install it (the libvirt extra).
LIBVIRT_MODULES = {"libvirt"}

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def third_party_imports() -> dict[str, set[str]]:
    """Every module imported in src/ that is neither the standard library nor vmreclaim, with
    the files that import it."""
    found: dict[str, set[str]] = {}
    for path in sorted((PROJECT / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top in ("vmreclaim", "__future__") or top in sys.stdlib_module_names:
                    continue
                found.setdefault(name, set()).add(str(path.relative_to(PROJECT)))
    return found


def covered(module: str, known: set[str]) -> bool:
    return any(module == name or module.startswith(name + ".") for name in known)


@pytest.fixture
def absent_host_module(monkeypatch: pytest.MonkeyPatch) -> str:
    name = "vmreclaim_test_absent_module"
    monkeypatch.setitem(extras.HOST_MODULES, name, "vmreclaim-test-absent")
    return name


def test_a_host_command_without_its_extra_names_what_to_install(absent_host_module, capsys):
    assert main(["top", "--once"]) == 3
    err = capsys.readouterr().err
    assert f"vmreclaim top: needs the host extra, and {absent_host_module} is not installed" in err
    assert "hint: pip install 'vmreclaim[host]'" in err


def test_the_message_names_the_subcommand(absent_host_module, capsys, tmp_path):
    assert main(["host", "run", "--config", str(tmp_path / "absent.toml")]) == 3
    assert "vmreclaim host run: needs the host extra" in capsys.readouterr().err


def test_a_plotting_command_names_the_bench_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(extras.BENCH_MODULES, "vmreclaim_test_absent_plots", "absent")
    assert main(["demo", "--out", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert "vmreclaim demo: needs the bench extra, and vmreclaim_test_absent_plots is not" in err
    assert "hint: pip install 'vmreclaim[bench]'" in err
    assert not list(tmp_path.iterdir())  # stopped before doing anything


def test_host_commands_do_without_the_bench_extra(monkeypatch):
    monkeypatch.setitem(extras.BENCH_MODULES, "vmreclaim_test_absent_plots", "absent")
    extras.require_extra("host run")  # no error: the daemon draws nothing
    extras.require_extra("top")


def test_guest_commands_need_no_extra(absent_host_module, capsys):
    assert main(["guest", "status", "--json"]) == 0
    assert "host extra" not in capsys.readouterr().err


def test_a_dotted_module_whose_package_is_missing_counts_as_missing():
    assert extras.missing_modules(["vmreclaim_absent_package.sub", "json"]) == [
        "vmreclaim_absent_package.sub"
    ]


def test_every_third_party_import_in_src_belongs_to_an_extra():
    known = set(extras.HOST_MODULES) | set(extras.BENCH_MODULES) | {"tomli"} | LIBVIRT_MODULES
    imports = third_party_imports()
    strays = {module: files for module, files in imports.items() if not covered(module, known)}
    assert not strays, f"add these to an extra and to vmreclaim.extras: {strays}"


def test_the_host_extra_lists_the_distributions_the_check_names():
    pyproject = tomllib.loads((PROJECT / "pyproject.toml").read_text())
    project = pyproject["project"]
    assert project["dependencies"] == []  # the guest install: nothing third-party
    host, bench = (
        {
            requirement.split(";")[0].split(">")[0].split("=")[0].strip()
            for requirement in project["optional-dependencies"][extra]
        }
        for extra in ("host", "bench")
    )
    assert host == set(extras.HOST_MODULES.values()) | {"tomli"}
    assert bench == set(extras.BENCH_MODULES.values()) | {"vmreclaim[host]"}
    assert "vmreclaim[bench]" in project["optional-dependencies"]["dev"]
