"""Reading kernel files under a filesystem root that tests can replace with a temporary tree."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def under(root: Path, absolute: str) -> Path:
    """`/proc/meminfo` under `root` (a fake tree in tests, `/` in a guest)."""
    return root / absolute.lstrip("/")


def read_text(root: Path, absolute: str) -> str | None:
    """The file's text, or None when it is absent or unreadable (the caller says what is missing).

    Kernel files vanish with kernel options (no CONFIG_PSI, no balloon driver), so absence is an
    answer, not an error.
    """
    path = under(root, absolute)
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return None
    except OSError as err:
        # EACCES on a hardened /sys, EOPNOTSUPP from a PSI file on a kernel booted with psi=0.
        log.debug("cannot read %s: %s", path, err)
        return None


def read_int(root: Path, absolute: str) -> int | None:
    """A file holding one integer (sysctl, module parameter), or None."""
    text = read_text(root, absolute)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        log.debug("%s does not hold an integer: %r", absolute, text[:40])
        return None
