"""The fleet: many VMs at once, stopped cleanly."""

from __future__ import annotations

import asyncio

from vmreclaim.host.fleet import Fleet
from vmreclaim.host.records import VmSample


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
