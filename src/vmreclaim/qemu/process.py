"""What every process vmreclaim starts gets: a death signal tied to its parent."""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """For `preexec_fn`: runs in the child between fork and exec, so the kernel sends `sig`
    to the child when the thread that started it dies, even by SIGKILL. A QEMU that outlives
    its owner keeps its memory and its disk image locks (it happened here)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig)
