"""The lab's control plane: a small HTTP/JSON API served by the supervisor.

On loopback it needs no credentials (like the rest of the lab's loopback sockets). Beyond
loopback — a supervisor in a container, published to the host — every request must carry
``Authorization: Bearer <token>``; the token is written with the lab's state file, where
``siplab`` and the ``Lab`` API find it.

aiohttp serves it because the supervisor is already an asyncio program and the event stream
(``GET /events?follow=1``, newline-delimited JSON) needs a streaming response.

Routes:
  GET  /status                          the LabView as JSON
  GET  /events?since=N&follow=0|1       events as NDJSON, each with its "seq"
  GET  /wait?until=settled&timeout=S    returns when every endpoint is Registered or Failed
  POST /faults/{fault}                  {"target": NAME, ...args}: kill, stop, start, restart,
                                        pause, resume, partition, heal, impair, maintenance
  POST /components/{name}/ops/{op}      a component's own control op, e.g. dns "add" (JSON args)
  POST /mark                            record a scenario.run event (JSON fields)
  POST /shutdown                        stop the whole lab
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from emulator.channel import ChannelSpec
from emulator.lab.link import ControlFailure
from emulator.lab.supervisor import Supervisor

MAX_WAIT = 300.0


class ControlPlane:
    def __init__(
        self, supervisor: Supervisor, shutdown: Callable[[], None], token: str | None = None
    ) -> None:
        self.supervisor = supervisor
        self._shutdown = shutdown
        self._token = token
        self._runner: web.AppRunner | None = None
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_errors, self._authorize])
        app.router.add_get("/status", self.status)
        app.router.add_get("/events", self.events)
        app.router.add_get("/wait", self.wait)
        app.router.add_post("/faults/{fault}", self.fault)
        app.router.add_post("/components/{name}/ops/{op}", self.component_op)
        app.router.add_post("/mark", self.mark)
        app.router.add_post("/shutdown", self.shutdown)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._token is None and ChannelSpec("listen", host, port).needs_token():
            raise ValueError(f"a control plane on {host} (beyond loopback) needs a token")
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.url = f"http://{bound_host}:{bound_port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _authorize(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if self._token is not None:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), self._token.encode()
            ):
                raise web.HTTPUnauthorized(
                    text=_json_error("this lab's control plane needs its bearer token"),
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return await handler(request)

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self._status())

    def _status(self) -> dict[str, Any]:
        supervisor = self.supervisor
        return {
            **supervisor.view.to_dict(),
            "settled": supervisor.view.settled(),
            "seq": supervisor.log.next_seq,
        }

    async def events(self, request: web.Request) -> web.StreamResponse:
        since = _int_query(request, "since", 0)
        follow = request.query.get("follow", "0") not in ("0", "false", "")
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        log = self.supervisor.log
        try:
            if follow:
                async for seq, event in log.follow(since):
                    await response.write(_line(seq, event.to_dict()))
            else:
                events, next_seq = log.since(since)
                first = next_seq - len(events)
                for offset, event in enumerate(events):
                    await response.write(_line(first + offset, event.to_dict()))
            await response.write_eof()
        except ConnectionResetError:
            pass  # the reader went away (a wait that got its event, a Ctrl-C): nothing to do
        return response

    async def wait(self, request: web.Request) -> web.Response:
        until = request.query.get("until", "settled")
        if until != "settled":
            raise web.HTTPBadRequest(text=_json_error(f"unknown wait condition {until!r}"))
        timeout = min(float(_int_query(request, "timeout", 30)), MAX_WAIT)
        settled = await self.supervisor.wait_settled(timeout)
        return web.json_response(self._status(), status=200 if settled else 504)

    async def fault(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        target = body.pop("target", None)
        if not isinstance(target, str) or not target:
            raise web.HTTPBadRequest(text=_json_error('body needs {"target": "<component>"}'))
        fault = request.match_info["fault"]
        return web.json_response(await self.supervisor.apply(fault, target, body))

    async def mark(self, request: web.Request) -> web.Response:
        seq = await self.supervisor.mark(await _json_body(request))
        return web.json_response({"seq": seq})

    async def component_op(self, request: web.Request) -> web.Response:
        name, op = request.match_info["name"], request.match_info["op"]
        result = await self.supervisor.component_op(name, op, await _json_body(request))
        return web.json_response({"component": name, "op": op, "result": result})

    async def shutdown(self, request: web.Request) -> web.Response:
        # Answer first: the lab stopping takes the control plane down with it.
        asyncio.get_running_loop().call_soon(self._shutdown)
        return web.json_response({"stopping": self.supervisor.lab.name}, status=202)


def _line(seq: int, event: dict[str, Any]) -> bytes:
    return (json.dumps({"seq": seq, **event}, default=str) + "\n").encode()


def _json_error(message: str) -> str:
    return json.dumps({"error": message})


def _int_query(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return max(0, int(raw))
    except ValueError:
        raise web.HTTPBadRequest(text=_json_error(f"{name} must be a whole number")) from None


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text=_json_error("body must be JSON")) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=_json_error("body must be a JSON object"))
    return body


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ControlFailure as exc:
        return web.json_response({"error": str(exc)}, status=409)
    except web.HTTPException as exc:
        if exc.text and exc.text.startswith("{"):
            return web.json_response(json.loads(exc.text), status=exc.status)
        return web.json_response({"error": exc.reason}, status=exc.status)
