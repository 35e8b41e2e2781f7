"""The lab supervisor: starts every component as its own process, in order, and runs faults.

Readiness is taken from events, never from sleeps: DNS first (endpoints resolve at start),
then the peers, then the endpoints, each step waiting for the components' ``ready`` events
with a bound. Every event from every component lands in one :class:`EventLog`, which also
feeds the :class:`LabView` that ``siplab status`` shows.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emulator.events import Event
from emulator.lab.eventlog import EventLog
from emulator.lab.model import LabConfig
from emulator.lab.process import ComponentProcess, ControlFailure
from emulator.lab.view import LabView

READY_TIMEOUT = 20.0


class LabStartError(Exception):
    """The lab could not be started; ``str()`` says which component and why, in one line."""


class Supervisor:
    def __init__(
        self,
        lab: LabConfig,
        *,
        events_path: Path | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.lab = lab
        self.view = LabView.of(lab)
        self._on_event = on_event
        self.log = EventLog(events_path, on_event=self._record)
        self.components: dict[str, ComponentProcess] = {}
        self._add("dns", "dnsserver", lab.dns_config().model_dump_json())
        for peer in lab.peers:
            self._add(peer.name, "registrar", lab.registrar_config(peer.name).model_dump_json())
        for name in lab.endpoint_names():
            self._add(name, "endpoint", lab.endpoint_config(name).model_dump_json())

    def _add(self, name: str, module: str, config_json: str) -> None:
        self.components[name] = ComponentProcess(name, module, config_json, self.log.append)

    def _record(self, event: Event) -> None:
        self.view.apply(event)
        if self._on_event is not None:
            self._on_event(event)

    def emit(self, kind: str, **fields: Any) -> None:
        self.log.append(Event(time.time(), "supervisor", kind, fields))

    # -- starting -------------------------------------------------------------------

    async def start(self) -> None:
        self.emit("lab.starting", lab=self.lab.name, components=list(self.components))
        await self.start_components(["dns"])
        await self.start_components([p.name for p in self.lab.peers])
        await self.start_components(self.lab.endpoint_names())
        self.emit("lab.started", lab=self.lab.name)

    async def start_components(self, names: list[str]) -> None:
        seq = self.log.next_seq
        for name in names:
            await self.component(name).start()
        if names:
            await self._wait_ready(set(names), seq)

    async def _wait_ready(self, names: set[str], seq: int) -> None:
        waiting = set(names)
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                async for _, event in self.log.follow(seq):
                    if event.component not in waiting:
                        continue
                    if event.kind == "ready":
                        waiting.discard(event.component)
                        if not waiting:
                            return
                    elif event.kind in ("component.failed", "process.exited"):
                        raise LabStartError(self._why_not_started(event))
        except TimeoutError:
            pending = ", ".join(sorted(waiting))
            raise LabStartError(
                f"{pending} did not report ready within {READY_TIMEOUT:g} s"
            ) from None

    def _why_not_started(self, event: Event) -> str:
        name = event.component
        if event.kind == "component.failed":
            return f"{name} could not start: {event.get('error')}"
        tail = [line for line in self.component(name).stderr_tail if line.strip()]
        detail = f": {tail[-1]}" if tail else ""
        return f"{name} exited (status {event.get('returncode')}) before it was ready{detail}"

    # -- operating ------------------------------------------------------------------

    def component(self, name: str) -> ComponentProcess:
        try:
            return self.components[name]
        except KeyError:
            known = ", ".join(self.components)
            raise ControlFailure(f"no component named {name!r}; this lab has: {known}") from None

    async def maintenance(self, name: str, on: bool) -> dict[str, Any]:
        if name not in self.view.peers:
            peers = ", ".join(self.view.peers)
            raise ControlFailure(f"{name!r} is not a peer; peers are: {peers}")
        result = await self.component(name).request("maintenance", {"on": on})
        self.emit("fault.applied", fault="maintenance", target=name, on=on)
        return {"peer": name, **result}

    async def kill(self, name: str) -> dict[str, Any]:
        """SIGKILL: the kernel closes the sockets, as when a peer host dies."""
        process = self.component(name)
        pid = process.pid
        process.send_signal(signal.SIGKILL)
        self.emit("fault.applied", fault="kill", target=name, pid=pid)
        await process.wait_exited(5.0)
        return {"component": name, "pid": pid, "killed": True}

    async def stop_component(self, name: str) -> dict[str, Any]:
        """A graceful stop: the component closes its connections and listeners itself."""
        process = self.component(name)
        if not process.running:
            raise ControlFailure(f"{name} is not running")
        self.emit("fault.applied", fault="stop", target=name, pid=process.pid)
        await process.stop()
        return {"component": name, "stopped": True}

    async def start_component(self, name: str) -> dict[str, Any]:
        process = self.component(name)
        await self.start_components([name])
        self.emit("component.restarted", target=name, pid=process.pid)
        return {"component": name, "pid": process.pid}

    async def component_op(self, name: str, op: str, args: dict[str, Any]) -> Any:
        """Pass a control op to one component (it validates and answers for itself)."""
        if op in ("shutdown", "ping"):
            raise ControlFailure(f"use 'siplab stop {name}' rather than the {op!r} op")
        return await self.component(name).request(op, args)

    async def wait_settled(self, timeout: float) -> bool:
        """Wait until every endpoint is Registered or Failed; False on timeout."""
        if self.view.settled():
            return True
        try:
            async with asyncio.timeout(timeout):
                async for _ in self.log.follow(self.log.next_seq):
                    if self.view.settled():
                        return True
                    if self.log.closed:
                        return False
        except TimeoutError:
            return self.view.settled()
        return self.view.settled()

    # -- stopping -------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop every process this lab started: endpoints, then peers, then DNS."""
        self.emit("lab.stopping", lab=self.lab.name)
        groups = [self.lab.endpoint_names(), [p.name for p in self.lab.peers], ["dns"]]
        for group in groups:
            await asyncio.gather(*(self.components[name].stop() for name in group))
        self.emit("lab.stopped", lab=self.lab.name)
        await self.log.close()
