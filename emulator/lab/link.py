"""The lab's end of one component's channel, whatever carries it (a child's stdio, a socket).

Incoming bytes are split into JSON-line events: ``control.reply`` events settle the request
they answer, every other event goes to the lab's log. Reading whole chunks and splitting them
here, rather than a ``readline`` per event, keeps the lab's cost per event low under load.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

from emulator.events import Event
from emulator.kinds import Kind

# A line longer than this is not an event: it is reported (truncated) and skipped.
MAX_LINE = 1 << 20


class ControlFailure(Exception):
    """A control request was refused, failed, or got no answer in time."""


class ComponentLink:
    """Request/reply matching and event ingestion shared by every kind of channel."""

    where = "the lab"  # how a refusal names where the component runs

    def __init__(self, name: str, emit: Callable[[Event], None]) -> None:
        self.name = name
        self._emit = emit
        self._replies: dict[int, asyncio.Future[Event]] = {}
        self._ids = itertools.count(1)
        self._partial = b""

    # -- what the supervisor asks of every link ------------------------------------------

    @property
    def running(self) -> bool:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return None

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def _send_line(self, line: bytes) -> None:
        raise NotImplementedError

    # -- shared machinery --------------------------------------------------------------------

    def event(self, kind: Kind, **fields: Any) -> None:
        self._emit(Event(time.time(), self.name, kind, fields))

    def feed(self, data: bytes) -> None:
        """Take bytes from the channel; complete lines become events."""
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > MAX_LINE:
            self._garbage(self._partial[:200] + b"... (line too long)")
            self._partial = b""
        for line in lines:
            if line.strip():
                self._line(line)

    def _line(self, line: bytes) -> None:
        try:
            event = Event.from_json(line)
        except ValueError:
            self._garbage(line)
            return
        if event.kind == Kind.CONTROL_REPLY:
            future = self._replies.pop(event.get("id"), None)
            if future is not None and not future.done():
                future.set_result(event)
            return
        self._emit(event)

    def _garbage(self, line: bytes) -> None:
        self.event(Kind.COMPONENT_OUTPUT, line=line.decode(errors="replace").rstrip())

    def fail_pending(self, why: str) -> None:
        for future in self._replies.values():
            if not future.done():
                future.set_exception(ControlFailure(f"{self.name} {why}"))
        self._replies.clear()

    async def request(
        self, op: str, args: dict[str, Any] | None = None, timeout: float = 5.0
    ) -> Any:
        if not self.running:
            raise ControlFailure(f"{self.name} is not running")
        request_id = next(self._ids)
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = future
        line = json.dumps({"id": request_id, "op": op, "args": args or {}}) + "\n"
        try:
            self._send_line(line.encode())
            async with asyncio.timeout(timeout):
                reply = await future
        except (ConnectionError, BrokenPipeError):
            raise ControlFailure(f"{self.name} is not reading control requests") from None
        except TimeoutError:
            raise ControlFailure(
                f"{self.name} did not answer {op!r} within {timeout:g} s"
            ) from None
        finally:
            self._replies.pop(request_id, None)
        if not reply.get("ok"):
            raise ControlFailure(f"{self.name}: {reply.get('error')}")
        return reply.get("result")
