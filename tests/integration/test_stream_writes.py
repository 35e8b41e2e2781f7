"""Answers to requests that came in one TCP read leave in one write.

SIPp, and any client that pipelines over one connection, puts many REGISTERs in one segment. One
write per answer cost a syscall and a segment each; the registrar benchmark's TCP refresh spent
measurably less CPU per REGISTER once they were joined. Real sockets on loopback, under asyncio's
loop and under uvloop.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from emulator.sip.message import Message, Request
from emulator.sip.transport import Flow, SipTransport, _StreamProtocol

pytestmark = pytest.mark.integration

LOOPS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}


def request(cseq: int) -> bytes:
    return (
        f"REGISTER sip:uctest.local SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK{cseq}\r\n"
        f"From: <sip:1001@uctest.local>;tag=t\r\n"
        f"To: <sip:1001@uctest.local>\r\n"
        f"Call-ID: c@h\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


class _Answering:
    """Answers each request at once, as the registrar does, with a line naming its CSeq."""

    def __init__(self) -> None:
        self.transport: SipTransport | None = None

    def message_received(self, message: Message, flow: Flow) -> None:
        assert isinstance(message, Request)
        assert self.transport is not None
        self.transport.send(flow, f"answer {message.headers.get('CSeq')}\r\n".encode())

    def bad_message(self, flow: Flow, error: str) -> None:
        raise AssertionError(error)

    def flow_closed(self, flow: Flow, reason: str) -> None:
        pass


@pytest.mark.parametrize("loop", LOOPS)
def test_answers_to_one_read_go_out_in_one_write(
    loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[bytes] = []
    write = _StreamProtocol._write

    def counted(self: _StreamProtocol, data: bytes) -> None:
        writes.append(data)
        write(self, data)

    monkeypatch.setattr(_StreamProtocol, "_write", counted)

    async def main() -> None:
        user = _Answering()
        transport = SipTransport(user)
        user.transport = transport
        host, port = await transport.listen("tcp", "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(host, port)
        try:
            # Three requests and a CRLF keep-alive in one segment: the kernel hands them to
            # the server in one read (TCP_NODELAY, a few hundred bytes on loopback).
            writer.transport.get_extra_info("socket").setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
            )
            writer.write(request(1) + request(2) + b"\r\n\r\n" + request(3))
            expected = b"answer 1 REGISTER\r\nanswer 2 REGISTER\r\n\r\nanswer 3 REGISTER\r\n"
            got = await asyncio.wait_for(reader.readexactly(len(expected)), 5)
            assert got == expected
        finally:
            writer.close()
            await transport.close()
        assert writes == [expected]

    LOOPS[loop](main())
