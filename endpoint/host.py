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

from emulator.component import ComponentContext, ControlError
from emulator.deadlines import Deadlines
from emulator.events import EventSink
from emulator.kinds import Kind
from emulator.rearm import Rearm
from emulator.sip.message import Message, Request, response_to, serialize_message
from emulator.sip.transport import Address, Flow, SipTransport
from endpoint.config import EndpointConfig
from endpoint.group import GroupConfig, HostConfig
from endpoint.locator import LocateError, ProxyAddress, Resolver, parse_proxy
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
    __slots__ = ("aor", "config", "index", "proxy", "reg", "resolver", "started", "udp_local")

    def __init__(
        self,
        index: int,
        config: EndpointConfig,
        reg: Registration,
        proxy: ProxyAddress,
        resolver: Resolver,
    ) -> None:
        self.index = index
        self.aor = config.uri
        self.config = config
        self.reg = reg
        self.proxy = proxy
        self.resolver = resolver
        self.started = False
        self.udp_local: Address | None = None


class EndpointHost:
    def __init__(self, config: HostConfig, ctx: ComponentContext) -> None:
        self.config = config
        self.ctx = ctx
        self.rng = random.Random()
        self.transport = SipTransport(self, rng=self.rng)
        self.endpoints: list[_Endpoint] = []
        self.by_aor: dict[str, _Endpoint] = {}
        self._by_flow: dict[Flow, _Endpoint] = {}
        self._deadlines: Deadlines[int] = Deadlines()
        self._timer = Rearm(self._on_timer)
        self._tasks: set[asyncio.Task[None]] = set()
        self._tls: dict[bool, ssl.SSLContext] = {}
        self._connecting = asyncio.Semaphore(config.connect_concurrency)
        self._unregistering: set[int] = set()
        self._unregistered = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        for group in config.groups:
            self._add_group(group)

    def _add_group(self, group: GroupConfig) -> None:
        template = group.template()
        proxy = parse_proxy(template.proxy)
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
            endpoint = _Endpoint(index, config, reg, proxy, resolver)
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
        endpoint = self._by_flow.pop(flow, None)
        if endpoint is not None:
            endpoint.reg.flow_closed(flow, reason, self.now())
            self._pump(endpoint)

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
                    self._spawn(self._resolve(endpoint, action.op))
                elif isinstance(action, Connect):
                    self._spawn(self._connect(endpoint, action))
                elif isinstance(action, Send):
                    if not self.transport.send(action.flow, action.data):
                        self._by_flow.pop(action.flow, None)
                        reg.flow_closed(action.flow, "not connected", self.now())
                        break  # the core has new actions for the lost flow
                elif isinstance(action, Close):
                    self._by_flow.pop(action.flow, None)
                    self.transport.close_flow(action.flow)
        when = reg.next_timer()
        if when is None:
            self._deadlines.cancel(endpoint.index)
        elif self._deadlines.get(endpoint.index) != when:
            self._deadlines.set(endpoint.index, when)
        if endpoint.index in self._unregistering and not reg.unregistering:
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

    async def _resolve(self, endpoint: _Endpoint, op: int) -> None:
        reg = endpoint.reg
        try:
            targets = await endpoint.resolver.locate(
                endpoint.proxy, transport=endpoint.config.transport, rng=self.rng
            )
        except LocateError as exc:
            reg.resolve_failed(op, str(exc), self.now())
        else:
            reg.resolved(op, targets, self.now())
        self._pump(endpoint)

    async def _connect(self, endpoint: _Endpoint, action: Connect) -> None:
        target = action.target
        reg = endpoint.reg
        try:
            if target.transport == "udp":
                flow = await self._udp_flow(endpoint, (target.host, target.port))
            else:
                async with self._connecting:
                    flow = await self.transport.connect(
                        target.transport,
                        (target.host, target.port),
                        local_host=str(endpoint.config.address),
                        ssl_context=self._tls_context(endpoint.config),
                        timeout=CONNECT_TIMEOUT,
                    )
        except (OSError, TimeoutError) as exc:
            reason = (
                "Connection timed out"
                if isinstance(exc, TimeoutError)
                else (exc.strerror or str(exc))
            )
            reg.connect_failed(action.op, reason, self.now())
        else:
            self._by_flow[flow] = endpoint
            reg.connected(action.op, flow, self.now())
        self._pump(endpoint)

    async def _udp_flow(self, endpoint: _Endpoint, remote: Address) -> Flow:
        """Each UDP endpoint has its own socket, so its flows (and answers) are its own."""
        if endpoint.udp_local is None:
            endpoint.udp_local = await self.transport.open_udp(str(endpoint.config.address))
        return Flow("udp", endpoint.udp_local, remote)

    def _tls_context(self, config: EndpointConfig) -> ssl.SSLContext | None:
        """Built on first use (94 ms and 1 MB each), then shared by every endpoint alike."""
        context = self._tls.get(config.tls_verify)
        if context is None:
            context = self._tls[config.tls_verify] = client_tls_context(config.tls_verify)
        return context

    # -- control -------------------------------------------------------------------------

    def endpoint(self, aor: object) -> _Endpoint:
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
        if reg.unregistering or reg.status is not Status.INACTIVE or not endpoint.started:
            raise ControlError(f"{endpoint.aor} is not stopped ({reg.status.value})")
        reg.start(self.now())
        self._pump(endpoint)
        return reg.snapshot()

    async def unregister(self, endpoints: list[_Endpoint]) -> None:
        """Graceful stop of ``endpoints``: Expires: 0 to each registrar, bounded in time."""
        now = self.now()
        for endpoint in endpoints:
            endpoint.started = True  # one still waiting for its jittered start never starts
            if endpoint.reg.unregister(now):
                self._unregistering.add(endpoint.index)
            self._pump(endpoint)
        mine = {e.index for e in endpoints}
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.stop_timeout):
                while mine & self._unregistering:
                    self._unregistered.clear()
                    await self._unregistered.wait()
        for endpoint in endpoints:
            if endpoint.reg.unregistering:  # no answer in time: forget it, as a device would
                self._unregistering.discard(endpoint.index)
                flow = endpoint.reg.flow
                endpoint.reg.stop()
                endpoint.reg.unregistering = False
                if flow is not None:
                    self._by_flow.pop(flow, None)
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


def client_tls_context(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not verify:
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
