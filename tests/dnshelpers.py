"""Shared by the DNS server tests: the seed-like zone and dnspython query helpers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import dns.message
import dns.rdatatype

from dnsserver.authority import Authority, QueryInfo
from dnsserver.config import DnsServerConfig, RecordConfig, ZoneConfig

CLIENT = ("127.0.0.1", 40000)
REPO = Path(__file__).resolve().parent.parent


def seed_zone(peers: tuple[str, ...] = ("127.0.0.11", "127.0.0.12"), **extra: Any) -> ZoneConfig:
    """``uctest.local`` as the seed configures it: SRV per peer, and the cluster A name."""
    records = []
    for index, address in enumerate(peers, start=1):
        records += [
            RecordConfig(name="_sips._tcp", type="SRV", data=f"10 10 5061 exp{index}"),
            RecordConfig(name="_sip._tcp", type="SRV", data=f"10 10 5060 exp{index}"),
            RecordConfig(name=f"exp{index}", type="A", data=address),
            RecordConfig(name="habibexpc-cluster", type="A", data=address),
        ]
    return ZoneConfig(origin="uctest.local", records=records, **extra)


def seed_server(address: str, port: int = 1053) -> DnsServerConfig:
    return DnsServerConfig(address=address, port=port, zones=[seed_zone()])


def ask(
    authority: Authority,
    name: str,
    rdtype: str = "A",
    *,
    transport: str = "udp",
    **query_args: Any,
) -> tuple[dns.message.Message, QueryInfo]:
    query = dns.message.make_query(name, rdtype, **query_args)
    wire, info = authority.answer(query.to_wire(), CLIENT, transport)  # type: ignore[arg-type]
    assert wire is not None
    assert info is not None
    return dns.message.from_wire(wire), info


def texts(response: dns.message.Message, section: str = "answer") -> list[str]:
    """Every record of a section as 'name type rdata' text, in wire order."""
    return [
        f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rdata.to_text()}"
        for rrset in getattr(response, section)
        for rdata in rrset
    ]


class DnsProcess:
    """``python -m dnsserver`` as a real subprocess, with its events read from stdout.

    Every wait is bounded; ``stop`` always leaves no process behind.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()
        self._reader = asyncio.create_task(self._read())
        self._next_id = 0

    @classmethod
    async def start(cls, config: DnsServerConfig) -> DnsProcess:
        """The server under lab-supervisor conditions: --config-json, control on stdio."""
        return await cls.spawn(
            sys.executable, "-m", "dnsserver",
            "--config-json", config.model_dump_json(), "--control", "stdio",
        )

    @classmethod
    async def spawn(cls, *argv: str) -> DnsProcess:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=REPO,
        )
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.events.append(json.loads(line))
            self._arrived.set()

    async def wait_for(self, kind: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """The first event of ``kind`` whose fields include ``fields``."""
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if event["kind"] == kind and all(event.get(k) == v for k, v in fields.items()):
                        return event
                if self._reader.done():
                    raise AssertionError(f"process ended without a {kind!r} event: {self.events}")
                self._arrived.clear()
                await self._arrived.wait()

    async def request(self, op: str, timeout: float = 10.0, **args: Any) -> dict[str, Any]:
        """Send a control request and return its ``control.reply`` event."""
        self._next_id += 1
        request_id = self._next_id
        await self.send_line(json.dumps({"id": request_id, "op": op, "args": args}))
        return await self.wait_for("control.reply", timeout, id=request_id)

    async def send_line(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def wait_exit(self, timeout: float = 10.0) -> int:
        async with asyncio.timeout(timeout):
            status = await self.process.wait()
            await self._reader
        return status

    async def stop(self) -> None:
        """Kill the process by PID if it is still alive, and reap it (bounded)."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self.process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
