"""The ``Lab`` API: start a lab, break it, watch it, from Python — the one way to do each thing.

``Lab`` is asynchronous (``async with await Lab.up("lab.yaml") as lab: ...``); ``SyncLab``
is the same API for scripts, the ``siplab`` CLI and the pytest plugin. Both speak to the lab's
supervisor over its control plane, so they work on a lab started here, by ``siplab up``, or
by another program. Every operation is defined once, in :class:`LabOps`; the two classes only
say how a request travels (aiohttp, or the standard library's ``http.client``).

    async with await Lab.up("examples/option1-srv.yaml") as lab:
        status = await lab.status()
        peer = lab.peer_at(status, status["endpoints"][0]["registrar"])
        await lab.kill(peer)  # events from the kill on are what until() reads next
        await lab.until(lambda e: e["kind"] == "registration.state"
                        and e["state"] == "Registered", timeout=10)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from emulator.lab.client import ControlError, auth_headers
from emulator.lab.launch import LaunchError, launch
from emulator.lab.ops import (
    DOWN_TIMEOUT,
    Event,
    LabOps,
    LabTimeout,
    Predicate,
    load_source,
    seen_line,
    timeout_message,
)
from emulator.lab.state import LabHandle, pid_alive
from emulator.lab.sync import SyncLab, await_stopped

if TYPE_CHECKING:
    import aiohttp


class Lab(LabOps):
    """The asynchronous ``Lab`` API (an async context manager that stops a lab it started)."""

    def __init__(self, handle: LabHandle, *, owned: bool = False, timeout: float = 30.0) -> None:
        self.handle = handle
        self._timeout = timeout
        self._owned = owned
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    async def up(
        cls,
        source: Any = None,
        *,
        root: Path | None = None,
        timeout: float = 30.0,
        base: Path | None = None,
    ) -> Self:
        """Start a lab in the background and wait until every endpoint settled."""
        config = load_source(source, base)
        handle = await asyncio.to_thread(launch, config, timeout=timeout, root=root)
        lab = cls(handle, owned=True)
        try:
            await lab.wait_settled(timeout)
        except BaseException:
            await lab.down()
            raise
        return lab

    async def _session_get(self) -> aiohttp.ClientSession:
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                self.handle.control, headers=auth_headers(self.handle)
            )
        return self._session

    async def _call(  # type: ignore[override]
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        then: Callable[[Any], Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        import aiohttp

        session = await self._session_get()
        limit = aiohttp.ClientTimeout(total=timeout or self._timeout)
        try:
            async with session.request(method, path, json=body, timeout=limit) as response:
                payload = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ControlError(
                f"cannot reach lab {self.name!r} at {self.handle.control}: {exc}"
            ) from None
        if status >= 400 and not (status == 504 and "endpoints" in (payload or {})):
            message = payload.get("error") if isinstance(payload, dict) else None
            raise ControlError(message or f"lab answered HTTP {status}")
        return then(payload) if then is not None else payload

    async def _stream(self, since: int, follow: bool) -> Any:
        import json

        session = await self._session_get()
        async with session.get(f"/events?since={since}&follow={int(follow)}") as response:
            async for line in response.content:
                if line.strip():
                    event = json.loads(line)
                    self._next_seq = max(self._next_seq, int(event["seq"]) + 1)
                    yield event

    async def events(self, since: int = 0) -> list[Event]:
        return [event async for event in self._stream(since, follow=False)]

    async def until(
        self,
        predicate: Predicate,
        *,
        timeout: float = 30.0,
        since: int | None = None,
        what: str = "",
    ) -> Event:
        """``await lab.until(lambda e: ..., timeout=10)``: the first matching event from
        ``since`` (default: the next one); :class:`LabTimeout` if none comes in time."""
        seen: list[str] = []
        start = self._next_seq if since is None else since
        try:
            async with asyncio.timeout(timeout):
                async for event in self._stream(start, follow=True):
                    if predicate(event):
                        return event
                    seen.append(seen_line(event))
        except TimeoutError:
            pass
        raise LabTimeout(timeout_message(what or "matching event", timeout, seen))

    async def down(self, timeout: float = DOWN_TIMEOUT) -> None:
        handle = self.handle
        with contextlib.suppress(ControlError):  # gone already: the PID below still works
            await self._call("POST", "/shutdown")
        await self.close()
        await asyncio.to_thread(await_stopped, handle, timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._owned and pid_alive(self.handle.pid):
            await self.down()
        else:
            await self.close()


__all__ = ["Lab", "LabTimeout", "LaunchError", "SyncLab"]
