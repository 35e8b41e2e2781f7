"""asyncio shells that move SIP messages over UDP, TCP and TLS, and nothing more.

The owner of a :class:`SipTransport` (a registrar or an endpoint) sees three things:
a message arrived on a flow, a bad message arrived on a flow, a flow closed. A flow is one
connection (TCP/TLS) or one remote address (UDP). A lost connection is reported as soon as
the kernel tells us (FIN or RST), which is what lets an endpoint fail over at once when a
peer dies.

Link faults (``emulator.sip.linkfault``) sit between the sockets and the owner: while
``links.active`` every datagram, stream chunk, outgoing message and lost connection passes
through the policy's queue; otherwise the only cost is that one attribute check.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import socket
import ssl
from collections.abc import Callable
from functools import partial
from typing import Any, Literal, NamedTuple, Protocol, cast

from emulator.rearm import Rearm
from emulator.sip.framing import KeepAlive, StreamFramer
from emulator.sip.linkfault import Direction, LinkFaults
from emulator.sip.message import DEFAULT_LIMITS, Limits, Message, SipParseError, parse_message
from emulator.sip.stun import binding_response, is_stun

TransportName = Literal["udp", "tcp", "tls"]
Address = tuple[str, int]

# RFC 5626 §3.5.1: a CRLF "pong" answers a double-CRLF "ping" on a stream.
PONG = b"\r\n"
# Linux: report every ICMP error on a connected UDP socket, not only "hard" ones (host
# unreachable is "soft" without it). Python 3.11 does not name the option.
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
# What an ICMP error on a UDP flow means, in the words an endpoint reports.
_ICMP_REASONS = {
    errno.ECONNREFUSED: "ICMP port unreachable",
    errno.EHOSTUNREACH: "ICMP host unreachable",
    errno.ENETUNREACH: "ICMP network unreachable",
}
# Asked for on every UDP socket (the kernel caps it at net.core.rmem_max). At the default
# (~200 KB, some 150 REGISTERs) a burst or a short stall of the loop overflows the socket, and
# each datagram dropped costs its client a 500 ms retransmission and the server the work twice.
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024


class Flow(NamedTuple):
    """One connection (TCP/TLS) or one remote address of a UDP socket. A named tuple: made
    for every datagram and a dict key everywhere, so made and hashed in C."""

    transport: TransportName
    local: Address
    remote: Address

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    def __str__(self) -> str:
        return f"{self.transport} {_fmt(self.local)}->{_fmt(self.remote)}"


def _fmt(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class TransportUser(Protocol):
    def message_received(self, message: Message, flow: Flow) -> None: ...

    def bad_message(self, flow: Flow, error: str) -> None: ...

    def flow_closed(self, flow: Flow, reason: str) -> None: ...


def _address(sockname: object) -> Address:
    # IPv6 socknames carry flowinfo and scope id; a flow only needs host and port.
    host, port = sockname[:2]  # type: ignore[index]
    return (str(host), int(port))


class _StreamProtocol(asyncio.Protocol):
    def __init__(self, owner: SipTransport, transport_name: TransportName) -> None:
        self._owner = owner
        self._links = owner.links
        self._name: TransportName = transport_name
        self._framer = StreamFramer(owner.limits)
        self._transport: asyncio.Transport | None = None
        self._closing_locally = False
        self._reading_paused = False
        # Answers written while one read is handled, sent with one write at its end: a client
        # that pipelines (SIPp over one connection) gets one segment, and we make one syscall.
        self._held: list[bytes] | None = None
        self.flow: Flow | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio's classes.
        self._transport = cast(asyncio.Transport, transport)
        local = transport.get_extra_info("sockname")
        remote = transport.get_extra_info("peername")
        if local is None or remote is None:
            # Reset before we got to it: a listener that was going away (a peer being killed)
            # had completed the handshake in the kernel. There is no flow to report.
            self._transport.abort()
            return
        self.flow = Flow(self._name, _address(local), _address(remote))
        self._owner._streams[self.flow] = self
        if self._links.active:
            self.follow_partition()  # the kernel accepts from a cut remote; we stay silent

    def follow_partition(self) -> None:
        """Stop reading while a partition cuts this stream, so the kernel keeps the bytes."""
        assert self.flow is not None
        cut = self._links.blocks(self._name, self.flow.remote[0])
        if self._transport is None or self._transport.is_closing() or cut == self._reading_paused:
            return
        self._reading_paused = cut
        if cut:
            self._transport.pause_reading()
        else:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._links.active:
            self._owner._link_submit("in", self, partial(self._receive, data))
        else:
            self._receive(data)

    def _receive(self, data: bytes) -> None:
        assert self.flow is not None
        if self._closing_locally:
            return  # closed while a link fault held the data back
        try:
            items = self._framer.feed(data)
        except SipParseError as exc:
            self._owner.user.bad_message(self.flow, str(exc))
            self.close()
            return
        self._held = []
        try:
            for item in items:
                if item is KeepAlive.PING:
                    self.send(PONG)
                elif item is KeepAlive.PONG:
                    if self._owner.on_pong is not None:
                        self._owner.on_pong(self.flow)
                else:
                    self._owner.user.message_received(item, self.flow)
        finally:
            self._release()

    def _release(self) -> None:
        held, self._held = self._held, None
        if held:
            self._write(held[0] if len(held) == 1 else b"".join(held))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.flow is None:
            return
        self._owner._streams.pop(self.flow, None)
        if self._closing_locally:
            reason = "closed locally"
        elif exc is None:
            reason = "closed by peer"
        else:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if self._links.active:
            # The FIN or RST travels the same impaired link as the data before it.
            self._owner._link_submit("in", self, partial(self._report_lost, reason))
        else:
            self._report_lost(reason)

    def _report_lost(self, reason: str) -> None:
        assert self.flow is not None
        self._links.forget(self)
        self._owner.user.flow_closed(self.flow, reason)

    def send(self, data: bytes) -> bool:
        if self._transport is None or self._transport.is_closing():
            return False
        if self._links.active:
            self._owner._link_submit("out", self, partial(self._write, data))
        elif self._held is not None:
            self._held.append(data)
        else:
            self._transport.write(data)
        return True

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._release()
        if self._transport is not None and not self._transport.is_closing():
            self._closing_locally = True
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._closing_locally = True
            self._transport.abort()


class _DatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport, remote: Address | None = None) -> None:
        self._owner = owner
        self._links = owner.links
        self.transport: asyncio.DatagramTransport | None = None
        self.local: Address = ("", 0)
        # Set for a connected socket (one flow): the kernel then reports ICMP errors on it.
        self.remote = remote

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.local = _address(transport.get_extra_info("sockname"))
        sock = transport.get_extra_info("socket")
        if self.remote is not None and sock is not None and sock.family == socket.AF_INET:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)

    def datagram_received(self, data: bytes, addr: object) -> None:
        if self._links.active:
            remote = _address(addr)
            self._owner._link_submit_udp("in", remote, partial(self._receive, data, remote))
        else:
            self._receive(data, addr)

    def _receive(self, data: bytes, addr: object) -> None:
        flow = Flow("udp", self.local, _address(addr))
        if data[:1] in (b"\r", b"\n") and not data.strip(b"\r\n"):
            return  # a UDP keep-alive carries no message
        if is_stun(data):
            # RFC 5626 §4.4.2: the keep-alive of an outbound UDP flow is a STUN Binding.
            answer = binding_response(data, flow.remote)
            if answer is not None:
                self._owner.send(flow, answer)
            return
        try:
            message = parse_message(data, self._owner.limits)
        except SipParseError as exc:
            self._owner.user.bad_message(flow, str(exc))
            return
        self._owner.user.message_received(message, flow)

    def sendto(self, data: bytes, remote: Address) -> None:
        if self.transport is not None and not self.transport.is_closing():
            # A connected socket takes no address (asyncio checks it against its peer).
            self.transport.sendto(data, None if self.remote is not None else remote)

    def error_received(self, exc: Exception) -> None:
        # On an unconnected socket an ICMP error cannot be tied to a flow; transaction timers
        # notice an unreachable peer. A connected socket is one flow: the error is a
        # transport error on it (RFC 3261 §18.1.1), reported as the flow closing.
        if self.remote is None or self.transport is None or self.transport.is_closing():
            return
        code = exc.errno if isinstance(exc, OSError) else None
        reason = _ICMP_REASONS.get(code or 0) or str(exc)
        flow = Flow("udp", self.local, self.remote)
        self._owner._datagrams.pop(self.local, None)
        self.transport.close()
        self._owner.user.flow_closed(flow, reason)


class SipTransport:
    """Owns one process's SIP sockets: listeners, outgoing connections and UDP sockets."""

    def __init__(
        self,
        user: TransportUser,
        limits: Limits = DEFAULT_LIMITS,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.user = user
        self.limits = limits
        self.links: LinkFaults[Callable[[], None]] = LinkFaults(rng or random.Random())
        self._link_timer = Rearm(self._link_pump)
        self._link_pumping = False
        self._closed = False
        self._servers: list[asyncio.Server] = []
        self._streams: dict[Flow, _StreamProtocol] = {}
        self._datagrams: dict[Address, _DatagramProtocol] = {}
        # Called with the flow when a CRLF pong (RFC 5626 §4.4.1) arrives on a stream: the
        # answer to a keep-alive its owner sent.
        self.on_pong: Callable[[Flow], None] | None = None

    async def listen(
        self,
        transport: TransportName,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Address:
        """Start a listener; returns the bound address. OSError propagates to the caller."""
        loop = asyncio.get_running_loop()
        if transport == "udp":
            udp, proto = await loop.create_datagram_endpoint(
                lambda: _DatagramProtocol(self), local_addr=(host, port)
            )
            with contextlib.suppress(OSError):
                udp.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER
                )
            self._datagrams[proto.local] = proto
            return proto.local
        if transport == "tls" and ssl_context is None:
            raise ValueError("a TLS listener needs an SSL context")
        name: TransportName = transport
        server = await loop.create_server(
            lambda: _StreamProtocol(self, name),
            host,
            port,
            ssl=ssl_context if transport == "tls" else None,
            reuse_address=True,
        )
        self._servers.append(server)
        return _address(server.sockets[0].getsockname())

    async def open_udp(self, host: str, port: int = 0) -> Address:
        """A UDP socket for sending requests from ``host`` (an endpoint's own address)."""
        return await self.listen("udp", host, port)

    async def connect(
        self,
        transport: TransportName,
        remote: Address,
        *,
        local_host: str,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 5.0,
        udp_connected: bool = False,
        server_hostname: str | None = None,
    ) -> Flow:
        """Open a connection (TCP/TLS), or name a flow from our UDP socket on ``local_host``.

        ``udp_connected``: a UDP socket of the flow's own, connected to ``remote``, so that
        ICMP errors come back as the flow closing. ``server_hostname``: the name a verifying
        TLS context checks the certificate against."""
        if transport == "udp" and udp_connected:
            loop = asyncio.get_running_loop()
            _, dgram = await loop.create_datagram_endpoint(
                lambda: _DatagramProtocol(self, remote),
                local_addr=(local_host, 0),
                remote_addr=remote,
            )
            self._datagrams[dgram.local] = dgram
            return Flow("udp", dgram.local, remote)
        if transport == "udp":
            for local, proto in self._datagrams.items():
                if local[0] == local_host:
                    return Flow("udp", proto.local, remote)
            local = await self.open_udp(local_host)
            return Flow("udp", local, remote)
        loop = asyncio.get_running_loop()
        name: TransportName = transport
        async with asyncio.timeout(timeout):
            _, proto = await loop.create_connection(
                lambda: _StreamProtocol(self, name),
                remote[0],
                remote[1],
                local_addr=(local_host, 0),
                ssl=ssl_context if transport == "tls" else None,
                server_hostname=(server_hostname or "") if transport == "tls" else None,
            )
        if proto.flow is None:
            raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
        return proto.flow

    def send(self, flow: Flow, data: bytes) -> bool:
        """Send on a flow; False when the flow no longer exists (the caller treats it as lost)."""
        if flow.transport == "udp":
            proto = self._datagrams.get(flow.local)
            if proto is None or proto.transport is None or proto.transport.is_closing():
                return False
            if self.links.active:
                send = partial(proto.sendto, data, flow.remote)
                self._link_submit_udp("out", flow.remote, send)
            else:
                proto.sendto(data, flow.remote)
            return True
        stream = self._streams.get(flow)
        return stream is not None and stream.send(data)

    # -- link faults ---------------------------------------------------------------------

    def link_control(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Apply a link op (``partition``/``heal``/``impair``); returns the link state."""
        state = self.links.control(op, args)
        for stream in list(self._streams.values()):
            stream.follow_partition()
        self._link_pump()
        return state

    def _link_submit(
        self, direction: Direction, stream: _StreamProtocol, payload: Callable[[], None]
    ) -> None:
        assert stream.flow is not None
        now = asyncio.get_running_loop().time()
        self.links.submit(
            direction, stream.flow.transport, stream.flow.remote[0], stream, payload, now
        )
        self._link_pump()

    def _link_submit_udp(
        self, direction: Direction, remote: Address, payload: Callable[[], None]
    ) -> None:
        now = asyncio.get_running_loop().time()
        self.links.submit(direction, "udp", remote[0], None, payload, now)
        self._link_pump()

    def _link_pump(self) -> None:
        """Deliver what is due, then wake at the next delivery time.

        A delivery can make the owner send, which queues more: that happens inside this loop
        (the guard), so a message queued behind one already popped cannot overtake it."""
        if self._link_pumping or self._closed:
            return
        self._link_pumping = True
        try:
            loop = asyncio.get_running_loop()
            while due := self.links.pop_due(loop.time()):
                for item in due:
                    item.payload()
        finally:
            self._link_pumping = False
        self._link_timer.arm(self.links.next_timer())

    def close_flow(self, flow: Flow) -> None:
        stream = self._streams.get(flow)
        if stream is not None:
            stream.close()
        dgram = self._datagrams.get(flow.local) if flow.transport == "udp" else None
        if dgram is not None and dgram.remote is not None and dgram.transport is not None:
            del self._datagrams[flow.local]  # a flow's own socket; shared ones stay open
            dgram.transport.close()

    async def close(self) -> None:
        self._closed = True
        self._link_timer.cancel()
        for server in self._servers:
            server.close()
        for stream in list(self._streams.values()):
            stream.abort()
        for proto in self._datagrams.values():
            if proto.transport is not None:
                proto.transport.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await server.wait_closed()
        self._servers.clear()
        self._datagrams.clear()
