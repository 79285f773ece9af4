"""The fleet: many VMs at once, one hung among them, stopped cleanly."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from vmreclaim.host.backends.qemu import QemuVm
from vmreclaim.host.fleet import Fleet, FleetPoll
from vmreclaim.host.records import VmSample

from .fake_qmp import FakeQemu


class SlowToCancel:
    """A backend whose connect never ends and takes half a second to unwind when cancelled,
    as a connect that closes its socket and its QMP session does."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.name = address

    async def connect(self) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.5)
            raise

    async def sample(self) -> VmSample:
        raise AssertionError("never connected")

    async def set_balloon_target(self, guest_bytes: int) -> None:
        raise AssertionError("never connected")

    async def close(self) -> None:
        """Nothing to release."""


def test_closing_the_fleet_can_itself_be_cancelled() -> None:
    # The daemon stops by cancellation (Ctrl-C, SIGTERM): a fleet that swallowed it while
    # forgetting a connect would keep the daemon running.
    async def scenario() -> asyncio.Task[None]:
        fleet = Fleet(["/run/vm.qmp"], SlowToCancel)
        await fleet.poll()  # starts the connect in the background
        closing = asyncio.create_task(fleet.close())
        await asyncio.sleep(0.1)
        closing.cancel()
        await asyncio.wait([closing])
        return closing

    assert asyncio.run(scenario()).cancelled()


def test_a_hung_vm_is_reported_hung_without_delaying_the_others(tmp_path: Path) -> None:
    silent = socket.socket(socket.AF_UNIX)  # accepts (in the backlog) and never answers
    silent.bind(str(tmp_path / "hung.qmp"))
    silent.listen(1)

    async def scenario() -> tuple[FleetPoll, float]:
        fleet = Fleet([str(tmp_path / "*.qmp")], lambda address: QemuVm(address, timeout=0.3))
        async with FakeQemu(tmp_path / "good.qmp"):
            started = time.monotonic()
            await fleet.connect_all()
            poll = await fleet.poll()
            elapsed = time.monotonic() - started
        await fleet.close()
        return poll, elapsed

    try:
        poll, elapsed = asyncio.run(scenario())
    finally:
        silent.close()
    assert elapsed < 1.0
    (good,) = poll.vms
    assert good.sample.name == "fake-vm"
    assert good.sample.guest is not None
    (hung,) = poll.unreachable
    assert hung.address == str(tmp_path / "hung.qmp")
    assert hung.hung
    assert not hung.connecting  # it was tried and failed: top --once does not wait for it
    assert "no answer within 0.3 s to the QMP greeting" in hung.error


class SlowBalloon:
    """A backend whose balloon call takes `seconds` (a VM that hangs until its bound)."""

    def __init__(self, address: str, seconds: float, done: list[str]) -> None:
        self.address = address
        self.name = address
        self._seconds = seconds
        self._done = done

    async def set_balloon_target(self, guest_bytes: int) -> None:
        await asyncio.sleep(self._seconds)
        self._done.append(self.address)


def test_one_slow_balloon_call_does_not_hold_back_the_others() -> None:
    from vmreclaim.host.config import HostConfig, PolicyConfig
    from vmreclaim.host.daemon import Daemon
    from vmreclaim.host.policy import Action

    done: list[str] = []
    backends = {a: SlowBalloon(a, 0.5 if a == "hung" else 0.0, done) for a in ("hung", "b", "c")}

    async def scenario() -> float:
        policy = PolicyConfig(keep_available_bytes=1 << 30, release_available_bytes=2 << 30)
        config = HostConfig(path="test", qmp=(), policy=policy)
        daemon = Daemon(config, SlowToCancel)
        daemon.fleet.backend = backends.get  # type: ignore[method-assign,assignment]
        actions = [Action(a, a, 1 << 30, "test") for a in ("hung", "b", "c")]
        started = time.monotonic()
        await daemon.apply_all(actions, {})
        return time.monotonic() - started

    elapsed = asyncio.run(scenario())
    assert done == ["b", "c", "hung"]
    assert elapsed < 0.9  # once the bound, not once per VM
