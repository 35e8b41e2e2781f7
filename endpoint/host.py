"""The endpoint host: one asyncio shell driving thousands of registration cores.

One process, one :class:`SipTransport`, one timer heap for every core (driving one asyncio
timer), one caching resolver per group setting, one TLS client context per distinct setting;
each endpoint keeps its own :class:`Registration` and its own connection (or, over UDP, its own
socket). Events a core emits are tagged with its AOR, so one host's stream still reads as many
endpoints. A graceful stop de-registers every endpoint (``Expires: 0``), bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import ssl
from collections.abc import Coroutine
from typing import Any

from pydantic import ValidationError

from emulator.component import ComponentContext, ControlError
from emulator.deadlines import Deadlines
from emulator.events import EventSink
from emulator.kinds import Kind
from emulator.rearm import Rearm
from emulator.sip.message import Message, Request, response_to, serialize_message
from emulator.sip.transport import Flow, SipTransport
from emulator.validation import describe
from endpoint.config import EndpointConfig
from endpoint.group import GroupConfig, HostConfig
from endpoint.locator import LocateError, Resolver, parse_proxy
from endpoint.registration import Close, Connect, Registration, Resolve, Send, Status
from endpoint.resolver_cache import shared_resolver

CONNECT_TIMEOUT = 5.0


class _Tagged:
    """A core's event sink: the host's emitter, with the endpoint's AOR on every event."""

    __slots__ = ("_aor", "_emit")

    def __init__(self, sink: EventSink, aor: str) -> None:
        self._emit = sink.emit
        self._aor = aor

    def emit(self, kind: str, /, **fields: Any) -> None:
        fields.setdefault("aor", self._aor)
        self._emit(kind, **fields)


class _Endpoint:
    __slots__ = ("aor", "config", "flows", "index", "reg", "resolver", "started")

    def __init__(
        self, index: int, config: EndpointConfig, reg: Registration, resolver: Resolver
    ) -> None:
        self.index = index
        self.aor = config.uri
        self.config = config
        self.reg = reg
        self.resolver = resolver
        self.started = False
        # Its open flows (several with Outbound On): closed by the host when the core is stopped.
        self.flows: set[Flow] = set()


