"""Drop-behind: return the page cache of files written once and not read since.

The kernel puts a file's freshly written pages on the inactive list beside everything else read
once, and memory.reclaim takes that list's oldest pages, which may be a hot file's. Files that are
written, closed and never read again (a backup, a log shipper's output, a build's final product,
a database's append-only history) are cold for certain. fanotify (Linux 2.6.37+; whole
filesystems with FAN_MARK_FILESYSTEM since 4.20) tells the agent of each close after writing; an
inode mark on that file then tells it of the first read. A file still unread after the policy's
minimum age has its clean pages dropped with posix_fadvise(POSIX_FADV_DONTNEED), after its dirty
pages are written out with sync_file_range(2): exactly those pages, and no one else's.

What it does not see: files written through mmap and never closed, writes to filesystems mounted
after the agent started or not in DISK_FILESYSTEMS (tmpfs pages are memory, not cache), and reads
through mmap (faults raise no FAN_ACCESS). The last is harmless: fadvise never drops a mapped page.
fanotify needs CAP_SYS_ADMIN: the agent runs as root.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import stat as stat_mode
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from vmreclaim.errors import VmreclaimError
from vmreclaim.guest.observe.written import WrittenFile, WrittenOnce

log = logging.getLogger(__name__)

# <linux/fanotify.h>
FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_CLASS_NOTIF = 0x0
FAN_ACCESS = 0x1
FAN_CLOSE_WRITE = 0x8
FAN_Q_OVERFLOW = 0x4000
FAN_MARK_ADD = 0x1
FAN_MARK_REMOVE = 0x2
FAN_MARK_MOUNT = 0x10
FAN_MARK_FILESYSTEM = 0x100
FAN_NOFD = -1
FANOTIFY_METADATA_VERSION = 3
# struct fanotify_event_metadata: event_len, vers, reserved, metadata_len, mask, fd, pid.
_METADATA = struct.Struct("=IBBHQii")
# <fcntl.h>: write out the range's dirty pages and wait for them.
_SYNC_FILE_RANGE_ALL = 0x1 | 0x2 | 0x4  # WAIT_BEFORE | WRITE | WAIT_AFTER
_AT_FDCWD = -100

# Filesystems whose pages are page cache that can be dropped and read back from a disk.
DISK_FILESYSTEMS = frozenset(
    [
        "ext2",
        "ext3",
        "ext4",
        "xfs",
        "btrfs",
        "f2fs",
        "jfs",
        "reiserfs",
        "nilfs2",
        "bcachefs",
        "vfat",
        "exfat",
        "ntfs3",
        "virtiofs",
    ]
)
# The table's bound: each tracked file pins an inode mark in the kernel (a few hundred bytes).
MAX_TRACKED_FILES = 16384
# Files smaller than this are not tracked: their cache is not worth a mark and a syscall.
MIN_FILE_BYTES = 64 << 10


class _Tracked(NamedTuple):
    path: str
    size_bytes: int
    closed_at: float
    modified_ns: int  # st_mtime_ns at the close: a file modified or replaced since is not it


def _read_since_written(stat: os.stat_result) -> bool:
    """Whether the file was read after its last write, by its access time: under relatime (the
    default) and strictatime the first read after a write moves atime past mtime. Reads the
    fanotify watch cannot see (before its mark was placed) are caught this way; under noatime
    this says False and the watch alone decides."""
    return stat.st_atime_ns > stat.st_mtime_ns


FileKey = tuple[int, int]  # (st_dev, st_ino)


@dataclass(frozen=True)
class DropResult:
    files: int  # files whose cache was dropped
    bytes: int  # their sizes: an upper bound on what left the cache
    gone: int  # tracked files deleted, replaced, modified or found read meanwhile
    elapsed_s: float
    stop: str  # "done" or "time-limit"


def _unescape(field: str) -> str:
    r"""/proc/self/mounts and mountinfo write space, tab, newline and backslash as \040, \011,
    \012, \134."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def disk_mounts(mounts_text: str) -> list[str]:
    """Mount points of writable disk filesystems, in order, from /proc/self/mountinfo text (or
    /proc/self/mounts text, without one).

    Writable is the filesystem's (mountinfo's super options, after the "-"), not the mount's:
    under systemd's ProtectSystem=strict, as in the agent's unit, every mount in the service's
    namespace is read-only while the filesystem beneath takes writes through the system's own
    mounts, and a FAN_MARK_FILESYSTEM mark sees those (seen under systemd 252: with the
    mount's flag, drop-behind found nothing to watch)."""
    points = []
    for line in mounts_text.splitlines():
        before, separator, after = line.partition(" - ")
        if (
            separator
        ):  # mountinfo: ID PARENT MAJ:MIN ROOT POINT OPTIONS [TAGS...] - TYPE SOURCE SUPER
            fields, tail = before.split(), after.split()
            if len(fields) < 5 or len(tail) < 3:
                continue
            point, kind, options = fields[4], tail[0], tail[2]
        else:  # mounts: SOURCE POINT TYPE OPTIONS ...
            fields = line.split()
            if len(fields) < 4:
                continue
            point, kind, options = fields[1], fields[2], fields[3]
        if kind not in DISK_FILESYSTEMS or "ro" in options.split(","):
            continue
        points.append(_unescape(point))
    return points


