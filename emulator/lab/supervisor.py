"""The lab supervisor: runs every component, applies faults, and watches that each one answers.

Readiness is taken from events, never from sleeps: DNS first (endpoints resolve at start),
then the peers, then the endpoints, each step waiting for the components' ``ready`` events
with a bound. A component is either a child process (:class:`ComponentProcess`, over stdio)
or one that runs elsewhere and serves its channel on an address (:class:`AttachedComponent`),
or one that joins the lab's collector by itself (:class:`JoinedComponent`: the replicas of a
scalable endpoint group, which the lab gives their slice of the group as they join); an
external peer is none of these — the lab only points DNS and endpoints at it.

Every event from every component lands in one :class:`EventLog`, which also feeds the
:class:`LabView` that ``siplab status`` shows. A health check makes silence visible: a frozen
child (SIGSTOP, by the lab or by hand) becomes ``process.paused`` and a component that does not
answer its channel within :data:`PING_TIMEOUT` becomes ``component.unresponsive``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from emulator.channel import channel_token
from emulator.events import Event
from emulator.kinds import Kind
from emulator.lab.attached import AttachedComponent
from emulator.lab.certs import ca_path, lab_certificates
from emulator.lab.collector import Collector, JoinedComponent
from emulator.lab.eventlog import EventLog
from emulator.lab.link import ComponentLink, ControlFailure
from emulator.lab.model import LabConfig
from emulator.lab.process import ComponentProcess
from emulator.lab.view import LabView
from endpoint.group import HostConfig

READY_TIMEOUT = 20.0
HEALTH_INTERVAL = 0.5
PING_TIMEOUT = 0.75
CONTROL_TIMEOUT = 5.0

# Faults that act on the component's process (a signal), and those the component applies to
# its own traffic (in-process, over its channel).
PROCESS_FAULTS = frozenset({"kill", "pause", "resume"})
LINK_FAULTS = frozenset({"partition", "heal", "impair"})
FAULTS = (
    "kill",
    "stop",
    "start",
    "restart",
    "pause",
    "resume",
    "partition",
    "heal",
    "impair",
    "maintenance",
)


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
        self.components: dict[str, ComponentLink] = {}
        self._health: asyncio.Task[None] | None = None
        self.collector = (
            Collector(lab, channel_token(), self.log.append, self._joined)
            if lab.collector is not None
            else None
        )
        self._replica_aors: dict[str, str] = {}  # AOR (lower case) -> its replica host
        # The lab CA and the peers' certificates live in the lab's run directory (next to its
        # events), so clients can verify the peers with <run dir>/ca.pem.
        run_dir = events_path.parent if events_path is not None else None
        certs = lab_certificates(lab, run_dir) if run_dir is not None else {}
        ca = ca_path(run_dir) if run_dir is not None else None
        self._add("dns", "dnsserver", lab.dns_config().model_dump_json(), lab.dns.attach)
        for peer in lab.peers:
            if not peer.external:
                config = lab.registrar_config(peer.name, certs.get(peer.name), ca)
                self._add(peer.name, "registrar", config.model_dump_json(), peer.attach)
        # One endpoint host process per group shard, its endpoints inside.
        for name in lab.endpoint_names():
            config = lab.host_config(name, ca).model_dump_json()
            self._add(name, "endpoint", config, lab.endpoint_attach(name))

    def _add(self, name: str, module: str, config_json: str, attach: str | None) -> None:
        if attach is not None:
            self.components[name] = AttachedComponent(
                name, attach, self.log.append, channel_token()
            )
        else:
            self.components[name] = ComponentProcess(name, module, config_json, self.log.append)

    def _joined(self, link: JoinedComponent, config: HostConfig | None) -> None:
        """A component joined the collector; with ``config`` (a replica's slice, about to be
        sent), its endpoints join the lab's view."""
        self.components[link.name] = link
        if config is None:
            return
        members = []
        for group in config.groups:
            for i in range(group.count):
                aor = group.aor(i)
                members.append((aor, group.address_of(i)))
                self._replica_aors[aor.lower()] = link.name
        self.view.add_host(link.name, members)

    def _record(self, event: Event) -> None:
        self.view.apply(event)
        if self._on_event is not None:
            self._on_event(event)

    def emit(self, kind: Kind, **fields: Any) -> None:
        self.emit_for("supervisor", kind, **fields)

    def emit_for(self, component: str, kind: Kind, **fields: Any) -> None:
        """An event about ``component`` that only the lab can see (it is frozen, silent...)."""
        self.log.append(Event(time.time(), component, kind, fields))

    # -- starting -------------------------------------------------------------------

    async def start(self) -> None:
        self.emit(Kind.LAB_STARTING, lab=self.lab.name, components=list(self.components))
        if self.collector is not None:
            try:
                await self.collector.start()
            except ValueError as exc:
                raise LabStartError(str(exc)) from None
        peers = [p.name for p in self.lab.peers if not p.external]
        for group in (["dns"], peers, self.lab.endpoint_names()):
            await self.start_components(group)
        self.emit(Kind.LAB_STARTED, lab=self.lab.name)
        self._health = asyncio.create_task(self._watch_health())

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
                    if event.kind == Kind.READY:
                        waiting.discard(event.component)
                        if not waiting:
                            return
                    elif event.kind in (Kind.COMPONENT_FAILED, Kind.PROCESS_EXITED):
                        raise LabStartError(self._why_not_started(event))
        except TimeoutError:
            pending = ", ".join(sorted(waiting))
            attached = [n for n in waiting if isinstance(self.components[n], AttachedComponent)]
            hint = (
                f" (attached components must already serve their channel: "
                f"{', '.join(self._attach_address(n) for n in sorted(attached))})"
                if attached
                else ""
            )
            raise LabStartError(
                f"{pending} did not report ready within {READY_TIMEOUT:g} s{hint}"
            ) from None

    def _attach_address(self, name: str) -> str:
        link = self.components[name]
        return f"{name} at {link.address}" if isinstance(link, AttachedComponent) else name

    def _why_not_started(self, event: Event) -> str:
        name = event.component
        if event.kind == Kind.COMPONENT_FAILED:
            return f"{name} could not start: {event.get('error')}"
        link = self.component(name)
        tail = [line for line in getattr(link, "stderr_tail", ()) if line.strip()]
        detail = f": {tail[-1]}" if tail else ""
        return f"{name} exited (status {event.get('returncode')}) before it was ready{detail}"

    # -- looking ----------------------------------------------------------------------

    def component(self, name: str) -> ComponentLink:
        try:
            return self.components[name]
        except KeyError:
            pass
        hosted = self.lab.find_endpoint(name)
        if hosted is not None:
            raise ControlFailure(
                f"{name} is one endpoint inside the endpoint host {hosted[0]}: stop, start and "
                f"restart act on it alone; other faults act on the host ({hosted[0]})"
            )
        external = [p.name for p in self.lab.peers if p.external]
        if name in external:
            raise ControlFailure(
                f"{name} is an external peer: the lab does not run it, so it cannot act on it"
            )
        known = ", ".join(self.components)
        raise ControlFailure(f"no component named {name!r}; this lab has: {known}") from None

    def _process(self, name: str, fault: str) -> ComponentProcess:
        link = self.component(name)
        if not isinstance(link, ComponentProcess):
            raise ControlFailure(
                f"{name} runs {link.where}: the lab cannot {fault} its process; "
                "use the tools of where it runs (e.g. docker compose " + f"{fault} {name})"
            )
        return link

    def _answering(self, name: str) -> ComponentLink:
        """A component that can take a control request now, or a one-line reason why not."""
        link = self.component(name)
        if isinstance(link, ComponentProcess) and link.frozen():
            raise ControlFailure(f"{name} is paused; 'siplab resume {name}' first")
        if not link.running:
            raise ControlFailure(f"{name} is not running; 'siplab start {name}' first")
        return link

    async def component_op(self, name: str, op: str, args: dict[str, Any]) -> Any:
        """Pass a control op to one component (it validates and answers for itself)."""
        if op in ("shutdown", "ping", "hello"):
            raise ControlFailure(f"use 'siplab stop {name}' rather than the {op!r} op")
        return await self._answering(name).request(op, args, CONTROL_TIMEOUT)

    # -- faults -----------------------------------------------------------------------

    async def apply(self, fault: str, target: str, args: dict[str, Any]) -> dict[str, Any]:
        """Apply one fault (or lift one: start, resume, heal, maintenance off); every one is a
        ``fault.applied`` event saying exactly what was done."""
        handlers: dict[str, Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "kill": self._kill,
            "stop": self._stop,
            "start": self._start,
            "restart": self._restart,
            "pause": self._pause,
            "resume": self._resume,
            "partition": self._link,
            "heal": self._link,
            "impair": self._link,
            "maintenance": self._maintenance,
        }
        handler = handlers.get(fault)
        if handler is None:
            raise ControlFailure(f"unknown fault {fault!r}; faults are: {', '.join(FAULTS)}")
        if fault in LINK_FAULTS:
            args = {**args, "fault": fault}
        result = await handler(target, args)
        seq = self.log.next_seq
        self.emit(Kind.FAULT_APPLIED, fault=fault, target=target, **result)
        return {"fault": fault, "target": target, "seq": seq, **result}

    async def _kill(self, name: str, _: dict[str, Any]) -> dict[str, Any]:
        """SIGKILL: the kernel closes the sockets, as when a peer host dies."""
        process = self._process(name, "kill")
        pid = process.pid
        process.send_signal(signal.SIGKILL)
        return {"pid": pid}

    def _hosted(self, name: str) -> tuple[str, str] | None:
        """(host, AOR) when ``name`` is an endpoint inside a host of several."""
        if name in self.components:
            return None
        replica = self._replica_aors.get(name.removeprefix("sip:").lower())
        if replica is not None:
            return replica, name.removeprefix("sip:")
        return self.lab.find_endpoint(name)

    async def _stop(self, name: str, _: dict[str, Any]) -> dict[str, Any]:
        """A graceful stop: the component closes its connections and listeners itself (an
        endpoint de-registers first, Expires: 0; one inside a host of several is stopped
        there, its host running on)."""
        hosted = self._hosted(name)
        if hosted is not None:
            host, aor = hosted
            result = await self.component_op(host, "stop_endpoint", {"aor": aor})
            return {"host": host, "aor": aor, "state": result.get("state")}
        link = self.component(name)
        if not link.running:
            raise ControlFailure(f"{name} is not running")
        if isinstance(link, AttachedComponent | JoinedComponent):
            await link.shutdown()
            return {"where": link.address}
        pid = link.pid
        await link.stop()
        return {"pid": pid}

    async def _start(self, name: str, _: dict[str, Any]) -> dict[str, Any]:
        hosted = self._hosted(name)
        if hosted is not None:
            host, aor = hosted
            result = await self.component_op(host, "start_endpoint", {"aor": aor})
            return {"host": host, "aor": aor, "state": result.get("state")}
        link = self.component(name)
        if isinstance(link, ComponentProcess) and link.dying():
            await link.wait_exited(5.0)  # a kill just sent: let its exit be recorded first
        if link.running:
            raise ControlFailure(f"{name} is already running")
        await self.start_components([name])
        return {"pid": link.pid}

    async def _restart(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        if self._hosted(name) is not None:
            await self._stop(name, args)
            return await self._start(name, args)
        if self.component(name).running:
            await self._stop(name, args)
        return await self._start(name, args)

    async def _pause(self, name: str, _: dict[str, Any]) -> dict[str, Any]:
        """SIGSTOP: the process freezes with its sockets open — the silent failure."""
        link = self.component(name)
        if not isinstance(link, ComponentProcess):
            return await self._silence(name, link, pause=True)
        if link.frozen():
            raise ControlFailure(f"{name} is already paused")
        link.send_signal(signal.SIGSTOP)
        self.emit_for(name, Kind.PROCESS_PAUSED, pid=link.pid, by="lab")
        return {"pid": link.pid}

    async def _resume(self, name: str, _: dict[str, Any]) -> dict[str, Any]:
        link = self.component(name)
        if not isinstance(link, ComponentProcess):
            return await self._silence(name, link, pause=False)
        if not link.frozen():
            raise ControlFailure(f"{name} is not paused")
        link.send_signal(signal.SIGCONT)
        self.emit_for(name, Kind.PROCESS_RESUMED, pid=link.pid, by="lab")
        return {"pid": link.pid}

    async def _silence(self, name: str, link: ComponentLink, *, pause: bool) -> dict[str, Any]:
        """Pause a component the lab cannot signal (a container, another host) in-process:
        silent both ways on every socket, which is what a frozen process looks like from
        outside; only its channel to the lab still answers."""
        if name not in self.view.peers and name != "dns":
            raise ControlFailure(
                f"{name} runs {link.where}: the lab cannot pause it; "
                "use the tools of where it runs (e.g. docker compose pause)"
            )
        if pause == self._view_paused(name):
            raise ControlFailure(f"{name} is {'already' if pause else 'not'} paused")
        op = "partition" if pause else "heal"
        state = await self._answering(name).request(op, {}, CONTROL_TIMEOUT)
        kind = Kind.PROCESS_PAUSED if pause else Kind.PROCESS_RESUMED
        self.emit_for(name, kind, by="lab", emulated="in-process partition")
        return {"emulated": "in-process partition", "link": state}

    async def _link(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Partition, heal and impair happen inside the component, between socket and core."""
        self.component(name)  # an unknown name says so first
        if name not in self.view.peers and name != "dns":
            raise ControlFailure(f"{name} is not a peer or the DNS server; link faults apply there")
        op = args.pop("fault")
        endpoints = args.pop("endpoints", None)
        if endpoints:
            args["remotes"] = [*(args.get("remotes") or []), *self._endpoint_addresses(endpoints)]
        link = await self._answering(name).request(op, args, CONTROL_TIMEOUT)
        return {"args": args, "link": link}

    def _endpoint_addresses(self, names: list[str]) -> list[str]:
        found = []
        for name in names:
            try:
                found.append(str(self.lab.endpoint_config(name).address))
            except KeyError:
                raise ControlFailure(f"no endpoint {name!r} in this lab") from None
        return found

    async def _maintenance(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        if name not in self.view.peers:
            peers = ", ".join(self.view.peers)
            raise ControlFailure(f"{name!r} is not a peer; peers are: {peers}")
        on = args.get("on")
        if not isinstance(on, bool):
            raise ControlFailure('maintenance needs {"on": true} or {"on": false}')
        result = await self._answering(name).request("maintenance", {"on": on}, CONTROL_TIMEOUT)
        return {"on": on, **result}

    async def mark(self, fields: dict[str, Any]) -> int:
        """A scripted experiment's marker (run start/end) in the lab's own event log."""
        seq = self.log.next_seq
        self.emit(Kind.SCENARIO_RUN, **fields)
        return seq

    # -- health -----------------------------------------------------------------------

    async def _watch_health(self) -> None:
        """Make silence an event: frozen processes and components that stop answering."""
        frozen: dict[str, bool] = {}
        silent: dict[str, bool] = {}
        while True:
            checks = []
            for name, link in self.components.items():
                is_frozen = isinstance(link, ComponentProcess) and link.frozen()
                if is_frozen != frozen.get(name, False):
                    frozen[name] = is_frozen
                    paused = self._view_paused(name)
                    if is_frozen and not paused:  # frozen by hand (kill -STOP), not by the lab
                        self.emit_for(name, Kind.PROCESS_PAUSED, pid=link.pid, by="outside")
                    elif not is_frozen and paused:
                        self.emit_for(name, Kind.PROCESS_RESUMED, pid=link.pid, by="outside")
                # One still starting does not read its channel yet: it has READY_TIMEOUT.
                if link.running and not is_frozen and name not in self.view.starting:
                    checks.append(self._ping(name, link, silent))
            await asyncio.gather(*checks)
            await asyncio.sleep(HEALTH_INTERVAL)

    def _view_paused(self, name: str) -> bool:
        status = self.view.dns if name == "dns" else self.view.peers.get(name)
        return bool(status and status.paused)

    async def _ping(self, name: str, link: ComponentLink, silent: dict[str, bool]) -> None:
        try:
            await link.request("ping", timeout=PING_TIMEOUT)
            answered = True
        except ControlFailure:
            answered = link.running is False  # gone, not silent: its exit is its own event
        if answered == silent.get(name, False):
            silent[name] = not answered
            self.emit_for(name, Kind.COMPONENT_UNRESPONSIVE, on=not answered)

    # -- waiting ----------------------------------------------------------------------

    async def wait_settled(self, timeout: float) -> bool:
        """Wait until every endpoint is Registered or Failed; False on timeout."""
        if self.view.settled():
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                async for _ in self.log.follow(self.log.next_seq):
                    if self.view.settled() or self.log.closed:
                        break
        return self.view.settled()

    # -- stopping -------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop every process this lab started: endpoints, then peers, then DNS; detach from
        the components it attached to (their owner stops them)."""
        if self._health is not None:
            self._health.cancel()
            await asyncio.gather(self._health, return_exceptions=True)
        self.emit(Kind.LAB_STOPPING, lab=self.lab.name)
        peers = [p.name for p in self.lab.peers if not p.external]
        if self.collector is not None:
            await self.collector.close()
        for group in (self.lab.endpoint_names(), peers, ["dns"]):
            await asyncio.gather(*(self.components[name].stop() for name in group))
        self.emit(Kind.LAB_STOPPED, lab=self.lab.name)
        await self.log.close()
