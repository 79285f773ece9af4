"""Files written, closed and not read since: page cache known to be cold.

A backup, a log shipper, a compiler's final output or a database's append-only history write
files once and never read them again. The kernel cannot tell their pages from a hot file's on the
inactive list; the agent can, by watching closes after writing and reads (see
vmreclaim.guest.dropbehind, which fills this record each tick).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class WrittenFile(NamedTuple):
    closed_at: float  # when it was last closed after writing, on the agent's clock
    size_bytes: int  # its size then: an upper bound on its page cache


@dataclass(frozen=True)
class WrittenOnce:
    """Files closed after writing and not read since, oldest first.

    watched: the filesystems watched (mount points); the page cache of others is not known.
    overflowed: the kernel's event queue overflowed since the start, so some closes were missed.
    """

    files: tuple[WrittenFile, ...]
    watched: tuple[str, ...]
    overflowed: bool = False

    @property
    def size_bytes(self) -> int:
        return sum(file.size_bytes for file in self.files)

    def closed_before(self, timestamp: float) -> tuple[int, int]:
        """(files, bytes) of those closed before `timestamp` and not read since."""
        old = [file.size_bytes for file in self.files if file.closed_at < timestamp]
        return len(old), sum(old)
