"""The asyncio shell around ``Authority``: UDP and TCP listeners that only move bytes.

One ``dns.query`` event per answered query; the counters behind the ``status`` op are kept here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any, cast

from dnsserver.authority import Authority, QueryInfo, Transport
from dnsserver.config import DnsServerConfig
from dnsserver.control import register_control_ops
from dnsserver.names import name_text
from emulator.component import ComponentContext, ComponentStartError
from emulator.events import EventSink

TCP_IDLE_TIMEOUT = 30.0
TCP_WRITE_TIMEOUT = 10.0
MAX_TCP_CONNECTIONS = 512
Address = tuple[str, int]


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport; cast, not check.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        wire, info = self._server.process(data, addr, "udp")
        if wire is None or self.transport is None:
            return
        if info is not None and info.delay:
            self._server.later(info.delay, self._send, wire, addr)
        else:
            self._send(wire, addr)

    def _send(self, wire: bytes, addr: Address) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(wire, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a client that went away: nothing to do for a server.
        pass


class DnsServer:
    """Listeners for one ``DnsServerConfig``; usable in-process (tests) or under a component."""

    def __init__(self, config: DnsServerConfig, events: EventSink) -> None:
        self.config = config
        self.events = events
        self.authority = Authority(config.zones)
        self.port = config.port
        self.by_rcode: Counter[str] = Counter()
        self.by_transport: Counter[str] = Counter()
        self.unanswered = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()

    @property
    def host(self) -> str:
        return str(self.config.address)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.host, self.port)
            )
        except OSError as exc:
            raise ComponentStartError(self._bind_error("udp", exc)) from None
        # Port 0 asks for any free port: TCP then takes the same number as UDP.
        self.port = self._udp.get_extra_info("sockname")[1]
        try:
            self._tcp = await asyncio.start_server(
                self._serve_tcp, self.host, self.port, reuse_address=True
            )
        except OSError as exc:
            self._udp.close()
            raise ComponentStartError(self._bind_error("tcp", exc)) from None

    def _bind_error(self, transport: str, exc: OSError) -> str:
        reason = exc.strerror or str(exc)
        return f"cannot listen on {self.host}:{self.port}/{transport}: {reason}"

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        for timer in self._timers:
            timer.cancel()
        if self._tcp is not None:
            self._tcp.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._tcp is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._tcp.wait_closed()

    def later(self, delay: float, callback: Any, *args: Any) -> None:
        """Run ``callback`` after ``delay`` seconds unless the server closes first."""
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            callback(*args)

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    def process(
        self, query: bytes, client: Address, transport: Transport
    ) -> tuple[bytes | None, QueryInfo | None]:
        wire, info = self.authority.answer(query, (client[0], client[1]), transport)
        self.by_transport[transport] += 1
        if info is None:
            self.unanswered += 1
        elif info.dropped:
            self.unanswered += 1
            self.events.emit("dns.dropped", **info.event_fields())
        else:
            self.by_rcode[info.rcode] += 1
            self.events.emit("dns.query", **info.event_fields())
        return wire, info

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= MAX_TCP_CONNECTIONS:
            writer.close()
            return
        self._connections.add(task)
        peer = writer.get_extra_info("peername") or ("?", 0)
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                    prefix = await reader.readexactly(2)
                    query = await reader.readexactly(int.from_bytes(prefix, "big"))
                wire, info = self.process(query, peer, "tcp")
                if wire is None:
                    continue
                if info is not None and info.delay:
                    await asyncio.sleep(info.delay)
                writer.write(len(wire).to_bytes(2, "big") + wire)
                async with asyncio.timeout(TCP_WRITE_TIMEOUT):
                    await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass  # client went away, idled out, or stopped reading: drop the connection
        finally:
            self._connections.discard(task)
            writer.close()

    def status(self, _args: dict[str, Any]) -> dict[str, Any]:
        return {
            "address": self.host,
            "port": self.port,
            "zones": [name_text(zone.origin) for zone in self.authority.zones],
            "queries_by_rcode": dict(self.by_rcode),
            "queries_by_transport": dict(self.by_transport),
            "unanswered": self.unanswered,
            "tcp_connections": len(self._connections),
            "fault": self.authority.fault.describe(),
        }


async def run_server(ctx: ComponentContext, config: DnsServerConfig) -> None:
    """A component's ``main``: listen, announce ``ready``, serve until told to stop."""
    server = DnsServer(config, ctx)
    ctx.on_command("status", server.status)
    register_control_ops(ctx, server.authority)
    await server.start()
    try:
        ctx.emit(
            "ready",
            address=server.host,
            port=server.port,
            zones=[name_text(zone.origin) for zone in server.authority.zones],
        )
        await ctx.stopping.wait()
    finally:
        await server.close()
