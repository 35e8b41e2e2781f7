"""Link faults on the DNS server: the asyncio side of ``emulator.sip.linkfault``.

Partition: no answers for matching clients (UDP queries are dropped; a TCP connection is not
read, and a query already read waits, until the heal). Impairment: ``in`` delays or loses the
query, ``out`` the answer, with the policy's meaning of loss per transport (a TCP query or
answer is late by retransmission timeouts, not lost). While a link fault is active UDP leaves
the fast paths (cached answers, batched sends) and every query takes ``DnsServer.process``;
the ``fault`` op (down/servfail/delay) still applies on top.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from emulator.rearm import Rearm
from emulator.sip.linkfault import HELD, Direction, LinkFaults

if TYPE_CHECKING:
    from dnsserver.server import Address, DnsServer

Send = Callable[[bytes, "Address"], None]


class DnsLink:
    def __init__(self, server: DnsServer, rng: random.Random | None = None) -> None:
        self._server = server
        self.faults: LinkFaults[Callable[[], None]] = LinkFaults(rng or random.Random())
        self._timer = Rearm(self._pump)
        self._changed = asyncio.Event()
        self._closed = False

    def control(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        state = self.faults.control(op, args)
        # Wake every TCP connection waiting on a partition; each looks again.
        self._changed.set()
        self._changed = asyncio.Event()
        self._pump()
        return state

    def close(self) -> None:
        self._closed = True
        self._timer.cancel()

    # -- UDP: queued through the policy ------------------------------------------------------

    def udp(self, query: bytes, client: Address, send: Send) -> None:
        """A query arrived while a link fault is active: answer it through the link."""
        self._submit("in", client, partial(self._answer, query, client, send))

    def _answer(self, query: bytes, client: Address, send: Send) -> None:
        wire, info = self._server.process(query, client, "udp")
        if wire is None:
            return
        reply = partial(self._submit, "out", client, partial(send, wire, client))
        if info is not None and info.delay:
            self._server.later(info.delay, reply)
        else:
            reply()

    def _submit(self, direction: Direction, client: Address, payload: Callable[[], None]) -> None:
        now = asyncio.get_running_loop().time()
        self.faults.submit(direction, "udp", client[0], None, payload, now)
        self._pump()

    def _pump(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        while due := self.faults.pop_due(loop.time()):
            for item in due:
                item.payload()
        self._timer.arm(self.faults.next_timer())

    # -- TCP: one query at a time per connection, so waiting in place keeps the order ----------

    async def tcp_uncut(self, client: str) -> None:
        """Wait while a partition cuts ``client`` (before reading: the kernel keeps the bytes)."""
        while self.faults.blocks("tcp", client):
            await self._changed.wait()

    async def tcp_pass(self, direction: Direction, client: str) -> bool:
        """Wait until a query (``in``) or answer (``out``) may pass; False if it is lost."""
        loop = asyncio.get_running_loop()
        while True:
            at = self.faults.verdict(direction, "tcp", client, loop.time())
            if at is None:
                return False
            if at == HELD:
                await self._changed.wait()
                continue
            if at > loop.time():
                await asyncio.sleep(at - loop.time())
            await self.tcp_uncut(client)  # cut while in flight: it waits for the heal
            return True
