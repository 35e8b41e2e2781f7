"""Components that join the lab, rather than the lab starting or attaching to them.

``docker compose up --scale endpoint=N`` makes N endpoint hosts at addresses nobody chose; the
lab cannot attach to them, so they connect to its collector (``--control connect:HOST:PORT``,
see emulator/channel.py). Each says hello with the lab's token and a name: an endpoint host
started with ``--config-from-lab`` names its scalable group and is given the next free slot —
replica k runs members ``(k - 1) * count_per_replica`` onwards — and is sent its
:class:`HostConfig` with the ``configure`` op; one that was configured before (the lab
restarted, the connection broke) names its slot and takes it back. From then on it is a
component like any other (events, status, ``stop``, the health check); when its connection is
lost (``docker compose kill``, scale down) it leaves the lab, and its slot is free again — kept
first for the same host, so a restarted container gets its own endpoints back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
from collections.abc import Callable
from typing import Any

from emulator.channel import TOKEN_ENV, ChannelSpec
from emulator.events import Event
from emulator.kinds import Kind
from emulator.lab.link import ComponentLink, ControlFailure
from emulator.lab.model import LabConfig
from endpoint.group import HostConfig

HELLO_TIMEOUT = 5.0
CONFIGURE_TIMEOUT = 10.0
READ_CHUNK = 1 << 16
MAX_HELLO = 1 << 16


class Refused(Exception):
    """A joining component the lab will not take; ``str()`` goes back to it."""


class JoinedComponent(ComponentLink):
    """The lab's end of a component that joined the collector: running while connected."""

    def __init__(self, name: str, emit: Callable[[Event], None], group: int, slot: int) -> None:
        # Whatever name the component stamps on its events, the lab files them under the one it
        # gave: a joiner cannot speak for another component.
        def own(event: Event) -> None:
            emit(event if event.component == name else dataclasses.replace(event, component=name))

        super().__init__(name, own)
        self.group = group
        self.slot = slot
        self.address = ""
        self.hostname = ""
        self.where = "elsewhere (it joined the lab's collector)"
        self._writer: asyncio.StreamWriter | None = None

    @property
    def running(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def start(self) -> None:
        raise ControlFailure(
            f"{self.name} joins the lab by itself: start its container or process "
            "(e.g. docker compose up -d --scale endpoint=N)"
        )

    def _send_line(self, line: bytes) -> None:
        if self._writer is None:
            raise ConnectionError("not connected")
        self._writer.write(line)

    def connected(self, writer: asyncio.StreamWriter, address: str, hostname: str) -> None:
        if self._writer is not None:
            self._writer.close()  # the same host joining again replaces its older connection
        self._writer, self.address, self.hostname = writer, address, hostname
        self._partial = b""
        self.event(Kind.COMPONENT_JOINED, peer=address, hostname=hostname)

    def lost(self, writer: asyncio.StreamWriter, reason: str) -> None:
        if self._writer is not writer:
            return  # an older connection, already replaced
        self._writer = None
        self.fail_pending("left the lab")
        self.event(Kind.COMPONENT_LEFT, reason=reason)

    async def shutdown(self) -> None:
        """Ask the component itself to stop (the lab owns no process to signal)."""
        with contextlib.suppress(ControlFailure):
            await self.request("shutdown", timeout=2.0)

    async def stop(self) -> None:
        """Detach: the lab did not start this component, so it leaves it running."""
        if self._writer is not None:
            self._writer.close()


class Collector:
    """Serves ``lab.collector``; ``on_join(link, config)`` is called as each component joins
    (``config``: the HostConfig it is about to be sent, or None when it had one)."""

    def __init__(
        self,
        lab: LabConfig,
        token: str | None,
        emit: Callable[[Event], None],
        on_join: Callable[[JoinedComponent, HostConfig | None], None],
    ) -> None:
        assert lab.collector is not None
        host, _, port = lab.collector.rpartition(":")
        self.address = lab.collector
        self._host, self._port = host.strip("[]"), int(port)
        self._lab = lab
        self._token = token
        self._emit = emit
        self._on_join = on_join
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.links: dict[str, JoinedComponent] = {}

    async def start(self) -> None:
        """Serve; a ValueError says in one line why it cannot."""
        if self._token is None and ChannelSpec("listen", self._host, self._port).needs_token():
            raise ValueError(
                f"the collector on {self.address} (beyond loopback) needs a token: set {TOKEN_ENV}"
            )
        try:
            self._server = await asyncio.start_server(
                self._serve, self._host, self._port, limit=MAX_HELLO
            )
        except OSError as exc:
            raise ValueError(
                f"cannot serve the collector on {self.address}: {exc.strerror or exc}"
            ) from None

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in self.links.values():
            await link.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if peer else "?"
        try:
            hello = await self._hello(reader)
            link, config = self._place(hello, address)
        except Refused as exc:
            writer.write(json.dumps({"error": str(exc)}).encode() + b"\n")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()
            return
        except (ConnectionError, TimeoutError):
            writer.close()
            return
        writer.write(json.dumps({"op": "welcome", "args": {"name": link.name}}).encode() + b"\n")
        link.connected(writer, address, str(hello.get("hostname") or ""))
        self._on_join(link, config)
        if config is not None:
            self._spawn(self._configure(link, config))
        reason = "connection closed"
        try:
            while chunk := await reader.read(READ_CHUNK):
                link.feed(chunk)
        except OSError as exc:
            reason = exc.strerror or str(exc)
        finally:
            link.lost(writer, reason)
            writer.close()

    async def _hello(self, reader: asyncio.StreamReader) -> dict[str, Any]:
        try:
            async with asyncio.timeout(HELLO_TIMEOUT):
                line = await reader.readline()
            message = json.loads(line)
        except ValueError:
            raise Refused("bad hello") from None
        args = message.get("args") if isinstance(message, dict) else None
        if (
            not isinstance(message, dict)
            or message.get("op") != "hello"
            or not isinstance(args, dict)
        ):
            raise Refused("bad hello")
        if self._token and not hmac.compare_digest(str(args.get("token")), self._token):
            raise Refused("wrong or missing token")
        return args

    def _place(
        self, hello: dict[str, Any], address: str
    ) -> tuple[JoinedComponent, HostConfig | None]:
        """Which component the joiner is, and the configuration it needs (if any)."""
        name = hello.get("name")
        hostname = str(hello.get("hostname") or "")
        groups = self._lab.scalable_groups()
        if hello.get("from_lab"):
            if name in groups:
                group = groups[str(name)]
            elif len(groups) == 1:
                group = next(iter(groups.values()))
            else:
                known = ", ".join(groups) or "none"
                raise Refused(f"no scalable endpoint group {name!r} in this lab (it has: {known})")
            slot = self._free_slot(group, hostname)
            link = self._link(group, slot)
            return link, self._lab.replica_config(group, slot, address)
        for group_name, group in groups.items():
            prefix = f"{group_name}-"
            number = str(name).removeprefix(prefix)
            spec = self._lab.endpoints[group]
            if str(name).startswith(prefix) and number.isdigit():
                slot = int(number)
                if not 1 <= slot <= spec.max_replicas:
                    break
                link = self._link(group, slot)
                if link.running and link.hostname != hostname:
                    raise Refused(f"{name} is taken by {link.hostname or link.address}")
                return link, None
        raise Refused(f"this lab takes no joining component named {name!r}")

    def _free_slot(self, group: int, hostname: str) -> int:
        spec = self._lab.endpoints[group]
        free = []
        for slot in range(1, spec.max_replicas + 1):
            link = self.links.get(self._lab.replica_name(spec, slot))
            if link is None or not link.running:
                if link is not None and hostname and link.hostname == hostname:
                    return slot  # the same host back (a restarted container): its own slot
                free.append(slot)
        if not free:
            raise Refused(f"every one of the {spec.max_replicas} replicas of {spec.name} is taken")
        return free[0]

    def _link(self, group: int, slot: int) -> JoinedComponent:
        name = self._lab.replica_name(self._lab.endpoints[group], slot)
        link = self.links.get(name)
        if link is None:
            link = self.links[name] = JoinedComponent(name, self._emit, group, slot)
        return link

    async def _configure(self, link: JoinedComponent, config: HostConfig) -> None:
        try:
            await link.request(
                "configure", {"config": config.model_dump(mode="json")}, CONFIGURE_TIMEOUT
            )
        except ControlFailure as exc:
            link.event(Kind.COMPONENT_FAILED, error=f"not configured: {exc}")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
