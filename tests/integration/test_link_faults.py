"""In-process link faults (partition, impairment) on real registrar and DNS server processes.

Each test starts its component with ``--config-json`` and ``--control stdio`` as the lab does,
drives the ``partition``/``heal``/``impair`` control ops, and talks to it from real sockets.
Silence is checked over a short window (``QUIET``) on traffic that, unfaulted, is answered in
milliseconds; lower bounds on lateness come from the configured delay only.

Addresses: one /24 per test from the session's own loopback /16 (tests.labs.allocate_prefix).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import pytest

from dnsserver.config import DnsServerConfig
from dnsserver.server import DnsServer
from emulator.events import EventList
from emulator.kinds import Kind
from emulator.lab.testing import ComponentUnderTest
from emulator.sip.framing import KeepAlive, StreamFramer
from emulator.sip.message import Message, Response, new_branch, parse_message
from tests.dnshelpers import DnsProcess, seed_zone
from tests.labs import allocate_prefix

pytestmark = pytest.mark.integration

QUIET = 0.8  # seconds of silence that show a partition (an answer takes milliseconds)
DELAY = 0.3
# uvloop's timers (libuv's) count whole milliseconds, so a delay can end up to a millisecond
# before the same span measured with time.monotonic().
TIMER_RESOLUTION = 0.002
DNS_PORT = 1053
NO_LINK_FAULT = {"partition": None, "impair": {"in": None, "out": None}}


# -- SIP clients ------------------------------------------------------------------------------


def register(local: str, port: int, transport: str, call_id: str) -> bytes:
    return (
        f"REGISTER sip:uctest.local SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {local}:{port};branch={new_branch()};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{call_id}@uctest.local>;tag=t\r\n"
        f"To: <sip:{call_id}@uctest.local>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{call_id}@{local}:{port};transport={transport.lower()}>\r\n"
        "Expires: 60\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait(data)


class UdpClient:
    def __init__(self, local: str, peer: str) -> None:
        self.local, self.peer = local, peer
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol = _Datagrams()

    async def __aenter__(self) -> UdpClient:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: self._protocol, local_addr=(self.local, 0)
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._transport is not None
        self._transport.close()

    def register(self, call_id: str) -> float:
        """Send a REGISTER; returns when it left (monotonic time)."""
        assert self._transport is not None
        port = self._transport.get_extra_info("sockname")[1]
        sent = time.monotonic()
        self._transport.sendto(register(self.local, port, "UDP", call_id), (self.peer, 5060))
        return sent

    async def response(self, timeout: float = 5.0) -> Response:
        async with asyncio.timeout(timeout):
            message = parse_message(await self._protocol.received.get())
        assert isinstance(message, Response)
        return message

    async def silent(self, window: float = QUIET) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(window):
                await self._protocol.received.get()
                return False
        return True


class TcpClient:
    def __init__(self, local: str, peer: str) -> None:
        self.local, self.peer = local, peer
        self._framer = StreamFramer()
        self._items: list[Message | KeepAlive] = []

    async def __aenter__(self) -> TcpClient:
        self.reader, self.writer = await asyncio.open_connection(
            self.peer, 5060, local_addr=(self.local, 0)
        )
        return self

    @classmethod
    async def tls(cls, local: str, peer: str) -> TcpClient:
        """A TLS connection to port 5061 (the peer's certificate is made at start: unchecked)."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        client = cls(local, peer)
        client.reader, client.writer = await asyncio.open_connection(
            peer, 5061, local_addr=(local, 0), ssl=context
        )
        return client

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()

    def register(self, call_id: str) -> float:
        port = self.writer.get_extra_info("sockname")[1]
        sent = time.monotonic()
        self.writer.write(register(self.local, port, "TCP", call_id))
        return sent

    def ping(self) -> None:
        self.writer.write(b"\r\n\r\n")

    async def next_item(self, timeout: float = 5.0) -> Message | KeepAlive:
        async with asyncio.timeout(timeout):
            while not self._items:
                data = await self.reader.read(65535)
                assert data, "the registrar closed the connection"
                self._items += self._framer.feed(data)
        return self._items.pop(0)

    async def response(self, timeout: float = 5.0) -> Response:
        item = await self.next_item(timeout)
        assert isinstance(item, Response), item
        return item

    async def silent(self, window: float = QUIET) -> bool:
        try:
            await self.next_item(window)
        except TimeoutError:
            return True
        return False


def answered(response: Response, call_id: str) -> bool:
    return response.status == 200 and response.headers.get("Call-ID") == call_id


@contextlib.asynccontextmanager
async def registrar(address: str) -> AsyncIterator[ComponentUnderTest]:
    config = {"name": "exp1", "address": address, "domains": ["uctest.local"]}
    process = await ComponentUnderTest.launch("registrar", json.dumps(config))
    try:
        await process.wait_for(Kind.READY)
        yield process
    finally:
        await process.stop()


async def link_op(process: ComponentUnderTest, op: str, **args: Any) -> dict[str, Any]:
    """Run a link op that must succeed: one ``link.changed`` event carries the state it
    replies with (the event is written before the reply, so it is in by then)."""
    before = len(changes(process))
    reply = await process.request(op, **args)
    assert reply["ok"], reply
    state: dict[str, Any] = reply["result"]
    emitted = changes(process)[before:]
    assert len(emitted) == 1
    assert {key: emitted[0][key] for key in state} == state
    return state


def changes(process: ComponentUnderTest) -> list[dict[str, Any]]:
    return [e for e in process.events if e["kind"] == Kind.LINK_CHANGED]


# -- registrar --------------------------------------------------------------------------------


async def test_partition_silences_udp_tcp_and_keepalives_until_the_heal() -> None:
    net = allocate_prefix()
    peer, local = f"{net}.10", f"{net}.100"
    async with registrar(peer) as process, TcpClient(local, peer) as before:
        before.register("tcp-before")
        assert answered(await before.response(), "tcp-before")

        state = await link_op(process, "partition", remotes=None, transports=None)
        assert state == {
            "partition": {"remotes": None, "transports": None},
            "impair": {"in": None, "out": None},
        }
        status = await process.request("status")
        assert status["result"]["link"] == state

        async with UdpClient(local, peer) as udp, TcpClient(local, peer) as during:
            udp.register("udp-during")
            before.register("tcp-during")
            before.ping()
            during.ping()  # a connection the kernel accepted during the partition
            assert await udp.silent()
            assert await before.silent()
            assert await during.silent()

            assert await link_op(process, "heal") == NO_LINK_FAULT
            # What TCP carried during the partition arrives now, in order.
            assert answered(await before.response(), "tcp-during")
            assert await before.next_item() is KeepAlive.PONG
            assert await during.next_item() is KeepAlive.PONG
            # The datagram sent during the partition was lost; a new one is answered.
            udp.register("udp-after")
            assert answered(await udp.response(), "udp-after")
            assert await udp.silent(0.2)


async def test_partition_of_tls_holds_the_stream_until_the_heal() -> None:
    net = allocate_prefix()
    peer, local = f"{net}.10", f"{net}.100"
    async with registrar(peer) as process:
        tls = await TcpClient.tls(local, peer)
        try:
            tls.ping()
            assert await tls.next_item() is KeepAlive.PONG
            await link_op(process, "partition", transports=["tls"])
            tls.ping()
            assert await tls.silent()
            async with UdpClient(local, peer) as udp:  # only TLS is cut
                udp.register("udp-spared")
                assert answered(await udp.response(), "udp-spared")
            await link_op(process, "heal")
            assert await tls.next_item() is KeepAlive.PONG
        finally:
            await tls.close()


async def test_partition_of_one_remote_leaves_another_answered() -> None:
    net = allocate_prefix()
    peer, cut, other = f"{net}.10", f"{net}.100", f"{net}.101"
    async with (
        registrar(peer) as process,
        UdpClient(cut, peer) as cut_udp,
        UdpClient(other, peer) as other_udp,
        TcpClient(cut, peer) as cut_tcp,
        TcpClient(other, peer) as other_tcp,
    ):
        state = await link_op(process, "partition", remotes=[cut])
        assert state["partition"] == {"remotes": [cut], "transports": None}
        # The cut client goes first: had it been answered, its answer would come first.
        cut_udp.register("cut-udp")
        cut_tcp.register("cut-tcp")
        other_udp.register("other-udp")
        other_tcp.register("other-tcp")
        assert answered(await other_udp.response(), "other-udp")
        assert answered(await other_tcp.response(), "other-tcp")
        assert await cut_udp.silent()
        assert await cut_tcp.silent()


@pytest.mark.parametrize("direction", ["in", "out"])
async def test_impair_delay_holds_the_answer_back(direction: str) -> None:
    net = allocate_prefix()
    peer, local = f"{net}.10", f"{net}.100"
    async with (
        registrar(peer) as process,
        UdpClient(local, peer) as udp,
        TcpClient(local, peer) as tcp,
    ):
        state = await link_op(process, "impair", direction=direction, delay=DELAY)
        assert state["impair"][direction]["delay"] == DELAY
        other = "out" if direction == "in" else "in"
        assert state["impair"][other] is None
        sent = udp.register("udp-late")
        response = await udp.response()
        assert time.monotonic() - sent >= DELAY - TIMER_RESOLUTION
        assert answered(response, "udp-late")
        sent = tcp.register("tcp-late")
        response = await tcp.response()
        assert time.monotonic() - sent >= DELAY - TIMER_RESOLUTION
        assert answered(response, "tcp-late")
        sent = time.monotonic()
        tcp.ping()
        assert await tcp.next_item() is KeepAlive.PONG
        assert time.monotonic() - sent >= DELAY - TIMER_RESOLUTION


async def test_total_loss_on_udp_loses_every_answer_and_spares_tcp() -> None:
    net = allocate_prefix()
    peer, local = f"{net}.10", f"{net}.100"
    async with (
        registrar(peer) as process,
        UdpClient(local, peer) as udp,
        TcpClient(local, peer) as tcp,
    ):
        await link_op(process, "impair", loss=1.0, transports=["udp"], seed=7)
        udp.register("udp-lost")
        tcp.register("tcp-kept")
        assert answered(await tcp.response(), "tcp-kept")
        assert await udp.silent()
        await link_op(process, "heal")
        udp.register("udp-healed")
        assert answered(await udp.response(), "udp-healed")


async def test_bad_link_args_are_refused_in_one_line_and_the_peer_keeps_serving() -> None:
    net = allocate_prefix()
    peer, local = f"{net}.10", f"{net}.100"
    async with registrar(peer) as process, UdpClient(local, peer) as udp:
        for op, args in [
            ("partition", {"remotes": "everyone"}),
            ("partition", {"transports": ["carrier-pigeon"]}),
            ("impair", {"loss": 2}),
            ("impair", {"delay": -0.1}),
            ("impair", {"direction": "up", "delay": 1}),
            ("heal", {"please": True}),
        ]:
            reply = await process.request(op, **args)
            assert reply["ok"] is False, reply
            assert reply["error"]
            assert "\n" not in reply["error"]
        assert not changes(process)
        status = await process.request("status")
        assert status["result"]["link"] == NO_LINK_FAULT
        udp.register("still-serving")
        assert answered(await udp.response(), "still-serving")


# -- DNS server -------------------------------------------------------------------------------


def dns_config(address: str) -> DnsServerConfig:
    return DnsServerConfig(address=address, port=DNS_PORT, zones=[seed_zone()])


QUERY = "exp1.uctest.local"


async def ask_udp(address: str, *, source: str, timeout: float = 3.0) -> dns.message.Message:
    query = dns.message.make_query(QUERY, "A")
    return await dns.asyncquery.udp(query, address, port=DNS_PORT, timeout=timeout, source=source)


async def ask_tcp(address: str, *, source: str, timeout: float = 3.0) -> dns.message.Message:
    query = dns.message.make_query(QUERY, "A")
    return await dns.asyncquery.tcp(query, address, port=DNS_PORT, timeout=timeout, source=source)


def addresses(response: dns.message.Message) -> list[str]:
    return [rdata.address for rdata in response.answer[0]]


async def start_dns_process(address: str) -> DnsProcess:
    process = await DnsProcess.start(dns_config(address))
    try:
        await process.wait_for(Kind.READY)
    except BaseException:
        await process.stop()
        raise
    return process


async def test_dns_partition_times_out_until_the_heal() -> None:
    net = allocate_prefix()
    server, client = f"{net}.10", f"{net}.100"
    process = await start_dns_process(server)
    try:
        assert addresses(await ask_udp(server, source=client)) == ["127.0.0.11"]
        state = await link_op(process, "partition")
        status = await process.request("status")
        assert status["result"]["link"] == state
        with pytest.raises(dns.exception.Timeout):
            await ask_udp(server, source=client, timeout=QUIET)
        # A TCP query sent during the partition waits; it is answered after the heal.
        pending = asyncio.create_task(ask_tcp(server, source=client, timeout=10))
        done, _ = await asyncio.wait({pending}, timeout=QUIET)
        assert not done
        await link_op(process, "heal")
        assert addresses(await pending) == ["127.0.0.11"]
        assert addresses(await ask_udp(server, source=client)) == ["127.0.0.11"]
    finally:
        await process.stop()


async def test_dns_partition_of_one_client_leaves_another_answered() -> None:
    net = allocate_prefix()
    server, cut, other = f"{net}.10", f"{net}.100", f"{net}.101"
    process = await start_dns_process(server)
    try:
        await link_op(process, "partition", remotes=[cut], transports=["udp", "tcp"])
        assert addresses(await ask_udp(server, source=other)) == ["127.0.0.11"]
        assert addresses(await ask_tcp(server, source=other)) == ["127.0.0.11"]
        with pytest.raises(dns.exception.Timeout):
            await ask_udp(server, source=cut, timeout=QUIET)
        with pytest.raises(dns.exception.Timeout):
            await ask_tcp(server, source=cut, timeout=QUIET)
    finally:
        await process.stop()


async def test_dns_delay_and_loss_and_bad_args() -> None:
    net = allocate_prefix()
    server, client = f"{net}.10", f"{net}.100"
    process = await start_dns_process(server)
    try:
        await link_op(process, "impair", direction="out", delay=DELAY)
        for ask in (ask_udp, ask_tcp):
            started = time.monotonic()
            response = await ask(server, source=client)
            assert time.monotonic() - started >= DELAY - TIMER_RESOLUTION
            assert addresses(response) == ["127.0.0.11"]
        await link_op(process, "impair", direction="both", loss=1.0, transports=["udp"])
        with pytest.raises(dns.exception.Timeout):
            await ask_udp(server, source=client, timeout=QUIET)
        reply = await process.request("impair", loss="all")
        assert reply["ok"] is False
        assert "\n" not in reply["error"]
        reply = await process.request("partition", remotes=["not-an-address"])
        assert reply["ok"] is False
        await link_op(process, "heal")
        assert addresses(await ask_udp(server, source=client)) == ["127.0.0.11"]
        # The DNS fault op is not a link fault: it still works as before.
        reply = await process.request("fault", mode="servfail")
        assert reply["ok"], reply
        response = await ask_udp(server, source=client)
        assert dns.rcode.to_text(response.rcode()) == "SERVFAIL"
    finally:
        await process.stop()


@pytest.mark.parametrize("batch_udp", [True, False], ids=["recvmmsg", "transport"])
async def test_dns_delay_applies_on_both_udp_paths(batch_udp: bool) -> None:
    """In-process on real sockets: the batched path and the datagram transport both obey it,
    and cached answers (the fast path) too."""
    net = allocate_prefix()
    server_address = f"{net}.10"
    client = server_address.rsplit(".", 1)[0] + ".100"
    server = DnsServer(dns_config(server_address), EventList(), batch_udp=batch_udp)
    await server.start()
    try:
        for _ in range(2):  # the second one would be a cached answer
            assert addresses(await ask_udp(server_address, source=client)) == ["127.0.0.11"]
        server.link.control("impair", {"direction": "in", "delay": DELAY})
        started = time.monotonic()
        assert addresses(await ask_udp(server_address, source=client)) == ["127.0.0.11"]
        assert time.monotonic() - started >= DELAY - TIMER_RESOLUTION
        server.link.control("partition", {"remotes": [client]})
        with pytest.raises(dns.exception.Timeout):
            await ask_udp(server_address, source=client, timeout=QUIET)
        server.link.control("heal", {})
        assert addresses(await ask_udp(server_address, source=client)) == ["127.0.0.11"]
    finally:
        await server.close()
