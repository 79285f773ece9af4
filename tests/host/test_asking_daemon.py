"""host run asks a guest agent before it squeezes: end to end over a fake QEMU (QMP) and a fake
agent port that reads the requests and answers them, or not."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from vmreclaim.agent_protocol import (
    LineSplitter,
    ReleaseAnswer,
    ReleaseRequest,
    encode_answer,
    parse_request,
)
from vmreclaim.host.agents import AgentChannels, AgentLink
from vmreclaim.host.asking import REFUSED, RELEASED, Outcome
from vmreclaim.host.config import HostConfig, parse_config
from vmreclaim.host.daemon import Daemon
from vmreclaim.host.fleet import FleetPoll
from vmreclaim.host.metrics import MetricsView, _Collector
from vmreclaim.host.records import AgentStatus
from vmreclaim.host.sources import SourceList, VmSources
from vmreclaim.host.top import snapshot_json, view_from_json

from .fake_qmp import FakeQemu
from .test_agents import MIB, channels_over, observed, report_line

Answerer = Callable[[ReleaseRequest], "ReleaseAnswer | None"]


@asynccontextmanager
async def answering_port(path: Path, answer: Answerer, seen: list[float]) -> AsyncIterator[None]:
    """As QEMU's chardev socket with an agent behind it: a report every 0.1 s, and each request
    answered as `answer` says (None: never); `seen` gets the time each request arrived."""
    tasks: set[asyncio.Task[Any]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def report() -> None:
            for seq in range(1, 10_000):
                writer.write(report_line(seq))
                await asyncio.sleep(0.1)

        reporting = asyncio.ensure_future(report())
        tasks.add(reporting)
        splitter = LineSplitter()
        try:
            while data := await reader.read(4096):
                for line in splitter.feed(data)[0]:
                    request = parse_request(line)
                    seen.append(time.monotonic())
                    reply = answer(request)
                    if reply is not None:
                        writer.write(encode_answer(reply))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            reporting.cancel()
            writer.close()

    server = await asyncio.start_unix_server(serve, path=str(path))
    try:
        yield
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.sleep(0)


def short_host(tmp_path: Path, **balloon: object) -> HostConfig:
    return parse_config(
        {
            "qmp": [str(tmp_path / "*.qmp")],
            "agent": [str(tmp_path / "*.agent")],
            "socket": "",
            "metrics": {"port": 0},
            "host": {"keep_available": "1T"},
            "balloon": {"ask_deadline": 1.0, **balloon},
        },
        "host.toml",
    )


async def run_until(
    config: HostConfig,
    tmp_path: Path,
    answer: Answerer,
    done: Callable[[Daemon, FakeQemu], bool],
) -> tuple[AgentStatus, list[float], list[float]]:
    """Cycle host run every 0.1 s until `done`; (the agent channel's status, when requests
    arrived, when the balloon first moved)."""
    sources = VmSources(SourceList(config.qmp))
    daemon = Daemon(config, sources.backend, discoverer=sources.discover)
    seen: list[float] = []
    moved: list[float] = []
    try:
        async with (
            FakeQemu(tmp_path / "db.qmp") as qemu,
            answering_port(tmp_path / "db.agent", answer, seen),
        ):
            for _ in range(100):
                qemu.last_update = int(time.time())  # the guest's statistics are fresh
                await daemon.cycle()
                if qemu.actual < qemu.ram and not moved:
                    moved.append(time.monotonic())
                if done(daemon, qemu):
                    return daemon.agents.links[0].status(), seen, moved
                await asyncio.sleep(0.1)
            raise AssertionError("the daemon never got there")
    finally:
        await daemon.agents.close()
        await daemon.fleet.close()
        sources.close()


def requests(status: AgentStatus) -> dict[str, int]:
    return {result: count for result, count in status.requests if count}


def test_a_refusal_lets_the_balloon_squeeze_right_after(tmp_path: Path) -> None:
    def refuse(request: ReleaseRequest) -> ReleaseAnswer:
        return ReleaseAnswer(request.id, 0, "memory_pressure")

    status, seen, moved = asyncio.run(
        run_until(short_host(tmp_path), tmp_path, refuse, lambda d, q: q.actual < q.ram)
    )
    assert requests(status) == {REFUSED: 1}
    assert seen
    assert moved[0] >= seen[0]
    last = status.last_request
    assert last is not None
    assert (last.result, last.refused) == (REFUSED, "memory_pressure")


def test_a_silent_agent_costs_its_vm_the_deadline_then_the_balloon_squeezes(
    tmp_path: Path,
) -> None:
    status, seen, moved = asyncio.run(
        run_until(
            short_host(tmp_path), tmp_path, lambda request: None, lambda d, q: q.actual < q.ram
        )
    )
    assert requests(status) == {"expired": 1}
    assert moved[0] - seen[0] >= 0.8  # the 1 s deadline, less the request's way there


def test_without_asking_the_balloon_squeezes_at_once(tmp_path: Path) -> None:
    status, seen, _moved = asyncio.run(
        run_until(
            short_host(tmp_path, ask_agents=False),
            tmp_path,
            lambda request: None,
            lambda d, q: q.actual < q.ram,
        )
    )
    assert seen == []
    assert requests(status) == {}


def test_the_last_request_and_the_counts_reach_the_metrics_and_the_view() -> None:
    async def main() -> Any:
        channels: AgentChannels = await channels_over(["/run/vms/db.agent"])
        link: AgentLink = channels.links[0]
        link.receive(report_line(5))
        answer = ReleaseAnswer(3, 200 * MIB, "")
        link.ended(Outcome("/run/vms/db.qmp", "db", 3, 250 * MIB, RELEASED, answer, 180 * MIB, 5))
        (vm,) = channels.attach([observed()])  # type: ignore[list-item]
        return vm

    vm = asyncio.run(main())
    collector = _Collector()
    collector.publish(MetricsView(None, "shrink", (vm,), 0, 1))
    values = {
        (point.name, point.labels.get("result", "")): point.value
        for family in collector.collect()
        for point in family.samples
    }
    assert values[("vmreclaim_vm_agent_requests_total", RELEASED)] == 1
    assert values[("vmreclaim_vm_agent_requests_total", REFUSED)] == 0
    view = json.loads(json.dumps(snapshot_json(FleetPoll((vm,)), None, 0.0, 3.0)))
    last = view["vms"][0]["agent"]["last_request"]
    assert (last["result"], last["released_bytes"], last["seen_bytes"]) == (
        RELEASED,
        200 * MIB,
        180 * MIB,
    )
    assert view_from_json(view).poll.vms[0].agent == vm.agent
