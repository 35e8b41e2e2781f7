"""A component the lab did not start: it serves its channel on an address and the lab attaches.

Docker, another host or a user's terminal owns the process (``python -m registrar --control
listen:HOST:PORT``); the lab only talks to it. A lost connection is an event, and the lab keeps
trying to attach again, so ``docker compose kill`` then ``start`` shows up as it would for a
child: the component leaves, then joins and reports ``ready`` again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

from emulator.events import Event
from emulator.kinds import Kind
from emulator.lab.link import ComponentLink, ControlFailure

RETRY_INITIAL = 0.05
RETRY_MAX = 1.0
READ_CHUNK = 1 << 16


class AttachedComponent(ComponentLink):
    def __init__(
        self, name: str, address: str, emit: Callable[[Event], None], token: str | None = None
    ) -> None:
        super().__init__(name, emit)
        host, _, port = address.rpartition(":")
        self.address = address
        self.where = f"elsewhere (attached at {address})"
        self._host, self._port = host.strip("[]"), int(port)
        self._token = token
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def running(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def start(self) -> None:
        """Attach (and keep re-attaching) in the background; ``ready`` says when it serves."""
        if self._task is None or self._task.done():
            self._closing = False
            self._task = asyncio.create_task(self._attach_forever())

    async def _attach_forever(self) -> None:
        delay = RETRY_INITIAL
        while not self._closing:
            try:
                reader, writer = await asyncio.open_connection(self._host, self._port)
            except OSError:
                await asyncio.sleep(delay)  # not there yet (or restarting): try again soon
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = RETRY_INITIAL
            hello = {"op": "hello", "args": {"token": self._token}}
            writer.write(json.dumps(hello).encode() + b"\n")
            self._writer = writer
            self.event(Kind.COMPONENT_JOINED, peer=self.address)
            reason = "connection closed"
            try:
                while chunk := await reader.read(READ_CHUNK):
                    self.feed(chunk)
            except OSError as exc:
                reason = exc.strerror or str(exc)
            self._writer = None
            writer.close()
            self.fail_pending("left the lab")
            if not self._closing:
                self.event(Kind.COMPONENT_LEFT, reason=reason)

    def _send_line(self, line: bytes) -> None:
        if self._writer is None:
            raise ConnectionError("not attached")
        self._writer.write(line)

    async def shutdown(self) -> None:
        """Ask the component itself to stop (the lab owns no process to signal)."""
        with contextlib.suppress(ControlFailure):
            await self.request("shutdown", timeout=2.0)

    async def stop(self) -> None:
        """Detach: the lab did not start this component, so it leaves it running."""
        self._closing = True
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._writer = None