class EndpointHost:
    def __init__(self, config: HostConfig, ctx: ComponentContext) -> None:
        self.config = config
        self.ctx = ctx
        self.rng = random.Random()
        self.transport = SipTransport(self, rng=self.rng)
        self.transport.on_pong = self._pong
        self.endpoints: list[_Endpoint] = []
        self.by_aor: dict[str, _Endpoint] = {}
        self._by_flow: dict[Flow, _Endpoint] = {}
        self._deadlines: Deadlines[int] = Deadlines()
        self._timer = Rearm(self._on_timer)
        self._tasks: set[asyncio.Task[None]] = set()
        self._tls: dict[tuple[bool, str | None], ssl.SSLContext] = {}
        self._connecting = asyncio.Semaphore(config.connect_concurrency)
        self._unregistering: set[int] = set()
        self._unregistered = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        for group in config.groups:
            self._add_group(group)

    def _add_group(self, group: GroupConfig) -> None:
        template = group.template()
        servers = template.dns_servers()
        # shared: one cache for the group; uncached: every lookup asks the server (the seed's
        # endpoint); independent: a cache per endpoint, as separate devices would have.
        shared = {"shared": shared_resolver(servers), "uncached": Resolver(servers)}.get(
            group.resolve
        )
        now = self.now()
        for i in range(group.count):
            config = group.member(i, template)
            index = len(self.endpoints)
            reg = Registration(config, _Tagged(self.ctx.emitter, config.uri), rng=self.rng)
            resolver = shared or shared_resolver(config.dns_servers())
            endpoint = _Endpoint(index, config, reg, resolver)
            self.endpoints.append(endpoint)
            self.by_aor[endpoint.aor] = endpoint
            self._deadlines.set(index, now + self.rng.uniform(0, group.jitter))

    def now(self) -> float:
        return self._loop.time()

    def start(self) -> None:
        self._timer.arm(self._deadlines.next())

    # -- TransportUser -------------------------------------------------------------------

    def message_received(self, message: Message, flow: Flow) -> None:
        endpoint = self._by_flow.get(flow)
        if isinstance(message, Request):
            self._answer_request(message, flow)
            return
        if endpoint is not None:
            endpoint.reg.receive(message, flow, self.now())
            self._pump(endpoint)

    def bad_message(self, flow: Flow, error: str) -> None:
        endpoint = self._by_flow.get(flow)
        aor = {"aor": endpoint.aor} if endpoint is not None else {}
        self.ctx.emit(Kind.SIP_BAD_MESSAGE, flow=str(flow), error=error, **aor)

    def flow_closed(self, flow: Flow, reason: str) -> None:
        endpoint = self._forget(flow)
        if endpoint is not None:
            endpoint.reg.flow_closed(flow, reason, self.now())
            self._pump(endpoint)

    def _pong(self, flow: Flow) -> None:
        endpoint = self._by_flow.get(flow)
        if endpoint is not None:
            endpoint.reg.pong_received(flow, self.now())
            self._pump(endpoint)

    def _forget(self, flow: Flow) -> _Endpoint | None:
        endpoint = self._by_flow.pop(flow, None)
        if endpoint is not None:
            endpoint.flows.discard(flow)
        return endpoint

    def _answer_request(self, request: Request, flow: Flow) -> None:
        if request.method == "ACK":
            return
        # A registrar's OPTIONS ping gets 200; these endpoints take no calls yet.
        status = 200 if request.method == "OPTIONS" else 405
        response = response_to(request, status)
        if status == 405:
            response.headers.add("Allow", "OPTIONS")
        self.transport.send(flow, serialize_message(response))

    # -- driving the cores ---------------------------------------------------------------

    def _pump(self, endpoint: _Endpoint) -> None:
        reg = endpoint.reg
        while actions := reg.pop_actions():
            for action in actions:
                if isinstance(action, Resolve):
                    self._spawn(self._resolve(endpoint, action))
                elif isinstance(action, Connect):
                    self._spawn(self._connect(endpoint, action))
                elif isinstance(action, Send):
                    if not self.transport.send(action.flow, action.data):
                        self._forget(action.flow)
                        reg.flow_closed(action.flow, "not connected", self.now())
                        break  # the core has new actions for the lost flow
                elif isinstance(action, Close):
                    self._forget(action.flow)
                    self.transport.close_flow(action.flow)
        when = reg.next_timer()
        if when is None:
            self._deadlines.cancel(endpoint.index)
        elif self._deadlines.get(endpoint.index) != when:
            self._deadlines.set(endpoint.index, when)
        if endpoint.index in self._unregistering and reg.deregistered:
            self._unregistering.discard(endpoint.index)
            self._unregistered.set()
        self._timer.arm(self._deadlines.next())

    def _on_timer(self) -> None:
        now = self.now()
        for index in self._deadlines.pop_due(now):
            endpoint = self.endpoints[index]
            if endpoint.started:
                endpoint.reg.handle_timer(now)
            else:
                endpoint.started = True
                endpoint.reg.start(now)
            self._pump(endpoint)
        self._timer.arm(self._deadlines.next())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, endpoint: _Endpoint, action: Resolve) -> None:
        """What to resolve comes with the action: per flow, and new after a ``set``."""
        reg = endpoint.reg
        try:
            targets = await endpoint.resolver.locate(
                parse_proxy(action.proxy),
                transport=action.transport,  # type: ignore[arg-type]
                rng=self.rng,
            )
        except LocateError as exc:
            reg.resolve_failed(action.op, str(exc), self.now())
        else:
            reg.resolved(action.op, targets, self.now())
        self._pump(endpoint)

    async def _connect(self, endpoint: _Endpoint, action: Connect) -> None:
        target = action.target
        reg = endpoint.reg
        try:
            async with self._connecting:
                flow = await self.transport.connect(
                    target.transport,
                    (target.host, target.port),
                    local_host=str(endpoint.config.address),
                    ssl_context=self._tls_context(endpoint.config),
                    timeout=CONNECT_TIMEOUT,
                    # Each UDP flow its own connected socket: its answers are its own, and an
                    # ICMP error reaches its core (RFC 3261 §18.1.1).
                    udp_connected=True,
                    server_hostname=target.name or target.host,
                )
        except (OSError, TimeoutError) as exc:
            reg.connect_failed(action.op, connect_error_reason(exc), self.now())
        else:
            self._by_flow[flow] = endpoint
            endpoint.flows.add(flow)
            reg.connected(action.op, flow, self.now())
        self._pump(endpoint)

    def _tls_context(self, config: EndpointConfig) -> ssl.SSLContext | None:
        """Built on first use (94 ms and 1 MB each), then shared by every endpoint alike."""
        if config.transport not in ("tls", "auto"):
            return None
        key = (config.tls_verify, str(config.ca_file) if config.ca_file else None)
        context = self._tls.get(key)
        if context is None:
            context = self._tls[key] = client_tls_context(config)
        return context

    # -- control -------------------------------------------------------------------------

    def endpoint(self, aor: object) -> _Endpoint:
        if aor is None and len(self.endpoints) == 1:
            return self.endpoints[0]  # a host of one is named after its endpoint
        if not isinstance(aor, str):
            raise ControlError("this op needs {'aor': 'user@domain'}")
        found = self.by_aor.get(aor.removeprefix("sip:"))
        if found is None:
            raise ControlError(f"no endpoint {aor!r} in {self.ctx.name}")
        return found

    def status(self, args: dict[str, Any]) -> dict[str, Any]:
        if "aor" in args:
            return self.endpoint(args["aor"]).reg.snapshot()
        return {"endpoints": [e.reg.snapshot() for e in self.endpoints]}

    async def stop_endpoint(self, args: dict[str, Any]) -> dict[str, Any]:
        """De-register one endpoint (Expires: 0) and leave it Inactive."""
        endpoint = self.endpoint(args.get("aor"))
        await self.unregister([endpoint])
        return endpoint.reg.snapshot()

    def start_endpoint(self, args: dict[str, Any]) -> dict[str, Any]:
        endpoint = self.endpoint(args.get("aor"))
        reg = endpoint.reg
        if endpoint.index in self._unregistering or reg.status is not Status.INACTIVE:
            raise ControlError(f"{endpoint.aor} is not stopped ({reg.status.value})")
        if not endpoint.started:
            raise ControlError(f"{endpoint.aor} has not started yet")
        reg.start(self.now())
        self._pump(endpoint)
        return reg.snapshot()

    def set_settings(self, args: dict[str, Any]) -> dict[str, Any]:
        """The ``set`` op: change one endpoint's settings at run time; its locator restarts
        ("Need to resolve ... (restarted locator)", as the seed's log shows)."""
        settings = dict(args)
        endpoint = self.endpoint(settings.pop("aor", None))
        config = endpoint.config.changed(settings)
        self._tls_context(config)  # a bad ca_file fails here, before anything changes
        endpoint.config = config
        self.ctx.emit(Kind.ENDPOINT_CONFIGURED, aor=config.uri, changed=sorted(settings))
        endpoint.reg.reconfigure(config, self.now())
        self._pump(endpoint)
        return endpoint.reg.snapshot()

    async def unregister(self, endpoints: list[_Endpoint]) -> None:
        """Graceful stop of ``endpoints``: Expires: 0 to each registrar, bounded in time."""
        now = self.now()
        for endpoint in endpoints:
            endpoint.started = True  # one still waiting for its jittered start never starts
            endpoint.reg.deregister(now)
            if not endpoint.reg.deregistered:
                self._unregistering.add(endpoint.index)
            self._pump(endpoint)
        mine = {e.index for e in endpoints}
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.stop_timeout):
                while mine & self._unregistering:
                    self._unregistered.clear()
                    await self._unregistered.wait()
        for endpoint in endpoints:
            if endpoint.index in self._unregistering:  # no answer in time: as a device would
                self._unregistering.discard(endpoint.index)
                endpoint.reg.stop()
                for flow in list(endpoint.flows):
                    self._forget(flow)
                    self.transport.close_flow(flow)
            self._deadlines.cancel(endpoint.index)

    async def close(self) -> None:
        await self.unregister(self.endpoints)
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