class _Fanotify:
    """The two system calls through ctypes (the guest side imports the standard library only)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            self._init = libc.fanotify_init
            self._mark = libc.fanotify_mark
            self._sync_range = libc.sync_file_range
        except AttributeError as err:
            raise VmreclaimError(
                "this C library has no fanotify", hint="drop-behind needs glibc or musl on Linux"
            ) from err
        self._init.argtypes = [ctypes.c_uint, ctypes.c_uint]
        self._mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64]
        self._mark.argtypes += [ctypes.c_int, ctypes.c_char_p]
        self._sync_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]

    def init(self) -> int:
        flags = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_LARGEFILE", 0)
        fd = int(self._init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK, flags))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"fanotify_init: {os.strerror(err)}")
        return fd

    def mark(self, group: int, flags: int, mask: int, dirfd: int, path: str | None) -> None:
        encoded = None if path is None else os.fsencode(path)
        if self._mark(group, flags, mask, dirfd, encoded) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"fanotify_mark: {os.strerror(err)}", path)

    def sync_range(self, fd: int) -> None:
        if self._sync_range(fd, 0, 0, _SYNC_FILE_RANGE_ALL) < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))


class DropBehind:
    """A fanotify watch over the disk filesystems, and the table of files written once.

    A context manager: the fanotify descriptor, and with it every mark, is released on exit.
    """

    def __init__(self, root: Path = Path("/")) -> None:
        self._root = root
        self._api = _Fanotify()
        try:
            self._group = self._api.init()
        except OSError as err:
            hint = {
                errno.EPERM: "run the agent as root (fanotify needs CAP_SYS_ADMIN)",
                errno.ENOSYS: "this kernel lacks CONFIG_FANOTIFY",
            }.get(err.errno or 0, "")
            raise VmreclaimError(f"cannot watch file writes: {err.strerror}", hint=hint) from err
        # In the order of their last close: a file closed again moves to the end.
        self._files: dict[FileKey, _Tracked] = {}
        self._overflowed = False
        try:
            self.watched = self._watch_disks()
        except BaseException:
            os.close(self._group)
            raise

    def __enter__(self) -> DropBehind:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._group >= 0:
            os.close(self._group)
            self._group = -1

    def _watch_disks(self) -> tuple[str, ...]:
        try:
            info = self._root / "proc/self/mountinfo"
            mounts = (info if info.exists() else self._root / "proc/self/mounts").read_text(
                errors="replace"
            )
        except OSError as err:
            raise VmreclaimError(
                f"cannot read the mounts: {err.strerror}", hint="mount /proc"
            ) from err
        watched: list[str] = []
        devices: set[int] = set()
        for point in disk_mounts(mounts):
            path = str(self._root / point.lstrip("/"))
            try:
                device = os.stat(path).st_dev
                if device in devices:
                    continue
                self._mark_filesystem(path)
            except OSError as err:
                log.info("drop-behind: not watching %s: %s", point, err.strerror)
                continue
            devices.add(device)
            watched.append(point)
        if not watched:
            raise VmreclaimError(
                "no writable disk filesystem to watch",
                hint=f"drop-behind watches {', '.join(sorted(DISK_FILESYSTEMS))}",
            )
        return tuple(watched)

    def _mark_filesystem(self, path: str) -> None:
        try:
            self._api.mark(
                self._group, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, FAN_CLOSE_WRITE, _AT_FDCWD, path
            )
        except OSError as err:
            if err.errno != errno.EINVAL:
                raise
            # Before 4.20: the mount, which misses writes through its other mounts.
            self._api.mark(
                self._group, FAN_MARK_ADD | FAN_MARK_MOUNT, FAN_CLOSE_WRITE, _AT_FDCWD, path
            )

    def poll(self, now: float) -> WrittenOnce:
        """Read the queued events: closes after writing start (or restart) a file's clock, a
        read ends its tracking. `now` stamps the closes (events carry no time)."""
        while True:
            try:
                buffer = os.read(self._group, 64 * 1024)
            except BlockingIOError:
                break
            if not buffer:
                break
            self._handle(buffer, now)
        files = tuple(WrittenFile(file.closed_at, file.size_bytes) for file in self._files.values())
        return WrittenOnce(files, self.watched, self._overflowed)

    def _handle(self, buffer: bytes, now: float) -> None:
        offset = 0
        while offset + _METADATA.size <= len(buffer):
            length, version, _, _, mask, fd, _ = _METADATA.unpack_from(buffer, offset)
            if version != FANOTIFY_METADATA_VERSION or length < _METADATA.size:
                log.warning("drop-behind: unknown fanotify event format %d", version)
                if fd >= 0:
                    os.close(fd)
                return
            offset += length
            if mask & FAN_Q_OVERFLOW:
                self._overflowed = True
            if fd == FAN_NOFD or fd < 0:
                continue
            try:
                self._event(mask, fd, now)
            except OSError as err:
                log.debug("drop-behind: event %#x skipped: %s", mask, err)
            finally:
                os.close(fd)

    def _event(self, mask: int, fd: int, now: float) -> None:
        stat = os.fstat(fd)
        key = (stat.st_dev, stat.st_ino)
        if mask & FAN_ACCESS:
            # Read since it was written: not cold. Its mark goes, so later reads cost nothing.
            self._files.pop(key, None)
            self._api.mark(self._group, FAN_MARK_REMOVE, FAN_ACCESS, fd, None)
        elif mask & FAN_CLOSE_WRITE:
            if not stat_mode.S_ISREG(stat.st_mode) or stat.st_size < MIN_FILE_BYTES:
                return
            if _read_since_written(stat):  # read before this event was handled
                self._files.pop(key, None)
                return
            if key not in self._files and len(self._files) >= MAX_TRACKED_FILES:
                log.debug("drop-behind: %d files tracked already, not this one", len(self._files))
                return
            path = os.readlink(f"/proc/self/fd/{fd}")
            self._api.mark(self._group, FAN_MARK_ADD, FAN_ACCESS, fd, None)
            self._files.pop(key, None)  # closed again: to the end, where the newest are
            self._files[key] = _Tracked(path, stat.st_size, now, stat.st_mtime_ns)

    def drop(
        self,
        closed_before: float,
        *,
        time_limit_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> DropResult:
        """Drop the cache of every file closed before `closed_before` and not read since, oldest
        first, until `time_limit_s` has passed (the rest waits for the next call)."""
        start = clock()
        files = dropped = gone = 0
        stop = "done"
        due = [item for item in self._files.items() if item[1].closed_at < closed_before]
        for key, file in due:
            if clock() - start >= time_limit_s:
                stop = "time-limit"
                break
            del self._files[key]
            if self._drop_file(key, file):
                files += 1
                dropped += file.size_bytes
            else:
                gone += 1
        return DropResult(files, dropped, gone, clock() - start, stop)

    def _drop_file(self, key: FileKey, file: _Tracked) -> bool:
        """Write out and drop one file's cache; False if it is no longer the file we saw (gone,
        replaced, modified since its close) or it was read after all."""
        try:
            fd = os.open(file.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return False
        try:
            stat = os.fstat(fd)
            if (stat.st_dev, stat.st_ino) != key or stat.st_mtime_ns != file.modified_ns:
                return False
            if _read_since_written(stat):
                return False
            try:
                self._api.sync_range(fd)
            except OSError as err:  # not every filesystem has it: fadvise still drops the clean
                log.debug("drop-behind: %s: sync_file_range: %s", file.path, err.strerror)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            # Without a mark (an earlier read's event took it) there is nothing to remove.
            with contextlib.suppress(OSError):
                self._api.mark(self._group, FAN_MARK_REMOVE, FAN_ACCESS, fd, None)
            return True
        except OSError as err:
            log.debug("drop-behind: %s: %s", file.path, err)
            return False
        finally:
            os.close(fd)
