"""The Cloud Hypervisor backend against a local server that answers as cloud-hypervisor.yaml
(openapi 0.3.0) specifies. API level only: no Cloud Hypervisor binary runs here."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.host.fake_vmm import MIB, cloud_hypervisor, serve
from vmreclaim.errors import VmUnreachableError
from vmreclaim.host.backends.cloud_hypervisor import CloudHypervisorVm, ram_bytes
from vmreclaim.host.records import VmSample

BALLOON = {"size": 0, "deflate_on_oom": False, "free_page_reporting": True}
STATS = {
    "total_memory": 1000 * MIB,
    "free_memory": 600 * MIB,
    "available_memory": 700 * MIB,
    "disk_caches": 50 * MIB,
    "major_faults": 7,
    "minor_faults": 900,
}


def sample_once(vm: CloudHypervisorVm) -> VmSample:
    async def run() -> VmSample:
        await vm.connect()
        try:
            return await vm.sample()
        finally:
            await vm.close()

    return asyncio.run(run())


def test_balloon_reporting_and_guest_statistics_come_from_the_api(tmp_path: Path) -> None:
    path = tmp_path / "ch.sock"
    with serve(path, cloud_hypervisor(balloon=BALLOON, balloon_bytes=128 * MIB, stats=STATS)):
        sample = sample_once(CloudHypervisorVm(path))
    assert sample.address == f"cloud-hypervisor:{path}"
    assert sample.name == "ch"
    assert sample.pid == os.getpid()  # the server's process, from the socket's credentials
    assert sample.balloon is not None
    assert (sample.balloon.ram_bytes, sample.balloon.actual_bytes) == (1024 * MIB, 896 * MIB)
    assert sample.balloon.free_page_reporting is True
    assert sample.guest is not None
    assert sample.guest.updated_at == 1_700_000_000.0
    assert (sample.guest.total_bytes, sample.guest.available_bytes) == (1000 * MIB, 700 * MIB)
    assert sample.guest.used_bytes == 350 * MIB
    assert sample.guest.major_faults == 7


def test_reporting_off_in_the_balloon_config_is_reported_off(tmp_path: Path) -> None:
    path = tmp_path / "ch.sock"
    balloon = {"size": 0, "deflate_on_oom": False, "free_page_reporting": False}
    with serve(path, cloud_hypervisor(balloon=balloon)):
        sample = sample_once(CloudHypervisorVm(path))
    assert sample.balloon is not None
    assert sample.balloon.free_page_reporting is False
    assert sample.guest is None  # 500: the guest has not negotiated statistics


def test_a_release_without_balloon_stats_still_shows_the_balloon(tmp_path: Path) -> None:
    path = tmp_path / "ch.sock"
    with serve(path, cloud_hypervisor(balloon=BALLOON, balloon_stats_route=False)) as vmm:
        vm = CloudHypervisorVm(path)

        async def run() -> tuple[VmSample, VmSample]:
            await vm.connect()
            return await vm.sample(), await vm.sample()

        first, second = asyncio.run(run())
    assert first.balloon is not None
    assert first.guest is None
    asked = [path for method, path, _ in vmm.requests if path.endswith("balloon-stats")]
    assert len(asked) == 1  # a 404 is remembered: the endpoint is not asked again
    assert second.balloon == first.balloon


def test_the_target_becomes_desired_balloon_in_vm_resize(tmp_path: Path) -> None:
    path = tmp_path / "ch.sock"
    with serve(path, cloud_hypervisor(balloon=BALLOON, stats=STATS)) as vmm:
        vm = CloudHypervisorVm(path)

        async def run() -> VmSample:
            await vm.connect()
            await vm.set_balloon_target(768 * MIB)
            return await vm.sample()

        sample = asyncio.run(run())
    assert ("PUT", "/api/v1/vm.resize", {"desired_balloon": 256 * MIB}) in vmm.requests
    assert sample.balloon is not None
    assert sample.balloon.actual_bytes == 768 * MIB


def test_a_vm_without_balloon_is_watched_without_one(tmp_path: Path) -> None:
    path = tmp_path / "ch.sock"
    with serve(path, cloud_hypervisor(balloon=None)):
        sample = sample_once(CloudHypervisorVm(path))
    assert sample.balloon is None
    assert sample.footprint is not None


def test_an_absent_socket_is_unreachable_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(VmUnreachableError) as caught:
        sample_once(CloudHypervisorVm(tmp_path / "absent.sock"))
    assert "cannot talk to the VMM API socket" in caught.value.message
    assert caught.value.hint
    assert "--api-socket" in caught.value.hint


def test_ram_counts_hotplugged_memory_and_zones() -> None:
    config = {
        "memory": {
            "size": 0,
            "hotplugged_size": 0,
            "zones": [{"id": "a", "size": 512 * MIB}, {"id": "b", "size": 256 * MIB}],
        }
    }
    assert ram_bytes(config) == 768 * MIB
    assert ram_bytes({"memory": {"size": 1024 * MIB, "hotplugged_size": 512 * MIB}}) == (1536 * MIB)
