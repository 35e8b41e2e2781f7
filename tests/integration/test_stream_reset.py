"""A TCP connection reset before its protocol saw it: no traceback, no flow, no stuck caller.

Found in CI: an endpoint reconnecting right after ``siplab kill`` of its peer reached the dying
peer's listener, whose kernel completed the handshake and then reset the connection when the
process's sockets closed. By the time ``connection_made`` ran, the socket had no peer name, the
protocol raised (a traceback on stderr), ``SipTransport.connect`` failed an assertion, and the
endpoint never tried another target. Reproduced here with a real listener closed before it
accepts, under asyncio's loop and under uvloop.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from emulator.sip.message import Message
from emulator.sip.transport import Flow, SipTransport, _StreamProtocol

pytestmark = pytest.mark.integration

LOOPS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}


class _User:
    def __init__(self) -> None:
        self.closed: list[Flow] = []

    def message_received(self, message: Message, flow: Flow) -> None:
        raise AssertionError("no message can come on a reset connection")

    def bad_message(self, flow: Flow, error: str) -> None:
        raise AssertionError(error)

    def flow_closed(self, flow: Flow, reason: str) -> None:
        self.closed.append(flow)


def _reset_socket() -> socket.socket:
    """A client socket whose handshake the kernel completed and whose listener then closed
    without accepting it: the connection is reset, and the socket has no peer name."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        client.connect(listener.getsockname())
    finally:
        listener.close()
    client.setblocking(False)
    return client


@pytest.mark.parametrize("loop", LOOPS)
def test_a_connection_reset_before_connection_made_gives_no_flow_and_no_error(
    loop: str,
) -> None:
    async def main() -> None:
        running = asyncio.get_running_loop()
        errors: list[dict[str, Any]] = []
        running.set_exception_handler(lambda _loop, context: errors.append(context))
        user = _User()
        transport = SipTransport(user)
        sock = _reset_socket()
        deadline = running.time() + 5
        while running.time() < deadline:  # the reset comes at once on loopback; bounded
            try:
                sock.getpeername()
            except OSError:
                break
            await asyncio.sleep(0.01)
        raw, proto = await running.create_connection(
            lambda: _StreamProtocol(transport, "tcp"), sock=sock
        )
        await asyncio.sleep(0.05)  # connection_lost, if any, runs
        assert errors == []
        assert proto.flow is None
        assert raw.is_closing()
        assert user.closed == []
        await transport.close()

    LOOPS[loop](main())
