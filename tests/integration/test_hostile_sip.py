"""A registrar peer fed garbage over UDP and TCP keeps serving, and says what it refused."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable

import pytest

from emulator.lab.testing import TestLab
from emulator.sip.message import Response, new_branch, parse_message

pytestmark = pytest.mark.integration

GARBAGE = [
    b"\x00\xff" * 40,
    b"REGISTER\r\n\r\n",
    b"SIP/2.0 999999 Nope\r\n\r\n",
    b"INVITE sip:x SIP/2.0\r\nContent-Length: -5\r\n\r\n",
    b"OPTIONS sip:uctest.local SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1\r\n\r\n",
]


def options(address: str, port: int) -> bytes:
    return (
        f"OPTIONS sip:uctest.local SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {address}:{port};branch={new_branch()}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:probe@uctest.local>;tag=p\r\n"
        "To: <sip:uctest.local>\r\nCall-ID: probe\r\nCSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def send_until_closed(stream: bytes, peer: tuple[str, int], local: str) -> None:
    """Send ``stream`` on a new connection and read until the peer closes it.

    The peer closes a connection it cannot frame as soon as it has read enough to know; bytes
    of ours still unread then make its kernel answer with a reset, which reaches us in
    ``sendall``, ``shutdown`` (not connected any more) or ``recv``, depending on timing. A
    reset is the peer closing too."""
    with socket.create_connection(peer, timeout=5, source_address=(local, 0)) as tcp:
        try:
            tcp.sendall(stream)
            tcp.shutdown(socket.SHUT_WR)
            while tcp.recv(4096):
                pass
        except (ConnectionResetError, BrokenPipeError):
            pass
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:
                raise


def test_registrar_survives_garbage(make_lab: Callable[..., TestLab]) -> None:
    lab = make_lab()
    peer = lab.status()["peers"][0]
    host = peer["address"]
    seq = lab.seq()
    prefix = host.rsplit(".", 1)[0]
    local = f"{prefix}.200"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((local, 0))
        udp.settimeout(5)
        for datagram in GARBAGE:
            udp.sendto(datagram, (host, 5060))
        for stream in (*GARBAGE, b"REGISTER sip:x SIP/2.0\r\n" + b"X-Big: y\r\n" * 5000):
            send_until_closed(stream, (host, 5060), local)
        udp.sendto(options(local, udp.getsockname()[1]), (host, 5060))
        reply = parse_message(udp.recv(65535))
    assert isinstance(reply, Response)
    assert reply.status == 200
    bad = lab.until(
        lambda e: e["component"] == peer["name"] and e["kind"] == "sip.bad_message",
        since=seq,
        what="sip.bad_message",
    )
    assert bad["error"]
    assert lab.endpoint()["state"] == "Registered"
    assert next(p for p in lab.status()["peers"] if p["name"] == peer["name"])["state"] == "active"
