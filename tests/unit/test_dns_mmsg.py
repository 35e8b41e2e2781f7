"""``dnsserver.mmsg`` pieces that need no traffic, and the explicit choice of the UDP path."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys

import dns.message
import pytest

from dnsserver import mmsg
from dnsserver import server as server_module
from dnsserver.server import DnsServer, _UdpProtocol
from emulator.events import EventList
from tests.dnshelpers import seed_server


def test_sockaddr_in_and_in6_decode_like_the_socket_module() -> None:
    v4 = struct.pack("=H", socket.AF_INET) + (5353).to_bytes(2, "big") + bytes([127, 0, 0, 9])
    assert mmsg.parse_sockaddr(v4 + bytes(8)) == ("127.0.0.9", 5353)
    v6 = (
        struct.pack("=H", socket.AF_INET6)
        + (40000).to_bytes(2, "big")
        + (7).to_bytes(4, "big")
        + socket.inet_pton(socket.AF_INET6, "::1")
        + (3).to_bytes(4, sys.byteorder)
    )
    assert mmsg.parse_sockaddr(v6) == ("::1", 40000, 7, 3)


def test_layout_matches_the_kernel_abi() -> None:
    # struct mmsghdr on LP64 Linux: a 56-byte msghdr, msg_len at 56, padded to 64.
    if struct.calcsize("P") == 8:
        assert (mmsg.HDR, mmsg.IOV, mmsg._LEN_OFF) == (64, 16, 56)


def test_not_linux_means_no_batching(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mmsg.sys, "platform", "darwin")
    assert mmsg._load_libc() == "not Linux (darwin)"


def _started(server: DnsServer) -> str:
    async def main() -> str:
        await server.start()
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.settimeout(3)
            query = dns.message.make_query("exp1.uctest.local", "A", id=77)
            loop = asyncio.get_running_loop()
            await loop.sock_connect(sock, ("127.0.0.1", server.port))
            sock.setblocking(False)
            await loop.sock_sendall(sock, query.to_wire())
            reply = dns.message.from_wire(await loop.sock_recv(sock, 4096))
            sock.close()
            assert reply.id == 77
            assert isinstance(server._udp, asyncio.BaseTransport) != (server.udp_io == "recvmmsg")
            return server.udp_io
        finally:
            await server.close()

    return asyncio.run(main())


def test_fallback_when_libc_lacks_recvmmsg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "unavailable", lambda: "libc has no recvmmsg/sendmmsg")
    server = DnsServer(seed_server("127.0.0.1", 0), EventList())
    assert _started(server) == "transport (libc has no recvmmsg/sendmmsg)"
    assert server.status({})["udp_io"].startswith("transport")


def test_fallback_when_turned_off() -> None:
    server = DnsServer(seed_server("127.0.0.1", 0), EventList(), batch_udp=False)
    assert _started(server) == "transport (batch_udp=False)"


@pytest.mark.skipif(mmsg.unavailable() is not None, reason=str(mmsg.unavailable()))
def test_batched_by_default_on_linux() -> None:
    server = DnsServer(seed_server("127.0.0.1", 0), EventList())
    assert _started(server) == "recvmmsg"
    assert _UdpProtocol is not None  # the fallback class stays importable for other tests