def _raise_file_limit() -> None:
    """Up to the hard limit: each endpoint holds a connection (or a UDP socket)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(config: HostConfig, ctx: ComponentContext) -> None:
    _raise_file_limit()
    host = EndpointHost(config, ctx)
    ctx.on_command("status", host.status)
    ctx.on_command("stop_endpoint", host.stop_endpoint)
    ctx.on_command("start_endpoint", host.start_endpoint)
    ctx.on_command("set", host.set_settings)
    first = host.endpoints[0].config
    ctx.emit(
        Kind.READY,
        uri=first.uri,
        address=str(first.address),
        proxy=first.proxy,
        endpoints=len(host.endpoints),
    )
    host.start()
    try:
        await ctx.stopping.wait()
    finally:
        await host.close()


async def serve_from_lab(ctx: ComponentContext) -> None:
    """An endpoint host that registers nothing until the lab it joined sends its configuration
    (``configure`` with ``{"config": HostConfig}``): a replica learns its slice of its group."""
    configured: asyncio.Future[HostConfig] = asyncio.get_running_loop().create_future()

    def configure(args: dict[str, Any]) -> dict[str, Any]:
        if configured.done():
            raise ControlError(f"{ctx.name} is configured already")
        try:
            config = HostConfig.model_validate(args.get("config"))
        except ValidationError as exc:
            raise ControlError(describe(exc, "config")) from None
        ctx.rename(config.name)
        ctx.from_lab = False  # a later join (the lab restarted) claims this name back
        configured.set_result(config)
        return {"name": config.name, "endpoints": config.size}

    ctx.on_command("configure", configure)
    waiting = asyncio.ensure_future(ctx.stopping.wait())
    await asyncio.wait({configured, waiting}, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if configured.done():
        await serve(configured.result(), ctx)
