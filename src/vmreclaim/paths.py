"""Where vmreclaim keeps what it builds and downloads."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$VMRECLAIM_CACHE`, else `$XDG_CACHE_HOME/vmreclaim`, else `~/.cache/vmreclaim`."""
    explicit = os.environ.get("VMRECLAIM_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "vmreclaim"
