"""Every call to a hypervisor is bounded in time: a VM that does not answer is reported hung
within the bound, keeps at most one stuck thread, and delays no other VM."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from tests.host.fake_vmm import Answer, cloud_hypervisor, serve
from vmreclaim.errors import VmHungError
from vmreclaim.host.backends.cloud_hypervisor import CloudHypervisorVm
from vmreclaim.host.backends.libvirt import LibvirtHub
from vmreclaim.host.backends.threads import BlockingCalls
from vmreclaim.host.config import parse_config


def test_a_call_that_outlives_its_bound_is_hung() -> None:
    release = threading.Event()
    calls = BlockingCalls()

    async def scenario() -> float:
        started = time.monotonic()
        with pytest.raises(VmHungError, match=r"vm1: no answer within 0\.2 s to memoryStats"):
            await calls.run("vm1", release.wait, timeout=0.2, what="memoryStats", label="vm1")
        return time.monotonic() - started

    try:
        assert asyncio.run(scenario()) < 1.0
    finally:
        release.set()


def test_a_stuck_vm_gets_no_second_thread_and_others_still_answer() -> None:
    release = threading.Event()
    calls = BlockingCalls()

    async def scenario() -> None:
        with pytest.raises(VmHungError):
            await calls.run("stuck", release.wait, timeout=0.1, what="a call")
        threads = calls.threads
        for _ in range(20):
            started = time.monotonic()
            with pytest.raises(VmHungError, match="still unanswered"):
                await calls.run("stuck", release.wait, timeout=5, what="a call")
            assert time.monotonic() - started < 0.1  # at once, not after the bound
        assert calls.threads == threads
        assert calls.stuck() == ["stuck"]
        assert await calls.run("other", lambda: 42, timeout=1, what="a call") == 42

    try:
        asyncio.run(scenario())
    finally:
        release.set()


def test_a_vm_answers_again_once_its_stuck_call_returns() -> None:
    release = threading.Event()
    calls = BlockingCalls()

    async def scenario() -> str:
        with pytest.raises(VmHungError):
            await calls.run("vm", release.wait, timeout=0.1, what="a call")
        release.set()
        deadline = time.monotonic() + 5
        while calls.stuck() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return await calls.run("vm", lambda: "answer", timeout=1, what="a call")

    assert asyncio.run(scenario()) == "answer"


def test_errors_of_a_call_reach_the_caller() -> None:
    def fail() -> None:
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        asyncio.run(BlockingCalls().run("vm", fail, timeout=1, what="a call"))


def test_call_threads_never_delay_the_exit() -> None:
    # A thread stuck in libvirt cannot be stopped; a non-daemon one would keep the process
    # alive after `top` or the daemon ended (asyncio.to_thread's executor joins its threads).
    release = threading.Event()
    calls = BlockingCalls()
    with pytest.raises(VmHungError):
        asyncio.run(calls.run("vm", release.wait, timeout=0.1, what="a call"))
    try:
        ours = [t for t in threading.enumerate() if t.name == "vmreclaim-call"]
        assert ours
        assert all(thread.daemon for thread in ours)
    finally:
        release.set()


def test_a_rest_vmm_that_stops_answering_is_hung_within_the_bound(tmp_path: Path) -> None:
    path = tmp_path / "ch.sock"
    vmm = cloud_hypervisor(balloon={"size": 0, "free_page_reporting": True})
    release = threading.Event()
    answer_info = vmm.routes[("GET", "/api/v1/vm.info")]

    def hang_after_connect(body: object) -> Answer:
        release.wait(10)
        assert callable(answer_info)
        return answer_info(body)

    async def scenario(vm: CloudHypervisorVm) -> list[float]:
        await vm.connect()
        vmm.routes[("GET", "/api/v1/vm.info")] = hang_after_connect
        times = []
        for _ in range(4):
            started = time.monotonic()
            with pytest.raises(VmHungError, match=r"no answer within 0\.3 s"):
                await vm.sample()
            times.append(time.monotonic() - started)
        return times

    calls = BlockingCalls()
    with serve(path, vmm):
        try:
            times = asyncio.run(scenario(CloudHypervisorVm(path, timeout=0.3, calls=calls)))
        finally:
            release.set()
    assert max(times) < 1.0
    # The socket's own timeout is twice the bound: its thread comes back and serves again.
    assert calls.threads <= 2


def test_a_libvirt_uri_that_hangs_keeps_the_domains_it_last_listed() -> None:
    release = threading.Event()
    listings = [["db", "web"]]

    def running_domains(uri: str) -> list[str]:
        if listings:
            return listings.pop()
        release.wait(10)
        return []

    hub = LibvirtHub(timeout=0.2)
    hub.running_domains = running_domains  # type: ignore[method-assign]

    async def scenario() -> tuple[list[str], list[str], float]:
        first, _ = await hub.discover(["qemu:///system"])
        started = time.monotonic()
        second, failures = await hub.discover(["qemu:///system"])
        assert isinstance(failures["qemu:///system"], VmHungError)
        return first, second, time.monotonic() - started

    try:
        first, second, elapsed = asyncio.run(scenario())
    finally:
        release.set()
    assert first == second == ["libvirt:qemu:///system#db", "libvirt:qemu:///system#web"]
    assert elapsed < 1.0


def test_the_timeout_defaults_to_half_the_interval() -> None:
    host = {"keep_available": "1G"}
    assert parse_config({"interval": 2.0, "host": host}, "h.toml").timeout == 1.0
    assert parse_config({"interval": 60, "host": host}, "h.toml").timeout == 5.0
    assert parse_config({"timeout": 0.25, "host": host}, "h.toml").timeout == 0.25
