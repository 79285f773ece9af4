"""Sampling a running lab guest from the host: its footprint at `rate` Hz and, through the
balloon's statistics over QMP, how much memory the guest really needs (its RAM minus what it
reports available) once a second. Runs in a thread owned by a context manager."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

from vmreclaim.errors import VmreclaimError
from vmreclaim.lab.machine import VirtualMachine
from vmreclaim.lab.measure import guest_ram
from vmreclaim.lab.qemu_command import BALLOON_ID

log = logging.getLogger(__name__)
_BALLOON = f"/machine/peripheral/{BALLOON_ID}"


@dataclass(frozen=True)
class Sample:
    seconds: float
    """Since the recording started."""
    guest_ram_bytes: int
    rss_bytes: int


@dataclass(frozen=True)
class NeedSample:
    seconds: float
    needed_bytes: int
    """The guest's RAM minus MemAvailable as its balloon driver reports it. Not MemTotal minus
    MemAvailable: what the kernel reserves at boot (its page structs, its own image: 83 MiB of
    a 2 GiB lab guest) is outside MemTotal, yet needed; leaving it out counted the ~50 MiB of it
    that is resident as excess in every contender, at rest too. Part of it is never touched,
    so this line is an upper bound on the need."""


@dataclass
class Recording:
    samples: list[Sample] = field(default_factory=list)
    needs: list[NeedSample] = field(default_factory=list)
    phases: list[tuple[str, float]] = field(default_factory=list)


class Recorder:
    """`with Recorder(vm) as recording: ...` samples until the block ends."""

    def __init__(self, vm: VirtualMachine, rate: float = 4.0) -> None:
        self.vm = vm
        self.interval = 1.0 / rate
        self.recording = Recording()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-recorder", daemon=True)
        self._started = 0.0

    def now(self) -> float:
        return time.monotonic() - self._started

    def mark(self, phase: str) -> None:
        self.recording.phases.append((phase, self.now()))

    def __enter__(self) -> Recording:
        # The balloon driver sends statistics only when asked to poll them.
        self.vm.qmp.execute(
            "qom-set",
            {"path": _BALLOON, "property": "guest-stats-polling-interval", "value": 1},
        )
        self._started = time.monotonic()
        self._thread.start()
        return self.recording

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(10)

    def _need(self) -> int | None:
        answer = self.vm.qmp.execute("qom-get", {"path": _BALLOON, "property": "guest-stats"})
        available = answer.get("stats", {}).get("stat-available-memory", -1)
        if available < 0:
            return None
        return max(0, self.vm.config.memory - int(available))

    def _run(self) -> None:
        next_need = 0.0
        while not self._stop.is_set():
            now = self.now()
            try:
                sample = self.vm.footprint()
                self.recording.samples.append(Sample(now, guest_ram(sample), sample.rss_bytes))
                if now >= next_need:
                    next_need = now + 1.0
                    needed = self._need()
                    if needed is not None:
                        self.recording.needs.append(NeedSample(now, needed))
            except (VmreclaimError, ProcessLookupError) as err:
                log.warning("sampling stopped: %s", err)
                return
            self._stop.wait(max(0.0, self.interval - (self.now() - now)))
