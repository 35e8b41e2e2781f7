"""The batched UDP path (``recvmmsg``/``sendmmsg``) against the one-datagram-at-a-time transport.

Both servers run in-process on port 0 and are fed the same datagrams, queued before the server
gets to read so that they arrive as one batch; every answer must be byte-for-byte the same, to
the same client, with the same counters. Run under asyncio's loop and under uvloop.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

import dns.message
import dns.opcode
import pytest
import uvloop

from dnsserver import mmsg
from dnsserver import server as server_module
from dnsserver.control import set_fault
from dnsserver.server import DnsServer, _BatchedUdp
from emulator.events import EventList
from tests.dnshelpers import seed_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(mmsg.unavailable() is not None, reason=str(mmsg.unavailable())),
]

CLUSTER = "habibexpc-cluster.uctest.local"
LOOPS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}


async def start(address: str, *, batch_udp: bool = True, **config: object) -> DnsServer:
    server = DnsServer(
        seed_server(address, 0).model_copy(update=config), EventList(), batch_udp=batch_udp
    )
    await server.start()
    assert server.udp_io == "recvmmsg" if batch_udp else server.udp_io.startswith("transport")
    return server


def client(address: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((address, 0))
    sock.setblocking(False)
    return sock


async def collect(sock: socket.socket, count: int, timeout: float = 10.0) -> list[bytes]:
    """``count`` datagrams from ``sock`` (fewer if they do not come within ``timeout``, which
    only a failing test waits out: it is generous for a loaded machine)."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        try:
            got.append(sock.recv(65535))
        except BlockingIOError:
            await asyncio.sleep(0.005)
    return got


def mixed_queries() -> list[bytes]:
    """Hits and misses: first sightings, repeats, rotation, NXDOMAIN, EDNS, UPDATE, runts."""
    asks = [
        ("exp1.uctest.local", "A", {}),
        ("_sip._tcp.uctest.local", "SRV", {}),
        (CLUSTER, "A", {}),
        ("nosuch.uctest.local", "A", {}),
        (CLUSTER.upper(), "A", {}),  # another spelling: its own entry, the same rotation
        ("exp2.uctest.local", "A", {"use_edns": 0, "payload": 4096}),
        ("_sips._tcp.uctest.local", "SRV", {}),
    ]
    wires: list[bytes] = []
    for index in range(150):
        name, rdtype, extra = asks[index % len(asks)]
        wires.append(dns.message.make_query(name, rdtype, id=index, **extra).to_wire())
        if index % 37 == 5:
            wires.append(b"\x12\x34\x00")  # a runt: no answer, later answers shift slots
        if index % 41 == 7:
            update = bytearray(
                dns.message.make_query("exp1.uctest.local", "A", id=1000 + index).to_wire()
            )
            update[2] |= dns.opcode.UPDATE << 3
            wires.append(bytes(update))
    return wires


async def answers_from(server: DnsServer, address: str, wires: list[bytes]) -> dict[int, bytes]:
    sock = client(address)
    try:
        for wire in wires:  # all queued before the server's loop runs again: one batch
            sock.sendto(wire, (address, server.port))
        got = await collect(sock, sum(len(wire) > 3 for wire in wires))
    finally:
        sock.close()
    return {int.from_bytes(wire[:2], "big"): wire for wire in got}


def spy_batches(server: DnsServer) -> list[int]:
    """Record the size of every batch the batched path answers."""
    udp = server._udp
    assert isinstance(udp, _BatchedUdp)
    sizes: list[int] = []
    answer = udp._answer

    def spy(batch: list[int]) -> None:
        sizes.append(len(batch))
        answer(batch)

    udp._answer = spy  # type: ignore[method-assign]
    return sizes


def status_counts(server: DnsServer) -> dict[str, Any]:
    status = server.status({})
    keys = ("queries_by_rcode", "queries_by_transport", "cache_hits", "unanswered")
    return {key: status[key] for key in keys}


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_mixed_batch_answers_exactly_like_the_transport(loop: str, address: str) -> None:
    async def main() -> None:
        batched, plain = await start(address), await start(address, batch_udp=False)
        sizes = spy_batches(batched)
        wires = mixed_queries()
        try:
            got, expected = (
                await answers_from(batched, address, wires),
                await answers_from(plain, address, wires),
            )
            assert max(sizes) == mmsg.VLEN  # really batched
            assert len(got) == len(expected) == sum(len(wire) > 3 for wire in wires)
            assert got == expected  # same bytes per ID: answers, rotation order, EDNS, UPDATE
            assert status_counts(batched) == status_counts(plain)
            assert batched.status({})["cache_hits"] > 100
            assert batched.udp_send_failed == 0
        finally:
            await batched.close()
            await plain.close()

    LOOPS[loop](main())


