"""The asyncio shell around ``Authority``: UDP and TCP listeners that only move bytes.

Hot path: a UDP QUERY whose bytes after the ID were answered before is answered from
``Authority.cached`` by patching the ID, one counter add and one ``sendto`` — no parsing, no
objects. Everything else goes through ``Authority.answer``.

``dns.query`` events: one per query (``events: all``), one per ``event_sample`` queries
(``sample``), or none (``off``). Counters are always kept (plain ints, read by ``status`` and
the Prometheus collector in ``dnsserver.metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import replace
from typing import Any, cast

from dnsserver.authority import Authority, CachedAnswer, QueryInfo, Transport
from dnsserver.config import DnsServerConfig
from dnsserver.control import register_control_ops
from dnsserver.metrics import MetricsListener
from dnsserver.names import name_text
from dnsserver.update import attach_updates
from emulator.component import ComponentContext, ComponentStartError
from emulator.events import EventSink

TCP_IDLE_TIMEOUT = 30.0
TCP_WRITE_TIMEOUT = 10.0
MAX_TCP_CONNECTIONS = 512
Address = tuple[str, int]
# (transport, qtype, rcode, truncated, from the cache) -> a one-element counter.
CellKey = tuple[str, str, str, bool, bool]


def _client_text(client: Address) -> str:
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server
        self._cached = server.authority.cached
        self._events = server.config.events != "off"
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport; cast, not check.
        self.transport = cast(asyncio.DatagramTransport, transport)
        self._sendto = self.transport.sendto

    def datagram_received(self, data: bytes, addr: Address) -> None:
        # Byte 2 holds QR and the opcode: both zero for a QUERY. Anything else (UPDATE, NOTIFY,
        # a response, a runt) takes the full path through Authority.answer.
        if len(data) > 12 and not data[2] & 0xF8:
            entry = self._cached("udp", data[2:])
            if entry is not None:
                entry.cell[0] += 1
                self._sendto(data[:2] + entry.tail, addr)
                if self._events:
                    self._server.cached_event(entry, addr)
                return
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
        attach_updates(self.authority, events, config.zones)  # RFC 2136 (nsupdate)
        self.authority.cell_for = self._cache_cell
        self.port = config.port
        self.cells: dict[CellKey, list[int]] = {}
        self.unanswered = 0
        self.tcp_accepted = 0
        self.events_written = 0
        self._sample = config.event_sample if config.events == "sample" else 1
        self._countdown = self._sample
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self.metrics: MetricsListener | None = None
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
        if self.config.metrics is not None:
            try:
                self.metrics = MetricsListener(self, self.config.metrics)
            except OSError as exc:
                await self.close()
                reason = exc.strerror or str(exc)
                raise ComponentStartError(
                    f"cannot serve metrics on {self.config.metrics}: {reason}"
                ) from None

    def _bind_error(self, transport: str, exc: OSError) -> str:
        reason = exc.strerror or str(exc)
        return f"cannot listen on {self.host}:{self.port}/{transport}: {reason}"

    async def close(self) -> None:
        if self.metrics is not None:
            metrics, self.metrics = self.metrics, None
            await asyncio.to_thread(metrics.close)
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

    # -- counting and events ----------------------------------------------------------------

    def _cell(self, info: QueryInfo, cached: bool) -> list[int]:
        key = (info.transport, info.qtype, info.rcode, info.truncated, cached)
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = [0]
        return cell

    def _cache_cell(self, info: QueryInfo) -> list[int]:
        """``Authority.cell_for``: the counter a newly kept answer bumps on every hit."""
        return self._cell(info, True)

    def _query_event(self, info: QueryInfo) -> None:
        if self._sample > 1:
            self._countdown -= 1
            if self._countdown:
                return
            self._countdown = self._sample
            self.events_written += 1
            self.events.emit("dns.query", sample=self._sample, **info.event_fields())
            return
        self.events_written += 1
        self.events.emit("dns.query", **info.event_fields())

    def cached_event(self, entry: CachedAnswer, client: Address) -> None:
        """The event for an answer sent from the cache (only called when events are on)."""
        if self._sample > 1 and self._countdown > 1:
            self._countdown -= 1
            return
        self._query_event(replace(entry.info, client=_client_text(client)))

    def process(
        self, query: bytes, client: Address, transport: Transport
    ) -> tuple[bytes | None, QueryInfo | None]:
        wire, info = self.authority.answer(query, (client[0], client[1]), transport)
        if info is None:
            self.unanswered += 1
        elif info.dropped:
            self.unanswered += 1
            self.events.emit("dns.dropped", **info.event_fields())
        else:
            # Authority.answer also serves kept answers (TCP, and UDP after a fast-path miss).
            self._cell(info, False)[0] += 1
            if self.config.events != "off":
                self._query_event(info)
        return wire, info

    # -- TCP --------------------------------------------------------------------------------

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= MAX_TCP_CONNECTIONS:
            writer.close()
            return
        self.tcp_accepted += 1
        self._connections.add(task)
        peer = writer.get_extra_info("peername") or ("?", 0)
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                    prefix = await reader.readexactly(2)
                    query = await reader.readexactly(int.from_bytes(prefix, "big"))
                entry = None
                if len(query) > 12 and not query[2] & 0xF8:  # QUERY: try the cache first
                    entry = self.authority.cached("tcp", query[2:])
                if entry is not None:
                    entry.cell[0] += 1
                    wire, info = query[:2] + entry.tail, None
                    if self.config.events != "off":
                        self.cached_event(entry, peer)
                else:
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
        by_rcode: Counter[str] = Counter()
        by_transport: Counter[str] = Counter()
        hits = 0
        for (transport, _qtype, rcode, _truncated, cached), cell in self.cells.items():
            by_rcode[rcode] += cell[0]
            by_transport[transport] += cell[0]
            hits += cell[0] if cached else 0
        return {
            "address": self.host,
            "port": self.port,
            "zones": [name_text(zone.origin) for zone in self.authority.zones],
            "queries_by_rcode": {k: v for k, v in by_rcode.items() if v},
            "queries_by_transport": {k: v for k, v in by_transport.items() if v},
            "cache_hits": hits,
            "unanswered": self.unanswered,
            "tcp_connections": len(self._connections),
            "events": self.config.events,
            "fault": self.authority.fault.describe(),
        }


async def run_server(ctx: ComponentContext, config: DnsServerConfig) -> None:
    """A component's ``main``: listen, announce ``ready``, serve until told to stop."""
    server = DnsServer(config, ctx)
    ctx.on_command("status", server.status)
    register_control_ops(ctx, server.authority)
    await server.start()
    try:
        ready: dict[str, Any] = {}
        if server.metrics is not None:
            ready["metrics"] = f"{server.metrics.host}:{server.metrics.port}"
        ctx.emit(
            "ready",
            address=server.host,
            port=server.port,
            zones=[name_text(zone.origin) for zone in server.authority.zones],
            **ready,
        )
        await ctx.stopping.wait()
    finally:
        await server.close()
