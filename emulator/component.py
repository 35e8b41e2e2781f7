"""Running one lab component as its own OS process, over the channel of ``emulator.channel``.

A component writes events and reads control requests
``{"id": 7, "op": "maintenance", "args": {"on": true}}``, each answered by a ``control.reply``
event carrying the same ``id`` — over stdio as the supervisor's child, over a socket when it
runs elsewhere (``--control listen:HOST:PORT``), or only writing events (``--control none``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from emulator.channel import TOKEN_ENV, ChannelSpec, ListenChannel, channel_token
from emulator.events import Emitter, Event
from emulator.kinds import Kind
from emulator.runtime import run_loop

Handler = Callable[[dict[str, Any]], Any]

# Past this much unsent event data the reader (the supervisor) is not keeping up; dropping
# events and counting them beats stalling a DNS or SIP server on a full pipe.
MAX_EVENT_BACKLOG = 8 * 1024 * 1024


class ControlError(Exception):
    """A control request that cannot be carried out; the message goes back to the caller."""


class _PipeProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.closed = asyncio.Event()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


class EventWriter:
    """Non-blocking JSON-lines writer for stdout, with a bounded backlog."""

    def __init__(self) -> None:
        self._transport: asyncio.WriteTransport | None = None
        self._protocol = _PipeProtocol()
        self.dropped = 0

    async def open(self) -> None:
        try:
            mode = os.fstat(sys.stdout.fileno()).st_mode
        except (OSError, ValueError):
            return
        # Only a pipe or socket gets the non-blocking writer: uvloop aborts the process (rather
        # than raising) when handed a regular file, and a terminal is fine with plain writes.
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            return
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.connect_write_pipe(lambda: self._protocol, sys.stdout)

    def write(self, event: Event) -> None:
        line = (event.to_json() + "\n").encode()
        transport = self._transport
        if transport is None:
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()
        elif transport.is_closing() or transport.get_write_buffer_size() > MAX_EVENT_BACKLOG:
            self.dropped += 1
        else:
            transport.write(line)

    async def close(self, timeout: float = 2.0) -> None:
        """Flush queued events (bounded in time) and close the pipe."""
        transport = self._transport
        if transport is None:
            sys.stdout.flush()
            return
        transport.close()  # writes what is buffered, then reports connection_lost
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._protocol.closed.wait()


class ComponentContext:
    """What a component's ``main`` gets: an event sink, control handlers and a stop signal."""

    def __init__(self, name: str, write: Callable[[Event], None]) -> None:
        self.name = name
        self.emitter = Emitter(name, write)
        self.stopping = asyncio.Event()
        self._handlers: dict[str, Handler] = {}

    def emit(self, kind: str, /, **fields: Any) -> None:
        self.emitter.emit(kind, **fields)

    def on_command(self, op: str, handler: Handler) -> None:
        self._handlers[op] = handler

    def stop(self) -> None:
        self.stopping.set()

    async def handle_request_line(self, line: bytes) -> None:
        request_id: Any = None
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ControlError("a control request must be a JSON object")
            request_id = request.get("id")
            op = request.get("op")
            args = request.get("args") or {}
            if not isinstance(args, dict):
                raise ControlError("'args' must be a JSON object")
            if op == "shutdown":
                self.stop()
                result: Any = {"stopping": True}
            elif op == "ping":
                result = {"pong": True}
            elif isinstance(op, str) and op in self._handlers:
                result = self._handlers[op](args)
                if isinstance(result, Awaitable):
                    result = await result
            else:
                known = ", ".join(sorted([*self._handlers, "ping", "shutdown"]))
                raise ControlError(f"unknown op {op!r}; this component knows: {known}")
        except (ControlError, ValueError, TypeError, KeyError) as exc:
            self.emit(Kind.CONTROL_REPLY, id=request_id, ok=False, error=str(exc))
            return
        self.emit(Kind.CONTROL_REPLY, id=request_id, ok=True, result=result)


async def _read_control(ctx: ComponentContext) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        try:
            line = await reader.readline()
        except ValueError:  # a line past the limit: skip it, keep serving
            ctx.emit(Kind.CONTROL_REPLY, id=None, ok=False, error="control request too long")
            continue
        if not line:
            ctx.emit(Kind.COMPONENT_ORPHANED, reason="control channel closed")
            ctx.stop()
            return
        if line.strip():
            await ctx.handle_request_line(line)


async def _run(
    name: str, main: Callable[[ComponentContext], Awaitable[None]], channel: ChannelSpec
) -> int:
    writer = EventWriter()
    listen: ListenChannel | None = None
    if channel.mode == "listen":
        token = channel_token()
        if token is None and channel.needs_token():
            print(
                f"{name}: --control listen on {channel.host} (beyond loopback) needs a token: "
                f"set {TOKEN_ENV}",
                file=sys.stderr,
            )
            return 2
        listen = ListenChannel(channel, token)
        ctx = ComponentContext(name, listen.write)
    else:
        await writer.open()
        ctx = ComponentContext(name, writer.write)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, ctx.stop)
    control_task = asyncio.create_task(_read_control(ctx)) if channel.mode == "stdio" else None
    status = 0
    try:
        if listen is not None:
            try:
                await listen.start(ctx.handle_request_line)
            except OSError as exc:
                raise ComponentStartError(
                    f"cannot serve the control channel on {channel.host}:{channel.port}: "
                    f"{exc.strerror or exc}"
                ) from None
        await main(ctx)
    except ComponentStartError as exc:
        ctx.emit(Kind.COMPONENT_FAILED, error=str(exc))
        print(f"{name}: {exc}", file=sys.stderr)
        status = 2
    finally:
        if control_task is not None:
            control_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await control_task
        dropped = writer.dropped + (listen.dropped if listen is not None else 0)
        if dropped:
            ctx.emit(Kind.EVENTS_DROPPED, count=dropped)
        ctx.emit(Kind.COMPONENT_STOPPED, status=status)
        if listen is not None:
            await listen.close()
        await writer.close()
    return status


class ComponentStartError(Exception):
    """The component cannot start (address in use, bad certificate...): one line for the user."""


def run_component(
    name: str, main: Callable[[ComponentContext], Awaitable[None]], *, control: ChannelSpec
) -> int:
    """Run ``main`` under the event loop of choice; returns the process exit status."""
    return run_loop(_run(name, main, control))
