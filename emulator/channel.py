"""How a component talks to its lab: one channel, events out and control requests in.

Both forms carry the same newline-delimited JSON: the component writes events (a
``control.reply`` event answers each request) and reads requests
``{"id": 7, "op": "maintenance", "args": {"on": true}}``.

* ``stdio`` — a child of the lab's supervisor: events on stdout, requests on stdin. End of
  stdin means the supervisor is gone, so the component stops: no orphan outlives its lab.
* ``listen:HOST:PORT`` — a component started by someone else (Docker, another host, a
  terminal) serves its channel on a TCP address and the lab attaches to it. The lab's first
  line is ``{"op": "hello", "args": {"token": ...}}``; with a token configured (required
  beyond loopback) a wrong or missing token closes the connection. Events emitted while no
  lab is attached are kept (bounded) and delivered when one attaches, so a lab that attaches
  late still sees ``ready``. A newer attachment replaces an older one; losing the lab does not
  stop the component.
* ``connect:HOST:PORT`` — the other direction, for components whose address and number the lab
  cannot know (``docker compose up --scale endpoint=N``): the component connects to the lab's
  collector, retrying with a bounded backoff, and says ``{"op": "hello", "args": {"token",
  "name", "hostname", "from_lab"}}``; the lab answers ``{"op": "welcome", "args": {"name"}}``
  (the name it registers the component under) or ``{"error": ...}`` and closes. Then the same
  JSON lines flow both ways. Events are kept while disconnected, as for ``listen``; a lost
  connection is retried (the lab restarted, a network blip), the component runs on.
* ``none`` — standalone: events on stdout, stops on SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Literal

from emulator.events import Event
from emulator.kinds import Kind
from emulator.linebatch import LineBatch

TOKEN_ENV = "SIPLAB_CONTROL_TOKEN"
# Events kept for a lab that has not attached yet; past it the oldest are dropped (counted).
DETACHED_BACKLOG = 10_000
MAX_REQUEST = 1 << 20
MAX_ATTACHED_BACKLOG = 8 * 1024 * 1024


class ChannelSpecError(ValueError):
    """A --control value that names no channel; ``str()`` says what is accepted."""


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    mode: Literal["stdio", "listen", "connect", "none"]
    host: str = ""
    port: int = 0

    @classmethod
    def parse(cls, text: str) -> ChannelSpec:
        if text in ("stdio", "none"):
            return cls(text)  # type: ignore[arg-type]
        mode, _, address = text.partition(":")
        host, sep, port = address.rpartition(":")
        if (
            mode not in ("listen", "connect")
            or not sep
            or not port.isdigit()
            or not 0 < int(port) < 65536
        ):
            raise ChannelSpecError(
                f"{text!r}: expected 'stdio', 'none', 'listen:HOST:PORT' or 'connect:HOST:PORT' "
                "(e.g. listen:127.0.0.11:7070)"
            )
        return cls(mode, host.strip("[]"), int(port))  # type: ignore[arg-type]

    def needs_token(self) -> bool:
        try:
            return not ip_address(self.host).is_loopback
        except ValueError:
            return True  # a name (0.0.0.0-like wildcard or a host name) may be reachable


RequestHandler = Callable[[bytes], Awaitable[None]]


class _SocketChannel:
    """Events to the lab over whichever socket currently carries the channel, written in
    batches (:class:`LineBatch`); kept (bounded) while there is none, and ``ready`` sent again
    to every new connection."""

    def __init__(self) -> None:
        self._writer: asyncio.StreamWriter | None = None
        self._pending: deque[bytes] = deque(maxlen=DETACHED_BACKLOG)
        self._batch = LineBatch(self._write_lines)
        self._ready: bytes | None = None
        self._handler: RequestHandler | None = None
        self.dropped = 0

    def write(self, event: Event) -> None:
        line = event.to_json()
        if event.kind == Kind.READY:
            self._ready = (line + "\n").encode()
        writer = self._writer
        if writer is not None and not writer.is_closing():
            if writer.transport.get_write_buffer_size() + self._batch.size > MAX_ATTACHED_BACKLOG:
                self.dropped += 1  # the lab is not keeping up; never stall the component
            else:
                self._batch.add(line)
            return
        self._keep((line + "\n").encode())

    def _write_lines(self, lines: list[str]) -> None:
        writer = self._writer
        if writer is not None and not writer.is_closing():
            writer.write(("\n".join(lines) + "\n").encode())
        else:  # the lab went away since they were batched: keep them for the next one
            for line in lines:
                self._keep((line + "\n").encode())

    def _keep(self, line: bytes) -> None:
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append(line)

    def _attach(self, writer: asyncio.StreamWriter) -> None:
        self._batch.flush()  # what an older attachment had not been sent yet goes first
        backlog = list(self._pending)
        self._pending.clear()
        if self._ready is not None and self._ready not in backlog:
            backlog.insert(0, self._ready)
        writer.writelines(backlog)
        self._writer = writer

    async def _serve_requests(self, reader: asyncio.StreamReader) -> None:
        assert self._handler is not None
        while line := await reader.readline():
            if line.strip():
                await self._handler(line)

    async def _close_writer(self) -> None:
        self._batch.flush()
        if self._writer is not None:
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()
            self._writer.close()


class ListenChannel(_SocketChannel):
    """The component side of ``listen:HOST:PORT``: a sink for events and a request server."""

    def __init__(self, spec: ChannelSpec, token: str | None) -> None:
        super().__init__()
        self._spec = spec
        self._token = token
        self._server: asyncio.Server | None = None

    async def start(self, handler: RequestHandler) -> None:
        self._handler = handler
        self._server = await asyncio.start_server(
            self._serve, self._spec.host, self._spec.port, limit=MAX_REQUEST
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not await self._greet(reader, writer):
                return
            if self._writer is not None:
                self._writer.close()  # a newer lab attachment replaces the older one
            self._attach(writer)
            await self._serve_requests(reader)
        except (ConnectionError, ValueError):
            pass  # a lab that went away or sent an over-long line: wait for the next one
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()

    async def _greet(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        try:
            async with asyncio.timeout(5):
                hello = json.loads(await reader.readline())
            token = hello["args"].get("token") if hello.get("op") == "hello" else None
        except (TimeoutError, ValueError, TypeError, KeyError, AttributeError):
            token, hello = None, None
        if hello is None or (self._token and not hmac.compare_digest(str(token), self._token)):
            reason = "bad hello" if hello is None else "wrong or missing token"
            writer.write(json.dumps({"error": reason}).encode() + b"\n")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()
            return False
        return True

    async def close(self) -> None:
        await self._close_writer()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()


def channel_token(explicit: str | None = None) -> str | None:
    return explicit or os.environ.get(TOKEN_ENV) or None


CONNECT_RETRY_INITIAL = 0.1
CONNECT_RETRY_MAX = 2.0
WELCOME_TIMEOUT = 10.0


class CollectorRefused(Exception):
    """The lab's collector said no (wrong token, no slot for this component)."""


