"""Which commands need which pip extra, and whether it is installed. Standard library only.

`pip install vmreclaim` installs the guest agent and nothing else; the host side (`top`,
`host`, `lab`) needs `pip install 'vmreclaim[host]'`, and what draws plots (`demo`, `bench`)
`pip install 'vmreclaim[bench]'`, the host extra and matplotlib: a hypervisor running the
daemon has no use for matplotlib, numpy and pillow. The CLI checks before it runs a command, so
a missing library is one clear error with the command to fix it, instead of a traceback from
deep inside an import.
"""

from __future__ import annotations

import importlib.util
import sys

from vmreclaim.errors import MissingDependencyError

HOST_MODULES: dict[str, str] = {
    # module imported in src/ -> the distribution in pyproject's host extra that provides it
    "qemu.qmp": "qemu.qmp",
    "rich": "rich",
    "prometheus_client": "prometheus-client",
}
if sys.version_info < (3, 11):
    HOST_MODULES["tomli"] = "tomli"
BENCH_MODULES: dict[str, str] = {
    # module imported in src/ -> the distribution the bench extra adds to the host extra's
    "matplotlib": "matplotlib",
}

GUEST_COMMANDS = frozenset({"guest"})
"""Commands that run on the standard library alone; every other one needs the host extra."""
BENCH_COMMANDS = frozenset({"bench", "demo"})
"""Commands that draw plots: they need the bench extra (the host extra and matplotlib)."""


def missing_modules(modules: list[str]) -> list[str]:
    """The modules of `modules` that cannot be imported here (found without importing them,
    but a dotted name's parent package is imported to look inside it)."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # the parent package of a dotted name is missing
            found = False
        if not found:
            missing.append(name)
    return missing


def require_extra(command: str) -> None:
    """Raise MissingDependencyError, naming what to install, if `command` (as typed, e.g.
    "host run") needs the host (or bench) extra and some of its modules are missing."""
    first = command.split(maxsplit=1)[0]
    if first in GUEST_COMMANDS:
        return
    extra, modules = "host", list(HOST_MODULES)
    if first in BENCH_COMMANDS:
        extra, modules = "bench", modules + list(BENCH_MODULES)
    missing = missing_modules(modules)
    if missing:
        raise MissingDependencyError(
            f"vmreclaim {command}: needs the {extra} extra, and {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed",
            hint=f"pip install 'vmreclaim[{extra}]' (from a checkout: pip install '.[{extra}]'); "
            "the guest agent needs none of it",
        )
