"""The registrar's asyncio shell: sockets in, the sans-I/O core in the middle, sockets out."""

from __future__ import annotations

import asyncio
import gc
import random
import ssl
import time

from emulator.component import ComponentContext, ComponentStartError
from emulator.kinds import Kind
from emulator.metrics import MetricsListener
from emulator.osrandom import BlockRandom
from emulator.rearm import Rearm
from emulator.sip.linkfault import register_link_ops
from emulator.sip.message import Message
from emulator.sip.transport import Flow, SipTransport, TransportName
from registrar.cluster import ClusterView, binding_of
from registrar.config import RegistrarConfig
from registrar.core import RegistrarCore
from registrar.metrics import RegistrarCollector
from registrar.peerlink import PeerLink
from registrar.tls import server_context

# Young collections between two full ones (CPython's default: 10). Under load the peer keeps
# hundreds of thousands of long-lived objects (bindings; UDP server transactions, kept 32 s for
# Timer J), and a full collection walks them all: at 4,000 REGISTER/s that was a stall of about
# half a second every ten seconds (SIPp retransmits after 500 ms) and a quarter of the CPU.
# That state holds no reference cycles, so full collections can be rare.
GC_FULL_AFTER = 1000
# Net new objects before a young collection (CPython's default: 700). The messages of one read
# and all they are parsed into live at the same time, hundreds of objects: at the default a
# young collection ran every other read, walking objects about to be freed anyway (a tenth of
# the CPU at 8,000 REGISTER/s). Objects freed before the threshold cost it nothing.
GC_YOUNG = 20_000


def _quiet_gc() -> None:
    """Collections rare, and the objects of the start-up (modules, config) out of them."""
    gc.freeze()
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, middle, GC_FULL_AFTER)


