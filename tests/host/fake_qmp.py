"""A small fake QMP server on a real unix socket: greeting, capabilities negotiation and the
commands the host side sends, answered like QEMU 7.2 does."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

UNKNOWN = (1 << 64) - 1
MIB = 1 << 20


class FakeQemu:
    def __init__(self, path: Path, *, ram: int = 1024 * MIB, reporting: bool = True) -> None:
        self.path = path
        self.ram = ram
        self.actual = ram
        self.reporting = reporting
        self.stats: dict[str, int] = {
            "stat-total-memory": 1000 * MIB,
            "stat-free-memory": 600 * MIB,
            "stat-available-memory": 800 * MIB,
            "stat-disk-caches": 150 * MIB,
            "stat-major-faults": 42,
            "stat-minor-faults": 4242,
            "stat-swap-in": UNKNOWN,
        }
        self.last_update = 1_700_000_000
        self.commands: list[str] = []
        self.stats_reads = 0
        self.polling_interval: int | None = None
        self.polling_sets = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> FakeQemu:
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.crash()

    async def crash(self) -> None:
        """Drop every connection and stop listening, as a killed QEMU does."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        self._send(
            writer,
            {
                "QMP": {
                    "version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": ""},
                    "capabilities": [],
                }
            },
        )
        # QMP is a stream of JSON objects; qemu.qmp sends them without newlines.
        decoder = json.JSONDecoder()
        buffer = ""
        while chunk := await reader.read(65536):
            buffer += chunk.decode()
            while buffer.strip():
                try:
                    message, end = decoder.raw_decode(buffer.lstrip())
                except json.JSONDecodeError:
                    break
                buffer = buffer.lstrip()[end:]
                self._handle(writer, message)
        writer.close()

    def _handle(self, writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
        reply = self._answer(writer, message["execute"], message.get("arguments") or {})
        if "id" in message:
            reply["id"] = message["id"]
        self._send(writer, reply)

    def _send(self, writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
        writer.write(json.dumps(message).encode() + b"\r\n")

    def _answer(  # noqa: PLR0911 - one branch per QMP command, as QEMU's dispatcher
        self, writer: asyncio.StreamWriter, command: str, args: dict[str, Any]
    ) -> dict[str, Any]:
        self.commands.append(command)
        balloon = "/machine/peripheral-anon/device[0]"
        if command == "qmp_capabilities":
            return {"return": {}}
        if command == "query-name":
            return {"return": {"name": "fake-vm"}}
        if command == "query-memory-size-summary":
            return {"return": {"base-memory": self.ram, "plugged-memory": 0}}
        if command == "qom-list" and args["path"] == "/machine/peripheral-anon":
            return {
                "return": [
                    {"name": "type", "type": "string"},
                    {"name": "device[0]", "type": "child<virtio-balloon-pci>"},
                ]
            }
        if command == "qom-list":
            return {"return": [{"name": "type", "type": "string"}]}
        if command == "query-balloon":
            return {"return": {"actual": self.actual}}
        if command == "qom-get" and args["path"] == balloon:
            if args["property"] == "free-page-reporting":
                return {"return": self.reporting}
            if args["property"] == "guest-stats-polling-interval":
                return {"return": self.polling_interval or 0}
            if args["property"] == "guest-stats":
                self.stats_reads += 1
                return {"return": {"last-update": self.last_update, "stats": self.stats}}
        if command == "qom-set" and args["path"] == balloon:
            self.polling_interval = args["value"]
            self.polling_sets += 1
            return {"return": {}}
        if command == "balloon":
            self.actual = args["value"]
            self._send(
                writer,
                {
                    "event": "BALLOON_CHANGE",
                    "data": {"actual": self.actual},
                    "timestamp": {"seconds": 0, "microseconds": 0},
                },
            )
            return {"return": {}}
        return {"error": {"class": "GenericError", "desc": f"unknown: {command} {args}"}}