class ConnectChannel(_SocketChannel):
    """The component side of ``connect:HOST:PORT``: it joins the lab's collector, and joins it
    again whenever the connection is lost, until the component stops."""

    def __init__(
        self, spec: ChannelSpec, token: str | None, hello: Callable[[], dict[str, object]]
    ) -> None:
        super().__init__()
        self._spec = spec
        self._token = token
        self._hello = hello
        self._task: asyncio.Task[None] | None = None
        self.joined_as: str | None = None
        self.refusal: str | None = None

    async def start(self, handler: RequestHandler) -> None:
        self._handler = handler
        self._task = asyncio.create_task(self._join_forever())

    async def _join_forever(self) -> None:
        delay = CONNECT_RETRY_INITIAL
        while True:
            try:
                reader, writer = await asyncio.open_connection(
                    self._spec.host, self._spec.port, limit=MAX_REQUEST
                )
            except OSError:
                await asyncio.sleep(delay)  # the lab is not there yet, or restarting
                delay = min(delay * 2, CONNECT_RETRY_MAX)
                continue
            try:
                self.joined_as = await self._join(reader, writer)
                self.refusal = None
                delay = CONNECT_RETRY_INITIAL
                self._attach(writer)
                await self._serve_requests(reader)
            except CollectorRefused as exc:
                self.refusal = str(exc)
            except (ConnectionError, ValueError, TimeoutError):
                pass  # the lab went away mid-way: join again
            finally:
                if self._writer is writer:
                    self._writer = None
                writer.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, CONNECT_RETRY_MAX)

    async def _join(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        args = {"token": self._token, "hostname": socket.gethostname(), **self._hello()}
        writer.write(json.dumps({"op": "hello", "args": args}).encode() + b"\n")
        async with asyncio.timeout(WELCOME_TIMEOUT):
            line = await reader.readline()
        if not line:
            raise ConnectionError("the collector closed the connection")
        answer: object = None
        name = None
        try:
            answer = json.loads(line)
            if isinstance(answer, dict) and answer.get("op") == "welcome":
                name = answer["args"]["name"]
        except (ValueError, TypeError, KeyError):
            pass
        if not isinstance(name, str):
            error = answer.get("error") if isinstance(answer, dict) else None
            raise CollectorRefused(str(error or "the collector sent no welcome"))
        return name

    async def close(self) -> None:
        await self._close_writer()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