class RegistrarServer:
    def __init__(self, config: RegistrarConfig, ctx: ComponentContext) -> None:
        self.config = config
        self.ctx = ctx
        # A seed makes a run repeatable ("variable" expiries, tags, nonces); without one, nonces
        # must not be guessable, so they come from the OS.
        rng = random.Random(config.seed) if config.seed is not None else BlockRandom()
        self.core = RegistrarCore(
            config, ctx.emitter, wall_clock=time.time, rng=rng, governor=ctx.governor
        )
        self.transport = SipTransport(self)
        self.metrics: MetricsListener | None = None
        self._timer = Rearm(self._on_timer)
        self._settling = False  # a _pump is due at the end of this turn of the loop
        self._loop = asyncio.get_running_loop()
        self.cluster = ClusterView(
            config.name, ctx.emitter, replicate=config.cluster_port is not None
        )
        self._cluster_timer = Rearm(self._on_cluster_timer)
        self.peerlink = (
            PeerLink(self.cluster, config, self._restore) if config.cluster_port else None
        )

    # The cluster view: fed by the core's changed AORs, by the peer link, and by its own timer.
    def _restore(self) -> None:
        """Put back the bindings the peers say we held before a restart."""
        now = self._loop.time()
        port = self.config.udp_port or self.config.tcp_port or self.config.tls_port or 0
        local = (str(self.config.address), port)
        for entry in self.cluster.pop_restores():
            if entry.expires_at > now:
                self.core.restore(binding_of(entry, local), now, entry.source)
        self._pump()
        self._cluster_timer.arm(self.cluster.next_timer())

    def _on_cluster_timer(self) -> None:
        self.cluster.handle_timer(self._loop.time())
        self._cluster_timer.arm(self.cluster.next_timer())

    # TransportUser
    def message_received(self, message: Message, flow: Flow) -> None:
        core = self.core
        core.receive(message, flow, self._loop.time())
        # The answer leaves at once (a stream's answers to one read go out in one write); the
        # cluster view and the timer wait for the end of this turn of the loop, so that the
        # REGISTERs of one read (or of one burst of datagrams) are told to them once.
        for reply_flow, data in core.pop_outgoing():
            self.transport.send(reply_flow, data)
        if not self._settling:
            self._settling = True
            self._loop.call_soon(self._pump)

    def bad_message(self, flow: Flow, error: str) -> None:
        self.ctx.emit("sip.bad_message", flow=str(flow), error=error)

    def flow_closed(self, flow: Flow, reason: str) -> None:
        self.ctx.emit(Kind.TRANSPORT_CLOSED, flow=str(flow), reason=reason)
        self.core.flow_closed(flow, self._loop.time())
        self._pump()

    def _pump(self) -> None:
        self._settling = False
        for flow, data in self.core.pop_outgoing():
            self.transport.send(flow, data)
        changed = self.core.pop_changed()
        if changed:
            for aor in changed:
                self.cluster.local(aor, self.core.bindings.for_aor(aor))
            if self.peerlink is not None:
                self.peerlink.broadcast()
        self._timer.arm(self.core.next_timer())

    def _on_timer(self) -> None:
        self.core.handle_timer(self._loop.time())
        self._pump()

    async def start(self) -> list[str]:
        host = str(self.config.address)
        listeners: list[tuple[TransportName, int | None]] = [
            ("udp", self.config.udp_port),
            ("tcp", self.config.tcp_port),
            ("tls", self.config.tls_port),
        ]
        bound: list[str] = []
        for name, port in listeners:
            if port is None:
                continue
            try:
                context = server_context(self.config) if name == "tls" else None
            except (OSError, ssl.SSLError) as exc:
                await self.transport.close()
                raise ComponentStartError(f"cannot load the TLS certificate: {exc}") from None
            try:
                await self.transport.listen(name, host, port, context)
            except OSError as exc:
                await self.transport.close()
                reason = exc.strerror or str(exc)
                raise ComponentStartError(
                    f"cannot listen on {host}:{port}/{name}: {reason}"
                ) from None
            bound.append(f"{name}:{port}")
        if self.peerlink is not None:
            try:
                await self.peerlink.start()
            except OSError as exc:
                await self.transport.close()
                raise ComponentStartError(
                    f"cannot listen on {host}:{self.config.cluster_port}/cluster: "
                    f"{exc.strerror or exc}"
                ) from None
            bound.append(f"cluster:{self.config.cluster_port}")
        if self.config.metrics is not None:
            try:
                self.metrics = MetricsListener(RegistrarCollector(self.core), self.config.metrics)
            except OSError as exc:
                await self.transport.close()
                raise ComponentStartError(
                    f"cannot serve metrics on {self.config.metrics}: {exc.strerror or exc}"
                ) from None
        return bound

    async def stop(self) -> None:
        """A graceful stop: listeners and connections closed, the metrics listener too."""
        self._timer.cancel()
        self._cluster_timer.cancel()
        if self.peerlink is not None:
            await self.peerlink.stop()
        await self.transport.close()
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.close)

    def set_maintenance(self, args: dict[str, object]) -> dict[str, object]:
        on = args.get("on")
        if not isinstance(on, bool):
            raise ValueError("maintenance needs {'on': true|false}")
        self.core.set_maintenance(on)
        return {"maintenance": self.core.maintenance}

    def status(self, _args: dict[str, object]) -> dict[str, object]:
        now = self._loop.time()
        return {
            **self.core.status(now),
            "link": self.transport.links.state(),
            "cluster": self.cluster.status(now),
        }


async def serve(config: RegistrarConfig, ctx: ComponentContext) -> None:
    server = RegistrarServer(config, ctx)
    listeners = await server.start()
    _quiet_gc()
    ctx.on_command("maintenance", server.set_maintenance)
    ctx.on_command("status", server.status)
    register_link_ops(ctx, server.transport.link_control)
    ctx.emit(
        "ready",
        address=str(config.address),
        listeners=listeners,
        domains=config.domains,
        maintenance=server.core.maintenance,
        tls=str(config.tls_cert) if config.tls_cert else None,
        metrics=config.metrics,
    )
    try:
        await ctx.stopping.wait()
    finally:
        await server.stop()
