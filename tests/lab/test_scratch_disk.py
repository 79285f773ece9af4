"""The scratch disk's image, made with the real mkfs.ext4 and read back with debugfs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from vmreclaim.errors import UsageError
from vmreclaim.lab.machine import _make_scratch_disk
from vmreclaim.lab.qemu_command import MachineConfig

MIB = 1 << 20


def _debugfs(image: Path, request: str) -> str:
    debugfs = shutil.which("debugfs") or "/sbin/debugfs"
    if not Path(debugfs).exists():
        pytest.skip("debugfs (e2fsprogs) is not installed")
    done = subprocess.run(
        [debugfs, "-R", request, str(image)], capture_output=True, text=True, check=True
    )
    return done.stdout


def test_the_disk_holds_the_files_of_its_contents_directory(tmp_path: Path) -> None:
    contents = tmp_path / "contents"
    contents.mkdir()
    (contents / "demo_1.2.orig.tar.xz").write_bytes(b"x" * 70_000)
    image = tmp_path / "scratch.img"
    _make_scratch_disk(image, 32 * MIB, contents)
    assert image.stat().st_size == 32 * MIB
    assert "demo_1.2.orig.tar.xz" in _debugfs(image, "ls -l /")
    assert _debugfs(image, "cat /demo_1.2.orig.tar.xz") == "x" * 70_000


def test_without_contents_the_disk_is_empty(tmp_path: Path) -> None:
    image = tmp_path / "scratch.img"
    _make_scratch_disk(image, 32 * MIB)
    names = [line.split()[-1] for line in _debugfs(image, "ls -l /").splitlines() if line.strip()]
    assert set(names) == {".", "..", "lost+found"}


@pytest.mark.parametrize("disk", [None, 64 * MIB])
def test_contents_need_a_disk_and_a_directory(tmp_path: Path, disk: int | None) -> None:
    config = MachineConfig(scratch_disk=disk, scratch_contents=tmp_path / "absent")
    with pytest.raises(UsageError):
        config.validate()
