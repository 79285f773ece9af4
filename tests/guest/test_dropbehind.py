"""Drop-behind: the mount list it watches, and the real fanotify watch on this machine's disk."""

from __future__ import annotations

import ctypes
import mmap
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmreclaim.errors import VmreclaimError
from vmreclaim.guest.dropbehind import DropBehind, disk_mounts
from vmreclaim.guest.observe import WrittenFile, WrittenOnce

MIB = 1 << 20
PAGE = mmap.PAGESIZE

# /proc/self/mounts of a Debian guest with a data disk, verbatim but for the escaped space.
MOUNTS = """\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
/dev/vda1 / ext4 rw,relatime,errors=remount-ro 0 0
tmpfs /run tmpfs rw,nosuid,nodev,size=201408k,mode=755 0 0
/dev/vdb /srv/pg\\040data xfs rw,relatime,attr2,inode64,logbufs=8,noquota 0 0
/dev/vdc /mnt/iso iso9660 ro,relatime 0 0
/dev/vdd /mnt/backup ext4 ro,relatime 0 0
usr /usr 9p ro,relatime,cache=loose,access=client,msize=262144,trans=virtio 0 0
"""


def test_it_watches_writable_disk_filesystems_only():
    assert disk_mounts(MOUNTS) == ["/", "/srv/pg data"]


# /proc/self/mountinfo of the agent under its unit (ProtectSystem=strict) in a Debian 12 guest,
# verbatim but for the escaped space: every mount read-only, the filesystems beneath writable
# but for the iso and the backup disk.
MOUNTINFO = """\
312 311 254:1 / / ro,relatime master:1 - ext4 /dev/vda1 rw,errors=remount-ro
313 312 0:22 / /sys ro,nosuid,nodev,noexec,relatime master:2 - sysfs sysfs rw
330 312 0:5 / /dev rw,nosuid master:8 - devtmpfs devtmpfs rw,size=4096k,mode=755
341 312 254:16 / /srv/pg\\040data ro,relatime master:30 - xfs /dev/vdb rw,attr2,inode64,noquota
342 312 11:0 / /mnt/iso ro,relatime master:31 - iso9660 /dev/vdc ro
343 312 254:48 / /mnt/backup ro,relatime master:32 - ext4 /dev/vdd ro
344 312 0:40 / /usr ro,relatime master:33 - 9p usr ro,cache=loose,access=client,trans=virtio
"""


def test_under_protect_system_it_goes_by_the_filesystem_not_the_mount():
    # The mounts in the service's namespace are all read-only; writes to the filesystems still
    # come through the system's mounts, and a filesystem mark sees them.
    assert disk_mounts(MOUNTINFO) == ["/", "/srv/pg data"]


def test_closed_before_counts_only_files_older_than_the_time():
    written = WrittenOnce(
        (WrittenFile(10.0, 64 * MIB), WrittenFile(15.0, 8 * MIB), WrittenFile(30.0, MIB)), ("/",)
    )
    assert written.closed_before(20.0) == (2, 72 * MIB)
    assert written.closed_before(5.0) == (0, 0)


def _resident_bytes(path: Path) -> int:
    """The file's pages in the page cache, by mincore(2) over a private mapping of it."""
    size = path.stat().st_size
    pages = (size + PAGE - 1) // PAGE
    vector = (ctypes.c_ubyte * pages)()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    # O_NOATIME: a mapping counts as a read (atime), which the watch would see.
    fd = os.open(path, os.O_RDONLY | os.O_NOATIME)
    try:
        mapped = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE)
    finally:
        os.close(fd)
    try:
        view = ctypes.c_char.from_buffer(mapped)  # only for its address: nothing is written
        assert libc.mincore(ctypes.addressof(view), size, vector) == 0
        del view
    finally:
        mapped.close()
    return sum(byte & 1 for byte in vector) * PAGE


@pytest.fixture
def watch(tmp_path: Path) -> Iterator[DropBehind]:
    if os.geteuid() != 0:
        pytest.skip("fanotify needs root")
    try:
        drop_behind = DropBehind()
    except VmreclaimError as err:
        pytest.skip(f"no fanotify watch here: {err.message}")
    with drop_behind:
        if not any(tmp_path.resolve().is_relative_to(point) for point in drop_behind.watched):
            pytest.skip(f"{tmp_path} is not on a watched disk filesystem")
        yield drop_behind


def _write(path: Path, size: int) -> None:
    with path.open("wb") as file:
        file.write(os.urandom(size))
        os.fsync(file.fileno())


def _tracked(watch: DropBehind, *paths: Path) -> WrittenOnce:
    """The watch's files once the events of writing `paths` are read."""
    time.sleep(0.1)
    return watch.poll(time.monotonic())


def test_a_file_written_and_not_read_is_dropped_and_a_file_read_back_keeps_its_cache(
    watch, tmp_path
):
    cold, hot = tmp_path / "backup.tar", tmp_path / "table"
    _write(cold, 8 * MIB)
    _write(hot, 8 * MIB)
    hot.read_bytes()  # read back: not cold
    sizes = [file.size_bytes for file in _tracked(watch, cold, hot).files]
    assert 8 * MIB in sizes
    assert sizes.count(8 * MIB) == 1
    assert _resident_bytes(cold) == 8 * MIB
    result = watch.drop(time.monotonic() + 1)
    assert result.files >= 1
    assert _resident_bytes(cold) == 0
    assert _resident_bytes(hot) == 8 * MIB


def test_a_file_too_young_is_kept_for_a_later_drop(watch, tmp_path):
    cold = tmp_path / "log.1"
    _write(cold, 4 * MIB)
    closed = _tracked(watch, cold).files[-1].closed_at
    assert watch.drop(closed).files == 0  # closed at, not before
    assert _resident_bytes(cold) == 4 * MIB
    assert watch.drop(closed + 1).files >= 1
    assert _resident_bytes(cold) == 0


def test_a_file_replaced_meanwhile_is_not_touched(watch, tmp_path):
    cold = tmp_path / "segment"
    _write(cold, 4 * MIB)
    _tracked(watch, cold)
    cold.unlink()
    replacement = tmp_path / "other"
    replacement.write_bytes(b"x" * 1000)  # too small to track
    replacement.rename(cold)
    result = watch.drop(time.monotonic() + 1)
    assert result.gone >= 1
    assert _resident_bytes(cold) == PAGE
