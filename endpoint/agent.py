"""The endpoint's asyncio shell: carries out the registration core's actions on real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl

from emulator.component import ComponentContext
from emulator.kinds import Kind
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
        self.transport.on_pong = self._pong
        self.resolver = Resolver(config.dns_servers())
        self._timer = Rearm(self._on_timer)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        self._tls = client_tls_context(config)

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

    def _pong(self, flow: Flow) -> None:
        self.registration.pong_received(flow, self.now())
        self._pump()

    def set_settings(self, args: dict[str, object]) -> dict[str, object]:
        """The ``set`` control op: change settings at run time; the locator restarts."""
        config = self.config.changed(args)
        tls = client_tls_context(config)  # a bad ca_file fails here, before anything changes
        self.config, self._tls = config, tls
        self.ctx.emit(Kind.ENDPOINT_CONFIGURED, aor=config.uri, changed=sorted(args))
        self.registration.reconfigure(config, self.now())
        self._pump()
        return self.registration.snapshot()

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
                self._spawn(self._resolve(action))
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

    async def _resolve(self, action: Resolve) -> None:
        op = action.op
        try:
            targets = await self.resolver.locate(
                parse_proxy(action.proxy),
                transport=action.transport,  # type: ignore[arg-type]
                rng=self.rng,
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
                udp_connected=True,  # ICMP errors then reach the core (RFC 3261 §18.1.1)
                server_hostname=target.name or target.host,
            )
        except (OSError, TimeoutError) as exc:
            self.registration.connect_failed(action.op, connect_error_reason(exc), self.now())
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


def connect_error_reason(exc: OSError | TimeoutError) -> str:
    """The ``Failed`` reason for a connection that could not be opened."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        # TlsVerify On: wrong CA, wrong name, expired... in OpenSSL's words.
        return f"TLS certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "Connection timed out"
    return exc.strerror or str(exc)


def client_tls_context(config: EndpointConfig) -> ssl.SSLContext:
    """TlsVerify On: the certificate must chain to ``ca_file`` (or the system's CAs) and
    name the target (RFC 5922)."""
    ca_file = str(config.ca_file) if config.tls_verify and config.ca_file else None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load ca_file {ca_file}: {exc}") from None
    if not config.tls_verify:
        # RoomOS TlsVerify Off: encrypt, but accept any certificate (the seed's setting).
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def serve(config: EndpointConfig, ctx: ComponentContext) -> None:
    agent = EndpointAgent(config, ctx)
    ctx.on_command("status", lambda _args: agent.registration.snapshot())
    ctx.on_command("set", agent.set_settings)
    ctx.emit("ready", uri=config.uri, address=str(config.address), proxy=config.proxy)
    agent.start()
    try:
        await ctx.stopping.wait()
    finally:
        await agent.close()