@pytest.mark.parametrize("loop", LOOPS)
def test_rotation_order_matches_the_unbatched_path(loop: str) -> None:
    async def main() -> None:
        batched, plain = await start("127.0.0.1"), await start("127.0.0.1", batch_udp=False)
        wires = [dns.message.make_query(CLUSTER, "A", id=i).to_wire() for i in range(100)]
        try:
            got = await answers_from(batched, "127.0.0.1", wires)
            expected = await answers_from(plain, "127.0.0.1", wires)

            def firsts(answers: dict[int, bytes]) -> list[str]:
                return [
                    dns.message.from_wire(answers[i]).answer[0][0].to_text() for i in range(100)
                ]

            assert firsts(got) == firsts(expected) == ["127.0.0.11", "127.0.0.12"] * 50
        finally:
            await batched.close()
            await plain.close()

    LOOPS[loop](main())


@pytest.mark.parametrize("loop", LOOPS)
def test_each_client_gets_its_own_answers_ipv4_and_ipv6(loop: str) -> None:
    async def main() -> None:
        server = await start("::1")
        v6 = [client("::1") for _ in range(3)]
        try:
            for index in range(120):  # interleaved clients, with runts shifting the slots
                sock = v6[index % 3]
                query = dns.message.make_query("exp1.uctest.local", "A", id=index)
                sock.sendto(query.to_wire(), ("::1", server.port))
                if index % 10 == 3:
                    sock.sendto(b"\x00", ("::1", server.port))
            for offset, sock in enumerate(v6):
                ids = [dns.message.from_wire(w).id for w in await collect(sock, 40)]
                assert sorted(ids) == list(range(offset, 120, 3))
        finally:
            for sock in v6:
                sock.close()
            await server.close()
        server = await start("127.0.0.1")
        v4 = [client(f"127.0.0.{n}") for n in (1, 2)]
        try:
            for index in range(100):
                sock = v4[index % 2]
                query = dns.message.make_query(CLUSTER, "A", id=index)
                sock.sendto(query.to_wire(), ("127.0.0.1", server.port))
            for offset, sock in enumerate(v4):
                ids = [dns.message.from_wire(w).id for w in await collect(sock, 50)]
                assert sorted(ids) == list(range(offset, 100, 2))
        finally:
            for sock in v4:
                sock.close()
            await server.close()

    LOOPS[loop](main())


def test_delay_fault_still_delays_only_its_name() -> None:
    async def main() -> None:
        server = await start("127.0.0.1")
        set_fault(
            server.events,
            server.authority,
            {"mode": "delay", "name": "exp1.uctest.local", "delay": 0.4},
        )
        sock = client("127.0.0.1")
        try:
            began = time.monotonic()
            for index in range(40):
                name = "exp1.uctest.local" if index % 4 == 0 else "exp2.uctest.local"
                query = dns.message.make_query(name, "A", id=index)
                sock.sendto(query.to_wire(), ("127.0.0.1", server.port))
            # All 40 are queued before the server's loop runs again, so it reads them in one go
            # and every prompt answer leaves before a held one could (the order shows it, not
            # the clock); the held ones cannot come before the configured delay.
            arrived = await collect(sock, 40)
            assert time.monotonic() - began >= 0.4
            ids = [dns.message.from_wire(w).id for w in arrived]
            assert sorted(ids[:30]) == [i for i in range(40) if i % 4]
            assert sorted(ids[30:]) == list(range(0, 40, 4))
            assert server.status({})["queries_by_rcode"] == {"NOERROR": 40}
        finally:
            sock.close()
            await server.close()

    asyncio.run(main())


