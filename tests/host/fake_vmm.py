"""Small HTTP servers on a unix socket that answer as Cloud Hypervisor's and Firecracker's API
documents specify (cloud-hypervisor.yaml, openapi 0.3.0; firecracker.yaml, 1.17.0-dev), with
the state a test sets and the requests a test checks."""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Callable, Union

MIB = 1 << 20


@dataclass
class Answer:
    status: int
    body: Any = None
    """JSON-encoded unless it is a str (Cloud Hypervisor's plain-text errors)."""


Route = Union[Answer, Callable[[Any], Answer]]


@dataclass
class FakeVmm:
    """Routes (method, path) to answers; records every request with its decoded body."""

    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)

    def answer(self, method: str, path: str, body: Any) -> Answer:
        self.requests.append((method, path, body))
        route = self.routes.get((method, path))
        if route is None:
            return Answer(404, "not found")
        return route if isinstance(route, Answer) else route(body)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        answer = self.server.vmm.answer(self.command, self.path, body)
        payload = b""
        if answer.body is not None:
            text = answer.body if isinstance(answer.body, str) else json.dumps(answer.body)
            payload = text.encode()
        self.send_response(answer.status)
        if payload:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_PUT = do_PATCH = _serve

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, vmm: FakeVmm) -> None:
        super().__init__(str(path), _Handler)
        self.vmm = vmm


@contextmanager
def serve(path: Path, vmm: FakeVmm) -> Iterator[FakeVmm]:
    server = _Server(path, vmm)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield vmm
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def cloud_hypervisor(
    *,
    ram: int = 1024 * MIB,
    balloon: dict[str, Any] | None = None,
    balloon_bytes: int = 0,
    stats: dict[str, Any] | None = None,
    balloon_stats_route: bool = True,
) -> FakeVmm:
    """A Cloud Hypervisor whose VM has `ram` and, unless `balloon` is None, that balloon."""
    state = {"balloon": balloon_bytes}
    vmm = FakeVmm()

    def info(_body: Any) -> Answer:
        config: dict[str, Any] = {
            "payload": {"kernel": "/vmlinux"},
            "memory": {"size": ram, "hotplug_size": 0, "mergeable": False},
        }
        if balloon is not None:
            config["balloon"] = balloon
        body: dict[str, Any] = {"config": config, "state": "Running"}
        if balloon is not None:
            body["memory_actual_size"] = ram - state["balloon"]
        return Answer(200, body)

    def resize(body: Any) -> Answer:
        if balloon is None:
            return Answer(500, "Error resizing the VM: no balloon")
        state["balloon"] = int(body["desired_balloon"])
        return Answer(204)

    def balloon_stats(_body: Any) -> Answer:
        if stats is None:
            return Answer(500, "The guest has not negotiated statistics")
        return Answer(
            200,
            {"balloon_actual": state["balloon"], "last_update": 1_700_000_000_000, "stats": stats},
        )

    vmm.routes = {
        ("GET", "/api/v1/vmm.ping"): Answer(200, {"version": "v48.0", "build_version": "v48"}),
        ("GET", "/api/v1/vm.info"): info,
        ("PUT", "/api/v1/vm.resize"): resize,
    }
    if balloon_stats_route:
        vmm.routes[("GET", "/api/v1/vm.balloon-stats")] = balloon_stats
    return vmm


def firecracker(
    *,
    mem_size_mib: int = 1024,
    balloon: dict[str, Any] | None = None,
    stats: dict[str, Any] | None = None,
    instance_id: str = "fc-vm1",
) -> FakeVmm:
    """A Firecracker microVM; `balloon` is the Balloon object PUT before boot, if any."""
    state = dict(balloon or {})
    vmm = FakeVmm()
    fault = {"fault_message": "Balloon device not configured."}

    def get_balloon(_body: Any) -> Answer:
        return Answer(200, state) if balloon is not None else Answer(400, fault)

    def patch_balloon(body: Any) -> Answer:
        if balloon is None:
            return Answer(400, fault)
        state["amount_mib"] = int(body["amount_mib"])
        return Answer(204)

    def statistics(_body: Any) -> Answer:
        if balloon is None or not state.get("stats_polling_interval_s"):
            return Answer(
                400, {"fault_message": "Statistics for the balloon device are not enabled"}
            )
        amount = state.get("amount_mib", 0)
        answer = {"target_pages": amount * 256, "actual_pages": amount * 256}
        answer |= {"target_mib": amount, "actual_mib": amount, **(stats or {})}
        return Answer(200, answer)

    vmm.routes = {
        ("GET", "/"): Answer(
            200,
            {
                "app_name": "Firecracker",
                "id": instance_id,
                "state": "Running",
                "vmm_version": "1.14.0",
            },
        ),
        ("GET", "/machine-config"): Answer(
            200, {"vcpu_count": 2, "mem_size_mib": mem_size_mib, "smt": False}
        ),
        ("GET", "/balloon"): get_balloon,
        ("PATCH", "/balloon"): patch_balloon,
        ("GET", "/balloon/statistics"): statistics,
    }
    return vmm
