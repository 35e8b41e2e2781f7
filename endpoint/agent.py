"""The endpoint's asyncio shell: carries out the registration core's actions on real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl

from emulator.component import ComponentContext
from emulator.rearm import Rearm
from emulator.sip.message import Message, Request, response_to, serialize_message
from emulator.sip.transport import Flow, SipTransport
from endpoint.config import EndpointConfig
from endpoint.locator import LocateError, Resolver, parse_proxy
from endpoint.registration import Close, Connect, Registration, Resolve, Send

CONNECT_TIMEOUT = 5.0


class EndpointAgent:
    def __init__(self, config: EndpointConfig, ctx: ComponentContext) -> None:
        self.config = config
        self.ctx = ctx
        self.rng = random.Random()
        self.registration = Registration(config, ctx.emitter, rng=self.rng)
        self.transport = SipTransport(self)
        self.resolver = Resolver(config.dns_servers())
        self.proxy = parse_proxy(config.proxy)
        self._timer = Rearm(self._on_timer)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        self._tls = _client_tls_context(config.tls_verify)

    def now(self) -> float:
        return self._loop.time()

    # TransportUser
    def message_received(self, message: Message, flow: Flow) -> None:
        if isinstance(message, Request):
            self._answer_request(message, flow)
            return
        self.registration.receive(message, flow, self.now())
        self._pump()

    def bad_message(self, flow: Flow, error: str) -> None:
        self.ctx.emit("sip.bad_message", flow=str(flow), error=error)

    def flow_closed(self, flow: Flow, reason: str) -> None:
        self.registration.flow_closed(flow, reason, self.now())
        self._pump()

    def _answer_request(self, request: Request, flow: Flow) -> None:
        if request.method == "ACK":
            return
        # A registrar's OPTIONS ping gets 200; this endpoint takes no calls yet.
        status = 200 if request.method == "OPTIONS" else 405
        response = response_to(request, status)
        if status == 405:
            response.headers.add("Allow", "OPTIONS")
        self.transport.send(flow, serialize_message(response))

    # driving the core
    def start(self) -> None:
        self.registration.start(self.now())
        self._pump()

    def _pump(self) -> None:
        for action in self.registration.pop_actions():
            if isinstance(action, Resolve):
                self._spawn(self._resolve(action.op))
            elif isinstance(action, Connect):
                self._spawn(self._connect(action))
            elif isinstance(action, Send):
                if not self.transport.send(action.flow, action.data):
                    self.registration.flow_closed(action.flow, "not connected", self.now())
                    self._pump()
                    return
            elif isinstance(action, Close):
                self.transport.close_flow(action.flow)
        self._timer.arm(self.registration.next_timer())

    def _on_timer(self) -> None:
        self.registration.handle_timer(self.now())
        self._pump()

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, op: int) -> None:
        try:
            targets = await self.resolver.locate(
                self.proxy, transport=self.config.transport, rng=self.rng
            )
        except LocateError as exc:
            self.registration.resolve_failed(op, str(exc), self.now())
        else:
            self.registration.resolved(op, targets, self.now())
        self._pump()

    async def _connect(self, action: Connect) -> None:
        target = action.target
        try:
            flow = await self.transport.connect(
                target.transport,
                (target.host, target.port),
                local_host=str(self.config.address),
                ssl_context=self._tls,
                timeout=CONNECT_TIMEOUT,
            )
        except (OSError, TimeoutError) as exc:
            reason = (
                "Connection timed out"
                if isinstance(exc, TimeoutError)
                else (exc.strerror or str(exc))
            )
            self.registration.connect_failed(action.op, reason, self.now())
        else:
            self.registration.connected(action.op, flow, self.now())
        self._pump()

    async def close(self) -> None:
        self.registration.stop()
        self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.transport.close()


def _client_tls_context(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not verify:
        # RoomOS TlsVerify Off: encrypt, but accept any certificate (the seed's setting).
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def serve(config: EndpointConfig, ctx: ComponentContext) -> None:
    agent = EndpointAgent(config, ctx)
    ctx.on_command("status", lambda _args: agent.registration.snapshot())
    ctx.emit("ready", uri=config.uri, address=str(config.address), proxy=config.proxy)
    agent.start()
    try:
        await ctx.stopping.wait()
    finally:
        await agent.close()