@pytest.mark.parametrize(("mode", "expected"), [("all", 60), ("sample", 6), ("off", 0)])
def test_events_and_counters_in_a_batch(mode: str, expected: int) -> None:
    async def main() -> None:
        server = await start("127.0.0.1", events=mode, event_sample=10)
        plain = await start("127.0.0.1", batch_udp=False, events=mode, event_sample=10)
        wires = [
            dns.message.make_query(f"exp{1 + i % 2}.uctest.local", "A", id=i).to_wire()
            for i in range(60)
        ]
        try:
            for each in (server, plain):
                assert len(await answers_from(each, "127.0.0.1", wires)) == 60
            for each in (server, plain):
                assert isinstance(each.events, EventList)
                events = [f for kind, f in each.events.events if kind == "dns.query"]
                assert len(events) == expected
            if mode == "all":
                clients = {e["client"].rsplit(":", 1)[0] for e in events}
                assert clients == {"127.0.0.1"}
            assert status_counts(server) == status_counts(plain)
            assert server.status({})["cache_hits"] == 58
        finally:
            await server.close()
            await plain.close()

    asyncio.run(main())


def test_partial_sendmmsg_sends_the_rest_one_by_one() -> None:
    async def main() -> None:
        server = await start("127.0.0.1")
        udp = server._udp
        assert isinstance(udp, _BatchedUdp)
        real = udp._io._sendmmsg
        calls: list[int] = []

        def stingy(fd: int, hdrs: int, count: int, flags: int) -> int:
            # The kernel takes the first datagram of a batch, then says EAGAIN.
            calls.append(count)
            return real(fd, hdrs, 1, flags) if len(calls) % 2 else -1

        udp._io._sendmmsg = stingy
        wires = [dns.message.make_query(CLUSTER, "A", id=i).to_wire() for i in range(100)]
        try:
            got = await answers_from(server, "127.0.0.1", wires)
            assert sorted(got) == list(range(100))
            firsts = [dns.message.from_wire(got[i]).answer[0][0].to_text() for i in range(100)]
            assert firsts == ["127.0.0.11", "127.0.0.12"] * 50
            assert max(calls) > 1
            assert server.udp_send_failed == 0
        finally:
            await server.close()

    asyncio.run(main())


class _RefusingSocket:
    """A socket whose individual sends fail, as a full buffer would make them."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def sendto(self, data: bytes, addr: object) -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")


def test_failed_sends_are_counted_not_silent() -> None:
    async def main() -> None:
        server = await start("127.0.0.1")
        udp = server._udp
        assert isinstance(udp, _BatchedUdp)
        udp._io._sendmmsg = lambda fd, hdrs, count, flags: -1
        udp._sock = _RefusingSocket(udp._sock)  # type: ignore[assignment]
        wires = [dns.message.make_query(CLUSTER, "A", id=i).to_wire() for i in range(10)]
        try:
            assert await answers_from(server, "127.0.0.1", wires) == {}
            assert server.udp_send_failed == 10
            assert server.status({})["udp_send_failed"] == 10
        finally:
            await server.close()

    asyncio.run(main())


def test_answers_too_big_for_a_send_slot_go_out_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "SEND_SLOT", 20)  # every answer is "too big"

    async def main() -> None:
        server = await start("127.0.0.1")
        wires = [dns.message.make_query(CLUSTER, "A", id=i).to_wire() for i in range(30)]
        try:
            got = await answers_from(server, "127.0.0.1", wires)
            assert sorted(got) == list(range(30))
        finally:
            await server.close()

    asyncio.run(main())


@pytest.mark.parametrize("batch_udp", [True, False])
def test_a_kernel_chosen_port_whose_tcp_twin_is_taken_is_chosen_again(
    monkeypatch: pytest.MonkeyPatch, batch_udp: bool
) -> None:
    """Port 0: the first UDP port the kernel hands out is held over TCP by someone else
    (here, the test), as happens when many runs share a machine; the server takes another."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    listen_udp = DnsServer._listen_udp
    calls: list[int] = []

    async def first_lands_on_taken(self: DnsServer) -> int:
        calls.append(self.port)
        if len(calls) == 1:
            self.port = taken
        return await listen_udp(self)

    monkeypatch.setattr(DnsServer, "_listen_udp", first_lands_on_taken)

    async def main() -> None:
        server = await start("127.0.0.1", batch_udp=batch_udp)
        try:
            assert calls == [0, 0]
            assert server.port != taken
            wires = [dns.message.make_query(CLUSTER, "A", id=i).to_wire() for i in range(3)]
            assert sorted(await answers_from(server, "127.0.0.1", wires)) == [0, 1, 2]
        finally:
            await server.close()

    try:
        asyncio.run(main())
    finally:
        holder.close()
