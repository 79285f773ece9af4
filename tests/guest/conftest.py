from __future__ import annotations

from pathlib import Path

import pytest

from .fakeroot import FakeRoot, debian_guest
from .simguest import SimGuest


@pytest.fixture
def debian(tmp_path: Path) -> FakeRoot:
    """A Debian 12 guest on QEMU with free page reporting on (see fakeroot.debian_guest)."""
    return debian_guest(tmp_path)


@pytest.fixture
def sim(tmp_path: Path) -> SimGuest:
    """The Debian guest with counters that move: 800 MiB inactive, 100 MiB active file cache."""
    return SimGuest(debian_guest(tmp_path))
