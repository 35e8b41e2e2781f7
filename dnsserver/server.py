"""The asyncio shell around ``Authority``: UDP and TCP listeners that only move bytes.

Hot path: a UDP QUERY whose bytes after the ID were answered before is answered from
``Authority.cached`` by patching the ID and one counter add — no parsing, no objects.
Everything else goes through ``Authority.answer``.

UDP I/O: on Linux, ``_BatchedUdp`` receives and sends up to 64 datagrams per syscall
(``recvmmsg``/``sendmmsg`` through ctypes, ``dnsserver.mmsg``): the syscalls, not the Python
work, were most of the CPU per query. Elsewhere, or with ``DnsServer(batch_udp=False)``, the
event loop's datagram transport (``_UdpProtocol``) does the same work one datagram at a time.
``status`` says which one is in use (``udp_io``).

``dns.query`` events: by default (``events: auto``) the component's rate governor decides
(emulator/eventrate.py: every query while they are few, one in N with ``sample=N`` under load,
exact counts in ``stats`` events); or one per query (``all``), one per ``event_sample`` queries
(``sample``), or none (``off``). Deciding costs one ``Tally.admit`` call per query, no dict and
no JSON unless an event goes out. Counters are always kept (plain ints, read by ``status`` and
the Prometheus collector in ``dnsserver.metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from dnsserver.authority import Authority, CachedAnswer, QueryInfo, Transport
from dnsserver.config import DnsServerConfig
from dnsserver.control import register_control_ops
from dnsserver.link import DnsLink
from dnsserver.metrics import MetricsListener
from dnsserver.mmsg import RECV_SLOT, SEND_SLOT, MmsgIO, unavailable
from dnsserver.names import name_text
from dnsserver.update import attach_updates
from emulator.component import ComponentContext, ComponentStartError
from emulator.eventrate import RateGovernor
from emulator.events import EventSink
from emulator.kinds import Kind
from emulator.sip.linkfault import register_link_ops

TCP_IDLE_TIMEOUT = 30.0
TCP_WRITE_TIMEOUT = 10.0
MAX_TCP_CONNECTIONS = 512
Address = tuple[str, int]
# (transport, qtype, rcode, truncated, from the cache) -> a one-element counter.
CellKey = tuple[str, str, str, bool, bool]
# recvmmsg calls per readable event: up to 8 x 64 datagrams, then back to the loop so TCP,
# control commands and timers are not starved under a flood.
BATCHES_PER_WAKEUP = 8
# Kernel-chosen UDP ports to try before giving up when each one's TCP twin is taken.
_FREE_PORT_ATTEMPTS = 20


def _client_text(client: Address) -> str:
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server
        self._cached = server.authority.cached
        self._events = server.config.events != "off"
        self._links = server.link.faults
        self._admit = server.admit
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport; cast, not check.
        self.transport = cast(asyncio.DatagramTransport, transport)
        self._sendto = self.transport.sendto

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if self._links.active:
            self._server.link.udp(data, addr, self._send)
            return
        # Byte 2 holds QR and the opcode: both zero for a QUERY. Anything else (UPDATE, NOTIFY,
        # a response, a runt) takes the full path through Authority.answer.
        if len(data) > 12 and not data[2] & 0xF8:
            entry = self._cached("udp", data[2:])
            if entry is not None:
                entry.cell[0] += 1
                self._sendto(data[:2] + entry.tail, addr)
                if self._events:
                    sample = self._admit()
                    if sample:
                        self._server.emit_cached_event(entry, addr, sample)
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


class _BatchedUdp:
    """UDP through ``recvmmsg``/``sendmmsg``: the same answers, counters and events as
    ``_UdpProtocol``, in the same order, with one syscall per batch instead of per datagram."""

    def __init__(self, server: DnsServer, sock: socket.socket) -> None:
        self._server = server
        self._sock = sock
        self._io = MmsgIO(sock)
        self._cached = server.authority.cached
        self._links = server.link.faults
        self._events = server.config.events != "off"
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closing = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self._sock.fileno(), self._readable)

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    def _readable(self) -> None:
        receive, vlen = self._io.receive, self._io.vlen
        for _ in range(BATCHES_PER_WAKEUP):
            if self.closing:
                return
            sizes = receive()
            if sizes:
                self._answer(sizes)
            if len(sizes) < vlen:
                return  # drained

    def _answer(self, sizes: list[int]) -> None:
        """Answer receive slots 0..len(sizes)-1; one sendmmsg for every immediate answer.

        Send slot ``j`` starts out aimed at receive slot ``j`` (its address, its ID bytes): a
        hit then costs one copy of the kept tail and one length write. Once a query has no
        immediate answer (dropped, delayed, oversized) ``j`` lags ``i`` and the slot is
        re-aimed. Answers are copied into the send buffer, so a cache cleared by a later miss
        in the same batch cannot free bytes the kernel has yet to read.
        """
        io, server = self._io, self._server
        rbuf, sbuf, siov, shdr = io.rbuf, io.sbuf, io.siov, io.shdr
        if self._links.active:
            for i, size in enumerate(sizes):
                start = i * RECV_SLOT
                server.link.udp(bytes(rbuf[start : start + size]), io.address(i), self._send)
            return
        name_index, name_addr, id_addr = io.name_index, io.name_addr, io.id_addr
        cached, events, admit = self._cached, self._events, server.admit
        io.reset_send()
        j = 0
        for i, size in enumerate(sizes):
            start = i * RECV_SLOT
            # Byte 2 holds QR and the opcode: both zero for a QUERY (see _UdpProtocol).
            if size > 12 and not rbuf[start + 2] & 0xF8:
                entry = cached("udp", rbuf[start + 2 : start + size])
                if entry is not None:
                    entry.cell[0] += 1
                    tail = entry.tail
                    length = len(tail)
                    if length <= SEND_SLOT:
                        out = j * SEND_SLOT
                        sbuf[out : out + length] = tail
                        siov[4 * j + 3] = length
                        if i != j:
                            siov[4 * j] = id_addr[i]
                            shdr[name_index[j]] = name_addr[i]
                        j += 1
                    else:
                        self._send(rbuf[start : start + 2] + tail, io.address(i))
                    if events:
                        sample = admit()
                        if sample:
                            server.emit_cached_event(entry, io.address(i), sample)
                    continue
            addr = io.address(i)
            wire, info = server.process(rbuf[start : start + size], addr, "udp")
            if wire is None:
                continue
            if info is not None and info.delay:
                server.later(info.delay, self._send, wire, addr)
            elif len(wire) <= SEND_SLOT:
                # A full answer carries its own ID: the ID iovec is emptied for this slot.
                out = j * SEND_SLOT
                sbuf[out : out + len(wire)] = wire
                siov[4 * j + 1] = 0
                siov[4 * j + 3] = len(wire)
                shdr[name_index[j]] = name_addr[i]
                j += 1
            else:
                self._send(wire, addr)
        if j:
            for datagram, addr in io.flush(j):
                self._send(datagram, addr)

    def _send(self, wire: bytes, addr: Address) -> None:
        """One datagram on its own: delayed and oversized answers, and what sendmmsg left."""
        if self.closing:
            return
        try:
            self._sock.sendto(wire, addr)
        except OSError:
            # Socket buffer full (EAGAIN) or the address is unreachable: the answer is lost, as
            # it would be on the wire; counted so that it is not lost silently.
            self._server.udp_send_failed += 1


class DnsServer:
    """Listeners for one ``DnsServerConfig``; usable in-process (tests) or under a component."""

    def __init__(
        self,
        config: DnsServerConfig,
        events: EventSink,
        *,
        batch_udp: bool = True,
        governor: RateGovernor | None = None,
    ) -> None:
        self.config = config
        self.events = events
        self.authority = Authority(config.zones)
        attach_updates(self.authority, events, config.zones)  # RFC 2136 (nsupdate)
        self.authority.cell_for = self._cache_cell
        self.link = DnsLink(self)
        self.port = config.port
        self.cells: dict[CellKey, list[int]] = {}
        self.unanswered = 0
        self.tcp_accepted = 0
        self.events_written = 0
        self.udp_send_failed = 0  # answers the batched path could not hand to the kernel
        self.batch_udp = batch_udp
        self.udp_io = ""  # "recvmmsg" or "transport (<why>)", set by start()
        # The component's governor (its ``stats`` carry the dns.query count); in-process, one
        # of the server's own. Taking the tally makes dns.query this server's to count and emit.
        self._tally = (governor or RateGovernor()).tally(Kind.DNS_QUERY)
        self._sample = config.event_sample
        self._countdown = self._sample
        # admit() -> 0: this query gets no event; N: its event stands for N queries.
        self.admit: Callable[[], int] = {
            "auto": self._tally.admit,
            "all": self._admit_every,
            "sample": self._admit_sampled,
            "off": self._admit_none,
        }[config.events]
        self._udp: asyncio.DatagramTransport | _BatchedUdp | None = None
        self._tcp: asyncio.Server | None = None
        self.metrics: MetricsListener | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()

    @property
    def host(self) -> str:
        return str(self.config.address)

    async def start(self) -> None:
        # Port 0 asks for any free port: TCP then takes the same number as UDP, which
        # another socket may already hold over TCP, so a kernel-chosen port is tried again.
        wanted = self.port
        for attempt in range(1, _FREE_PORT_ATTEMPTS + 1):
            self.port = wanted
            try:
                self.port = await self._listen_udp()
            except OSError as exc:
                raise ComponentStartError(self._bind_error("udp", exc)) from None
            assert self._udp is not None
            try:
                self._tcp = await asyncio.start_server(
                    self._serve_tcp, self.host, self.port, reuse_address=True
                )
                break
            except OSError as exc:
                self._udp.close()
                self._udp = None
                if wanted != 0 or exc.errno != errno.EADDRINUSE or attempt == _FREE_PORT_ATTEMPTS:
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

    async def _listen_udp(self) -> int:
        """Bind UDP, batched where the platform allows; returns the bound port."""
        loop = asyncio.get_running_loop()
        reason = unavailable() if self.batch_udp else "batch_udp=False"
        if reason is None:
            family = socket.AF_INET6 if self.config.address.version == 6 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.bind((self.host, self.port))
                batched = _BatchedUdp(self, sock)
            except OSError:
                sock.close()
                raise
            batched.start(loop)
            self._udp, self.udp_io = batched, "recvmmsg"
            return int(sock.getsockname()[1])
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=(self.host, self.port)
        )
        self._udp, self.udp_io = transport, f"transport ({reason})"
        return int(transport.get_extra_info("sockname")[1])

    def _bind_error(self, transport: str, exc: OSError) -> str:
        reason = exc.strerror or str(exc)
        return f"cannot listen on {self.host}:{self.port}/{transport}: {reason}"

    async def close(self) -> None:
        if self.metrics is not None:
            metrics, self.metrics = self.metrics, None
            await asyncio.to_thread(metrics.close)
        if self._udp is not None:
            self._udp.close()
        self.link.close()
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

    def _admit_every(self) -> int:
        self._tally.count += 1
        return 1

    def _admit_sampled(self) -> int:
        self._tally.count += 1
        self._countdown -= 1
        if self._countdown:
            return 0
        self._countdown = self._sample
        return self._sample

    @staticmethod
    def _admit_none() -> int:
        return 0

    def _query_event(self, info: QueryInfo, sample: int) -> None:
        self.events_written += 1
        if sample > 1:
            self.events.emit(Kind.DNS_QUERY, sample=sample, **info.event_fields())
        else:
            self.events.emit(Kind.DNS_QUERY, **info.event_fields())

    def emit_cached_event(self, entry: CachedAnswer, client: Address, sample: int) -> None:
        """The event for an answer sent from the cache, once ``admit`` said it gets one; the
        client's address is decoded only then."""
        self._query_event(replace(entry.info, client=_client_text(client)), sample)

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
            sample = self.admit()
            if sample:
                self._query_event(info, sample)
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
                if self.link.faults.active:
                    await self.link.tcp_uncut(peer[0])
                async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                    prefix = await reader.readexactly(2)
                    query = await reader.readexactly(int.from_bytes(prefix, "big"))
                if self.link.faults.active and not await self.link.tcp_pass("in", peer[0]):
                    continue
                entry = None
                if len(query) > 12 and not query[2] & 0xF8:  # QUERY: try the cache first
                    entry = self.authority.cached("tcp", query[2:])
                if entry is not None:
                    entry.cell[0] += 1
                    wire, info = query[:2] + entry.tail, None
                    sample = self.admit()
                    if sample:
                        self.emit_cached_event(entry, peer, sample)
                else:
                    wire, info = self.process(query, peer, "tcp")
                if wire is None:
                    continue
                if info is not None and info.delay:
                    await asyncio.sleep(info.delay)
                if self.link.faults.active and not await self.link.tcp_pass("out", peer[0]):
                    continue
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
            "udp_io": self.udp_io,
            "udp_send_failed": self.udp_send_failed,
            "tcp_connections": len(self._connections),
            "events": self.config.events,
            "fault": self.authority.fault.describe(),
            "link": self.link.faults.state(),
        }


async def run_server(ctx: ComponentContext, config: DnsServerConfig) -> None:
    """A component's ``main``: listen, announce ``ready``, serve until told to stop."""
    server = DnsServer(config, ctx, governor=ctx.governor)
    ctx.on_command("status", server.status)
    register_control_ops(ctx, server.authority)
    register_link_ops(ctx, server.link.control)
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
