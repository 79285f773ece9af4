"""The Firecracker backend against a local server that answers as firecracker.yaml (1.17.0-dev)
specifies. API level only: no Firecracker binary runs here."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.host.fake_vmm import MIB, firecracker, serve
from vmreclaim.errors import HostError
from vmreclaim.host.backends.firecracker import FirecrackerVm
from vmreclaim.host.records import VmSample

BALLOON = {
    "amount_mib": 64,
    "deflate_on_oom": False,
    "stats_polling_interval_s": 1,
    "free_page_reporting": True,
}
STATS = {
    "total_memory": 900 * MIB,
    "free_memory": 500 * MIB,
    "available_memory": 650 * MIB,
    "disk_caches": 100 * MIB,
    "major_faults": 3,
    "minor_faults": 400,
}


def sample_once(vm: FirecrackerVm) -> VmSample:
    async def run() -> VmSample:
        await vm.connect()
        return await vm.sample()

    return asyncio.run(run())


def test_balloon_reporting_and_statistics_come_from_the_api(tmp_path: Path) -> None:
    path = tmp_path / "fc.sock"
    with serve(path, firecracker(balloon=BALLOON, stats=STATS)):
        sample = sample_once(FirecrackerVm(path))
    assert (sample.name, sample.address) == ("fc-vm1", f"firecracker:{path}")
    assert sample.pid == os.getpid()
    assert sample.balloon is not None
    assert (sample.balloon.ram_bytes, sample.balloon.actual_bytes) == (1024 * MIB, 960 * MIB)
    assert sample.balloon.free_page_reporting is True
    assert sample.guest is not None
    assert sample.guest.updated_at is None  # the API does not date them: the fleet does
    assert sample.guest.available_bytes == 650 * MIB
    assert sample.guest.used_bytes == 300 * MIB


def test_a_balloon_from_before_1_14_has_reporting_off(tmp_path: Path) -> None:
    path = tmp_path / "fc.sock"
    old = {"amount_mib": 0, "deflate_on_oom": True, "stats_polling_interval_s": 1}
    with serve(path, firecracker(balloon=old, stats=STATS)):
        sample = sample_once(FirecrackerVm(path))
    assert sample.balloon is not None
    assert sample.balloon.free_page_reporting is False


def test_without_statistics_the_balloon_target_stands_in(tmp_path: Path) -> None:
    path = tmp_path / "fc.sock"
    no_stats = {**BALLOON, "stats_polling_interval_s": 0}
    with serve(path, firecracker(balloon=no_stats)) as vmm:
        sample = sample_once(FirecrackerVm(path))
    assert sample.guest is None
    assert sample.balloon is not None
    assert sample.balloon.actual_bytes == 960 * MIB
    assert not any(path == "/balloon/statistics" for _, path, _ in vmm.requests)


def test_the_target_becomes_amount_mib_in_patch_balloon(tmp_path: Path) -> None:
    path = tmp_path / "fc.sock"
    with serve(path, firecracker(balloon=BALLOON, stats=STATS)) as vmm:
        vm = FirecrackerVm(path)

        async def run() -> VmSample:
            await vm.connect()
            await vm.set_balloon_target(700 * MIB + 12345)
            return await vm.sample()

        sample = asyncio.run(run())
    # 1024 MiB - (700 MiB + 12345 bytes), rounded down to whole MiB: the guest keeps more.
    assert ("PATCH", "/balloon", {"amount_mib": 323}) in vmm.requests
    assert sample.balloon is not None
    assert sample.balloon.actual_bytes == 701 * MIB


def test_a_microvm_without_balloon_is_watched_and_cannot_be_steered(tmp_path: Path) -> None:
    path = tmp_path / "fc.sock"
    with serve(path, firecracker(balloon=None)):
        vm = FirecrackerVm(path)

        async def run() -> tuple[VmSample, str]:
            await vm.connect()
            sample = await vm.sample()
            try:
                await vm.set_balloon_target(512 * MIB)
            except HostError as err:
                return sample, err.message
            return sample, ""

        sample, error = asyncio.run(run())
    assert sample.balloon is None
    assert "no balloon device" in error
