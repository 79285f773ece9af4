"""The host's end of a lab guest's agent port (MachineConfig.agent_port), read in tests."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

from vmreclaim.agent_protocol import AgentReport, ReleaseAnswer, parse_guest_message


def agent_messages(host: socket.socket, seconds: float) -> Iterator[AgentReport | ReleaseAnswer]:
    """The agent's messages on the host's end of its port, for at most `seconds`."""
    deadline = time.monotonic() + seconds
    pending = b""
    while time.monotonic() < deadline:
        host.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            data = host.recv(4096)
        except TimeoutError:
            return
        if not data:
            return
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                yield parse_guest_message(line)
