"""The registrar's asyncio shell: sockets in, the sans-I/O core in the middle, sockets out."""

from __future__ import annotations

import asyncio
import gc

from emulator.component import ComponentContext, ComponentStartError
from emulator.rearm import Rearm
from emulator.sip.linkfault import register_link_ops
from emulator.sip.message import Message
from emulator.sip.transport import Flow, SipTransport, TransportName
from registrar.config import RegistrarConfig
from registrar.core import RegistrarCore
from registrar.tls import server_context

# Young collections between two full ones (CPython's default: 10). Under load the peer keeps
# hundreds of thousands of long-lived objects (bindings; UDP server transactions, kept 32 s for
# Timer J), and a full collection walks them all: at 4,000 REGISTER/s that was a stall of about
# half a second every ten seconds (SIPp retransmits after 500 ms) and a quarter of the CPU.
# That state holds no reference cycles, so full collections can be rare.
GC_FULL_AFTER = 1000


def _quiet_gc() -> None:
    """Full collections rare, and the objects of the start-up (modules, config) out of them."""
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, GC_FULL_AFTER)


class RegistrarServer:
    def __init__(self, config: RegistrarConfig, ctx: ComponentContext) -> None:
        self.config = config
        self.ctx = ctx
        self.core = RegistrarCore(config, ctx.emitter, governor=ctx.governor)
        self.transport = SipTransport(self)
        self._timer = Rearm(self._on_timer)
        self._loop = asyncio.get_running_loop()

    # TransportUser
    def message_received(self, message: Message, flow: Flow) -> None:
        self.core.receive(message, flow, self._loop.time())
        self._pump()

    def bad_message(self, flow: Flow, error: str) -> None:
        self.ctx.emit("sip.bad_message", flow=str(flow), error=error)

    def flow_closed(self, flow: Flow, reason: str) -> None:
        self.ctx.emit("transport.closed", flow=str(flow), reason=reason)

    def _pump(self) -> None:
        for flow, data in self.core.pop_outgoing():
            self.transport.send(flow, data)
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
            context = server_context(host) if name == "tls" else None
            try:
                await self.transport.listen(name, host, port, context)
            except OSError as exc:
                await self.transport.close()
                reason = exc.strerror or str(exc)
                raise ComponentStartError(
                    f"cannot listen on {host}:{port}/{name}: {reason}"
                ) from None
            bound.append(f"{name}:{port}")
        return bound

    def set_maintenance(self, args: dict[str, object]) -> dict[str, object]:
        on = args.get("on")
        if not isinstance(on, bool):
            raise ValueError("maintenance needs {'on': true|false}")
        self.core.set_maintenance(on)
        return {"maintenance": self.core.maintenance}

    def status(self, _args: dict[str, object]) -> dict[str, object]:
        return {**self.core.status(self._loop.time()), "link": self.transport.links.state()}


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
    )
    try:
        await ctx.stopping.wait()
    finally:
        server._timer.cancel()
        await server.transport.close()
