"""A minimal writer of the kernel's initramfs format (cpio "newc"), so building a guest image
needs no cpio tool and gives the same bytes for the same inputs."""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

_MAGIC = b"070701"


@dataclass(frozen=True)
class Entry:
    """One file, directory or symlink of the archive. `data` is the link target for symlinks."""

    path: str
    mode: int
    data: bytes = b""


def directory(path: str) -> Entry:
    return Entry(path, stat.S_IFDIR | 0o755)


def regular(path: str, data: bytes, executable: bool = False) -> Entry:
    return Entry(path, stat.S_IFREG | (0o755 if executable else 0o644), data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _header(inode: int, entry: Entry, nlink: int) -> bytes:
    name = entry.path.encode() + b"\0"
    # Fields: ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor
    # namesize check; all owned by root, mtime 0 for reproducible archives.
    fields = (inode, entry.mode, 0, 0, nlink, 0, len(entry.data), 0, 0, 0, 0, len(name), 0)
    header = _MAGIC + b"".join(b"%08X" % value for value in fields) + name
    return header + _pad(len(header))


def write_newc(out: BinaryIO, entries: Iterable[Entry]) -> None:
    inode = 0
    for inode, entry in enumerate(entries, start=1):
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        out.write(_header(inode, entry, nlink))
        out.write(entry.data + _pad(len(entry.data)))
    out.write(_header(inode + 1, Entry("TRAILER!!!", 0), 1))
