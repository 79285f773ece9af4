"""The messages between a guest agent and `host run`: one JSON object per line, UTF-8.

Standard library only: the guest agent writes these (guest/hostport.py) and the host reads them
(host/agents.py). Nothing here does I/O, so the same code runs over any byte stream: a
virtio-serial port (the guest writes /dev/virtio-ports/PORT_NAME, QEMU carries it to a unix
socket on the host), or an AF_VSOCK stream to VSOCK_PORT of the host (Cloud Hypervisor and
Firecracker carry it to the unix socket `<uds_path>_VSOCK_PORT` on the host).

Why lines and not length-prefixed frames: a virtio-serial port is a byte pipe that outlives
the host's end. When `host run` connects to a port the guest has been writing to, or a write
was cut short, the stream starts or continues in the middle of a message. A newline resyncs
it: the torn line fails to parse, is counted and dropped, and the next line is whole. With a
length prefix a single lost byte turns every following length into garbage. JSON keeps the
messages readable with `socat` and lets later versions add keys that older hosts ignore.

The guest is not trusted: `LineSplitter` never holds more than MAX_MESSAGE_BYTES of one line
(a longer one is skipped up to its newline without being kept), and `parse_report` accepts
only known keys of the right type and range (unknown keys are ignored) and strings from a
small alphabet, so nothing the guest sends can reach a terminal, a log or a Prometheus label
as markup or control characters.

Host to guest, the other way on the same port: a `request` asks the agent to release cold
cache (an amount and a deadline); the agent answers with an `answer` of the same id, saying
what it released or, as one short word, why it refused. The guest parses requests with the
same bounds (the guest does not trust the host's bytes either), and the host parses a line
from the guest as a report or an answer (`parse_guest_message`). A request can only ask: the
guest decides what it gives, and the host judges what came back by its own measures.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

PORT_NAME = "org.vmreclaim.agent.0"
"""The virtio-serial port's name: the guest finds it as /dev/virtio-ports/PORT_NAME (udev),
or by /sys/class/virtio-ports/*/name without udev."""

VSOCK_PORT = 0x766D
"""The vsock port the agent connects to on the host (CID 2) where there is no such port: 30317,
"vm" in ASCII. A vsock port is 32 bits and nobody registers them; this one is clear of the
small numbers the VMMs' own examples use (52, 1234), and it is fixed because it is the
decimal suffix of the unix socket the host listens on: a guest connection to port P arrives
at `<uds_path>_P` (Firecracker and Cloud Hypervisor, docs/vsock.md, "guest-initiated
connections"), here /run/vms/vm1.vsock_30317."""

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 4096
"""The longest line, newline excluded. A report takes about 300 bytes."""

MAX_AMOUNT_BYTES = 1 << 50
"""The largest amount of memory a message may state (1 PiB): no VM has more."""
MAX_SEQUENCE = (1 << 63) - 1
MAX_SECONDS = 10.0**9
ACTIONS = ("none", "reclaim", "drop_caches", "drop_behind", "compact", "split_huge_pages")
"""What `last_action` may name: the guest agent's kinds of action (textfile.ACTIONS), or none
since it started."""

_WORD = re.compile(r"[A-Za-z0-9._+-]{1,64}")

# Reasons a message is dropped, as the host counts them.
TOO_LONG = "too_long"
NOT_JSON = "not_json"
INVALID = "invalid"
RATE_LIMITED = "rate_limited"
DROP_REASONS = (TOO_LONG, NOT_JSON, INVALID, RATE_LIMITED)


REFUSALS = (
    "memory_pressure",
    "within_floor",
    "cannot_reclaim",
    "no_figures",
    "reclaim_failed",
)
"""Why an agent refuses a request, as this agent says it. The host accepts any short word (a
newer agent may have other reasons) but counts only these by name."""


class BadMessage(ValueError):
    """A line that is not a valid message; `reason` is one of DROP_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class AgentReport:
    """What the agent says after a tick. Amounts are bytes; None when it does not know."""

    seq: int
    """Counts up by one per report the agent made, delivered or not: gaps are drops."""
    version: str
    policy: str
    interval_s: float
    """Seconds between the agent's ticks, hence between its reports."""
    reclaimable_bytes: int | None
    """What the agent would give if asked: its cold cache, reclaimable cache above its floor
    and off the active list (guest.release.cold_bytes)."""
    cache_bytes: int | None
    """Reclaimable page cache (Active(file) + Inactive(file) + SReclaimable)."""
    floor_bytes: int | None
    """The reclaimable cache its policy keeps (None: the policy has no floor)."""
    refaulted_bytes: int | None
    """Page cache read back soon after it was reclaimed, since the guest booted."""
    last_action: str
    """One of ACTIONS."""
    last_action_age_s: float | None
    """Seconds since that action; None for "none"."""


def encode_report(report: AgentReport) -> bytes:
    """The report as one line, newline included."""
    message = {
        "type": "report",
        "v": PROTOCOL_VERSION,
        "seq": report.seq,
        "version": report.version,
        "policy": report.policy,
        "interval_s": report.interval_s,
        "reclaimable_bytes": report.reclaimable_bytes,
        "cache_bytes": report.cache_bytes,
        "floor_bytes": report.floor_bytes,
        "refaulted_bytes": report.refaulted_bytes,
        "last_action": report.last_action,
        "last_action_age_s": report.last_action_age_s,
    }
    return _line(message)


@dataclass(frozen=True)
class ReleaseRequest:
    """The host asks the agent to release `release_bytes` of cold cache within `deadline_s`."""

    id: int
    """Counts up per request on one channel: the answer names it."""
    release_bytes: int
    deadline_s: float
    """Seconds from sending after which the host stops waiting and inflates the balloon."""


@dataclass(frozen=True)
class ReleaseAnswer:
    """The agent's answer to request `id`: what it released, or why it refused ("" if not).
    The guest's word: the host never gives memory on it."""

    id: int
    released_bytes: int
    refused: str


def encode_request(request: ReleaseRequest) -> bytes:
    """The request as one line, newline included."""
    message = {
        "type": "request",
        "v": PROTOCOL_VERSION,
        "id": request.id,
        "release_bytes": request.release_bytes,
        "deadline_s": request.deadline_s,
    }
    return _line(message)


def encode_answer(answer: ReleaseAnswer) -> bytes:
    """The answer as one line, newline included."""
    message = {
        "type": "answer",
        "v": PROTOCOL_VERSION,
        "id": answer.id,
        "released_bytes": answer.released_bytes,
        "refused": answer.refused,
    }
    return _line(message)


def _line(message: dict[str, object]) -> bytes:
    """One message as compact JSON on one line, newline included."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def _load(line: bytes, kinds: tuple[str, ...]) -> tuple[str, _Fields]:
    """(type, its fields) of a message of one of `kinds` from one line. Raises BadMessage."""
    if len(line) > MAX_MESSAGE_BYTES:
        raise BadMessage(TOO_LONG, f"{len(line)} bytes")
    try:
        message = json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        # ValueError covers JSONDecodeError, NaN and Infinity, and ints too long to convert.
        raise BadMessage(NOT_JSON, type(err).__name__) from err
    if not isinstance(message, dict):
        raise BadMessage(INVALID, "not an object")
    kind = message.get("type")
    if kind not in kinds:
        raise BadMessage(INVALID, f"not a {' or '.join(kinds)}")
    if message.get("v") != PROTOCOL_VERSION or isinstance(message.get("v"), bool):
        raise BadMessage(INVALID, "unknown protocol version")
    return kind, _Fields(message)


def parse_report(line: bytes) -> AgentReport:
    """A report from one line (without its newline). Raises BadMessage."""
    return _report(_load(line, ("report",))[1])


def parse_guest_message(line: bytes) -> AgentReport | ReleaseAnswer:
    """What the host reads from a guest: a report or an answer. Raises BadMessage."""
    kind, fields = _load(line, ("report", "answer"))
    return _report(fields) if kind == "report" else _answer(fields)


def parse_request(line: bytes) -> ReleaseRequest:
    """What the guest reads from the host: a request. Raises BadMessage."""
    fields = _load(line, ("request",))[1]
    return ReleaseRequest(
        id=fields.integer("id", MAX_SEQUENCE),
        release_bytes=fields.integer("release_bytes", MAX_AMOUNT_BYTES),
        deadline_s=fields.seconds("deadline_s"),
    )


def _answer(fields: _Fields) -> ReleaseAnswer:
    refused = fields.word("refused", empty=True)
    return ReleaseAnswer(
        id=fields.integer("id", MAX_SEQUENCE),
        released_bytes=fields.integer("released_bytes", MAX_AMOUNT_BYTES),
        refused=refused,
    )


def _report(fields: _Fields) -> AgentReport:
    last_action = fields.word("last_action")
    if last_action not in ACTIONS:
        raise BadMessage(INVALID, "last_action: unknown action")
    return AgentReport(
        seq=fields.integer("seq", MAX_SEQUENCE),
        version=fields.word("version"),
        policy=fields.word("policy"),
        interval_s=fields.seconds("interval_s"),
        reclaimable_bytes=fields.amount("reclaimable_bytes"),
        cache_bytes=fields.amount("cache_bytes"),
        floor_bytes=fields.amount("floor_bytes"),
        refaulted_bytes=fields.amount("refaulted_bytes"),
        last_action=last_action,
        last_action_age_s=fields.seconds("last_action_age_s", optional=True),
    )


class _Fields:
    """Typed access to a message's keys; every problem is a BadMessage naming the key."""

    def __init__(self, message: dict[str, Any]) -> None:
        self._message = message

    def _get(self, key: str, optional: bool) -> Any:
        if key not in self._message:
            if optional:
                return None
            raise BadMessage(INVALID, f"{key}: missing")
        return self._message[key]

    def integer(self, key: str, high: int, optional: bool = False) -> Any:
        value = self._get(key, optional)
        if value is None and optional:
            return None
        if type(value) is not int or not 0 <= value <= high:
            raise BadMessage(INVALID, f"{key}: not a whole number from 0 to {high}")
        return value

    def amount(self, key: str) -> int | None:
        value: int | None = self.integer(key, MAX_AMOUNT_BYTES, optional=True)
        return value

    def seconds(self, key: str, optional: bool = False) -> Any:
        value = self._get(key, optional)
        if value is None and optional:
            return None
        if type(value) not in (int, float) or not (
            math.isfinite(value) and 0 <= value <= MAX_SECONDS
        ):
            raise BadMessage(INVALID, f"{key}: not a number of seconds")
        return float(value)

    def word(self, key: str, empty: bool = False) -> str:
        value = self._get(key, optional=False)
        if empty and value == "":
            return ""
        if not isinstance(value, str) or not _WORD.fullmatch(value):
            raise BadMessage(INVALID, f"{key}: not a short word")
        return value


class LineSplitter:
    """Cuts a byte stream into lines of at most `max_line` bytes, holding no more than that.

    A longer line is counted once and skipped up to its newline: its bytes are never kept.
    """

    def __init__(self, max_line: int = MAX_MESSAGE_BYTES) -> None:
        self.max_line = max_line
        self._partial = bytearray()
        self._skipping = False

    @property
    def held_bytes(self) -> int:
        return len(self._partial)

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        """(the lines `data` completes, without newlines; how many lines were too long)."""
        lines: list[bytes] = []
        too_long = 0
        start = 0
        while start <= len(data):
            end = data.find(b"\n", start)
            piece = data[start:] if end < 0 else data[start:end]
            if not self._skipping:
                if len(self._partial) + len(piece) > self.max_line:
                    self._partial.clear()
                    self._skipping = True
                    too_long += 1
                else:
                    self._partial += piece
            if end < 0:
                break
            if not self._skipping:
                lines.append(bytes(self._partial))
            self._partial.clear()
            self._skipping = False
            start = end + 1
        return lines, too_long
