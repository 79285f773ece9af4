"""The host end of the command channel, against a fake guest on a real socket pair that speaks
the protocol of guest-init.sh."""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from vmreclaim.errors import ChannelError, GuestCommandTimeout
from vmreclaim.lab import channel as channel_module
from vmreclaim.lab.channel import CommandChannel

Behaviour = Callable[[str, int], "tuple[int, bytes, bytes] | None"]


class FakeGuest:
    """Greets, then answers each RUN with what `behaviour(script, limit)` returns; None means
    never answer, and the guest goes silent."""

    def __init__(self, sock: socket.socket, behaviour: Behaviour) -> None:
        self.sock = sock
        self.behaviour = behaviour
        self.requests: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.sendall(b"VMREADY 6.1.0-56-amd64\n")
        with self.sock.makefile("rb") as requests:
            for line in requests:
                verb, request_id, limit, payload = line.decode().split()
                assert verb == "RUN"
                script = base64.b64decode(payload).decode()
                self.requests.append(script)
                answer = self.behaviour(script, int(limit))
                if answer is None:
                    return
                code, out, err = answer
                self.sock.sendall(f"DONE {request_id} {code} {len(out)} {len(err)}\n".encode())
                self.sock.sendall(out + err)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    host, guest = socket.socketpair()
    yield host, guest
    host.close()
    guest.close()


def _echo(script: str, limit: int) -> tuple[int, bytes, bytes]:
    return 3, f"ran {script}\n".encode(), b"to stderr\n"


def test_greeting_gives_the_guest_kernel_release(pair) -> None:
    host, guest = pair
    FakeGuest(guest, _echo)
    assert CommandChannel(host).wait_ready(5) == "6.1.0-56-amd64"


def test_exit_code_stdout_and_stderr_come_back_apart(pair) -> None:
    host, guest = pair
    FakeGuest(guest, _echo)
    channel = CommandChannel(host)
    channel.wait_ready(5)
    result = channel.run("echo hi", timeout=10)
    assert (result.exit_code, result.stdout, result.stderr) == (3, b"ran echo hi\n", b"to stderr\n")


def test_large_binary_output_arrives_whole(pair) -> None:
    host, guest = pair
    blob = bytes(range(256)) * 8192  # 2 MiB with every byte value, newlines included
    FakeGuest(guest, lambda script, limit: (0, blob, b""))
    channel = CommandChannel(host)
    channel.wait_ready(5)
    assert channel.run("cat blob", timeout=10).stdout == blob


def test_scripts_travel_intact(pair) -> None:
    host, guest = pair
    fake = FakeGuest(guest, _echo)
    channel = CommandChannel(host)
    channel.wait_ready(5)
    script = "printf '%s\\n' \"$HOME\" 'a b' && echo 'ünïcode'\nexit 0"
    channel.run(script, timeout=10)
    assert fake.requests == [script]


def test_a_command_killed_at_its_timeout_raises(pair) -> None:
    host, guest = pair

    def killed(script: str, limit: int) -> tuple[int, bytes, bytes]:
        time.sleep(limit)
        return 137, b"", b""

    FakeGuest(guest, killed)
    channel = CommandChannel(host)
    channel.wait_ready(5)
    with pytest.raises(GuestCommandTimeout):
        channel.run("sleep 100", timeout=1)


def test_a_silent_guest_breaks_the_channel(pair, monkeypatch) -> None:
    monkeypatch.setattr(channel_module, "_GRACE_SECONDS", 0.3)
    host, guest = pair
    FakeGuest(guest, lambda script, limit: None)
    channel = CommandChannel(host)
    channel.wait_ready(5)
    with pytest.raises(ChannelError, match="did not answer"):
        channel.run("hang", timeout=1)
    with pytest.raises(ChannelError, match="unusable"):
        channel.run("true", timeout=1)


def test_a_guest_that_hangs_up_is_reported(pair) -> None:
    host, guest = pair
    channel = CommandChannel(host)
    guest.sendall(b"VMREADY x\n")
    channel.wait_ready(5)
    guest.close()
    with pytest.raises(ChannelError, match="closed"):
        channel.run("true", timeout=5)


def test_no_greeting_within_the_boot_timeout(pair) -> None:
    host, _guest = pair
    with pytest.raises(ChannelError, match="did not come up"):
        CommandChannel(host).wait_ready(0.2)
