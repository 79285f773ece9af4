from __future__ import annotations

from pathlib import Path

import pytest

from .fakeroot import FakeRoot, debian_guest


@pytest.fixture
def debian(tmp_path: Path) -> FakeRoot:
    """A Debian 12 guest on QEMU with free page reporting on (see fakeroot.debian_guest)."""
    return debian_guest(tmp_path)
