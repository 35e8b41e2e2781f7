"""The lab's status, folded from its events: what ``siplab status`` shows.

Nothing here asks a component anything; the view is a pure function of the event stream, so
the status a user sees and the timings a test asserts come from the same source. The lab's
health check turns silence into events too (``process.paused`` for a frozen process,
``component.unresponsive`` for one that stops answering its channel), so a frozen peer shows
as ``paused`` or ``unresponsive`` here rather than ``active``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from emulator.events import Event
from emulator.kinds import Kind
from emulator.lab.model import LabConfig

FINAL_STATES = frozenset({"Registered", "Failed"})
UNREGISTERED = "Unregistered"  # the reason of an endpoint stopped on purpose (Expires: 0)


@dataclass(slots=True)
class ComponentStatus:
    """Process and link state shared by the DNS server and the peers."""

    name: str
    address: str
    base: str = "starting"  # starting | running | active | maintenance | stopped | external
    pid: int | None = None
    paused: bool = False
    unresponsive: bool = False
    partition: dict[str, Any] | None = None
    impair: dict[str, Any] | None = None
    attached: str | None = None

    @property
    def state(self) -> str:
        """The one word a user needs first: what stops this component from serving."""
        if self.base in ("stopped", "external", "starting"):
            return self.base
        if self.paused:
            return "paused"
        if self.unresponsive:
            return "unresponsive"
        if self.partition is not None:
            return "partitioned"
        return self.base

    @property
    def conditions(self) -> list[str]:
        found = []
        if self.base == "maintenance" and self.state != "maintenance":
            found.append("maintenance")
        if self.partition is not None and self.state != "partitioned":
            found.append("partitioned")
        if self.impair:
            found.append("impaired")
        return found

    def apply(self, event: Event, up_state: str) -> None:
        kind = event.kind
        if kind == Kind.PROCESS_STARTED:
            self.base, self.pid = "starting", event.get("pid")
            self._clear()
        elif kind == Kind.COMPONENT_JOINED:
            self.base = "starting"
            self._clear()
        elif kind == Kind.READY:
            self.base = "maintenance" if event.get("maintenance") else up_state
        elif kind == Kind.MAINTENANCE:
            self.base = "maintenance" if event.get("on") else up_state
        elif kind in (Kind.PROCESS_EXITED, Kind.COMPONENT_LEFT):
            self.base, self.pid = "stopped", None
            self._clear()
        elif kind == Kind.PROCESS_PAUSED:
            self.paused = True
        elif kind == Kind.PROCESS_RESUMED:
            self.paused = False
        elif kind == Kind.COMPONENT_UNRESPONSIVE:
            self.unresponsive = bool(event.get("on"))
        elif kind == Kind.LINK_CHANGED:
            self.partition = event.get("partition")
            impair = event.get("impair") or {}
            self.impair = {k: v for k, v in impair.items() if v} or None

    def _clear(self) -> None:
        self.paused = self.unresponsive = False
        self.partition = self.impair = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "state": self.state,
            "conditions": self.conditions,
            "pid": self.pid,
            "partition": self.partition,
            "impair": self.impair,
            "attached": self.attached,
        }


@dataclass(slots=True)
class PeerStatus(ComponentStatus):
    registrations: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**ComponentStatus.to_dict(self), "registrations": self.registrations}


@dataclass(slots=True)
class EndpointStatus:
    """One endpoint, wherever it runs: ``host`` is the endpoint host process (its component),
    ``name`` the endpoint's own name (its host's when it runs alone, else its AOR)."""

    name: str
    uri: str
    address: str
    host: str = ""
    state: str = "Inactive"
    reason: str = ""
    registrar: str | None = None
    transport: str | None = None
    pid: int | None = None
    since: float | None = None
    # Outbound On (RFC 5626): each flow's state and, while registered, its registrar, by reg-id.
    flows: dict[int, tuple[str, str | None]] = field(default_factory=dict)

    @property
    def registrars(self) -> list[str]:
        """Every registrar that holds a live registration of this endpoint (with Outbound On,
        one per registered flow; else at most one)."""
        if self.state != "Registered":
            return []
        if self.flows:
            live = (self.flows[reg_id][1] for reg_id in sorted(self.flows))
            return list(dict.fromkeys(r for r in live if r is not None))
        return [self.registrar] if self.registrar else []

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uri": self.uri,
            "host": self.host,
            "address": self.address,
            "state": self.state,
            "reason": self.reason,
            "registrar": self.registrar,
            "registrars": self.registrars,
            "flows": [
                {"reg_id": reg_id, "state": state, "registrar": registrar}
                for reg_id, (state, registrar) in sorted(self.flows.items())
            ],
            "transport": self.transport,
            "pid": self.pid,
            "since": self.since,
        }

    @property
    def final(self) -> bool:
        """Registered, Failed, or stopped on purpose (de-registered): nothing more to wait for."""
        return self.state in FINAL_STATES or self.reason.startswith(UNREGISTERED)

    def apply(self, event: Event) -> None:
        kind = event.kind
        if kind == Kind.PROCESS_STARTED:
            self.pid = event.get("pid")
        elif kind == Kind.REGISTRATION_STATE:
            self.state = event.get("state", self.state)
            self.reason = event.get("reason", "")
            self.since = event.t
            registered = self.state == "Registered"
            self.registrar = event.get("registrar") if registered else None
            self.transport = event.get("transport") if registered else None
            self._follow_flows()
        elif kind == Kind.REGISTRATION_FLOW:
            # The overall state stays Registered while one flow lives: which registrars hold
            # the endpoint is only in its flows' events.
            reg_id, state = event.get("reg_id"), event.get("state")
            registrar = event.get("registrar")
            if isinstance(reg_id, int) and isinstance(state, str):  # else not a flow's event
                live = state == "Registered" and isinstance(registrar, str)
                self.flows[reg_id] = (state, registrar if live else None)
                self._follow_flows()
        elif kind in (Kind.PROCESS_EXITED, Kind.COMPONENT_LEFT):
            self.state, self.pid = "Inactive", None
            self.reason = "process exited" if kind == Kind.PROCESS_EXITED else "left the lab"
            self.registrar = self.transport = None
            self.flows.clear()
            self.since = event.t

    def _follow_flows(self) -> None:
        """Outbound On: the registrar shown is the first registered flow's."""
        if self.flows and (registrars := self.registrars):
            self.registrar = registrars[0]


_HOST_WIDE = frozenset({Kind.PROCESS_STARTED, Kind.PROCESS_EXITED, Kind.COMPONENT_LEFT})
_STARTS = frozenset({Kind.PROCESS_STARTED, Kind.COMPONENT_JOINED})
_ENDS_STARTING = frozenset(
    {Kind.READY, Kind.PROCESS_EXITED, Kind.COMPONENT_LEFT, Kind.COMPONENT_FAILED}
)


@dataclass(slots=True)
class LabView:
    lab: str
    dns: ComponentStatus
    dns_metrics: str | None = None
    peers: dict[str, PeerStatus] = field(default_factory=dict)
    # By AOR; ``hosts`` lists each endpoint host's endpoints, for events about its process.
    endpoints: dict[str, EndpointStatus] = field(default_factory=dict)
    hosts: dict[str, list[EndpointStatus]] = field(default_factory=dict)
    # AOR -> reporting peer -> the peers it sees that AOR bound on (cluster.double events).
    double_reports: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    # Endpoints not in a final state, kept as events arrive: ``settled`` is asked after every
    # event while a lab starts, and counting 25,000 endpoints each time would be quadratic.
    _unsettled: int = 0
    # Components (re)started or (re)joined that have not reported ready yet: still importing
    # and setting up, so not yet reading their channel, which is not the same as silent.
    starting: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, lab: LabConfig) -> LabView:
        metrics = lab.dns.metrics_address()
        view = cls(
            lab=lab.name,
            dns=ComponentStatus("dns", lab.dns_address(), attached=lab.dns.attach),
            dns_metrics=f"http://{metrics}/metrics" if metrics else None,
        )
        for peer in lab.peers:
            status = PeerStatus(peer.name, str(peer.address), attached=peer.attach)
            if peer.external:
                status.base = "external"
            view.peers[peer.name] = status
        for name, aor, host, address in lab.endpoint_members():
            endpoint = EndpointStatus(name, aor, address, host)
            view.endpoints[aor] = endpoint
            view.hosts.setdefault(host, []).append(endpoint)
        view._unsettled = len(view.endpoints)
        return view

    def add_host(self, host: str, members: list[tuple[str, str]]) -> None:
        """An endpoint host that joined while the lab runs (a replica): its (AOR, address)s."""
        if host in self.hosts:
            return  # the same slot joining again: its endpoints are known
        for aor, address in members:
            endpoint = EndpointStatus(aor, aor, address, host)
            self.endpoints[aor] = endpoint
            self.hosts.setdefault(host, []).append(endpoint)
        self._unsettled += len(members)

    def apply(self, event: Event) -> None:
        name = event.component
        if event.kind in _STARTS:
            self.starting.add(name)
        elif event.kind in _ENDS_STARTING:
            self.starting.discard(name)
        if name == "dns":
            self.dns.apply(event, "running")
        elif name in self.peers:
            peer = self.peers[name]
            peer.apply(event, "active")
            if event.kind in (Kind.PROCESS_STARTED, Kind.PROCESS_EXITED, Kind.COMPONENT_LEFT):
                peer.registrations = 0
                self._double(name, None, [])
            elif event.kind == Kind.CLUSTER_DOUBLE:
                on = bool(event.get("on"))
                self._double(
                    name, str(event.get("aor")), list(event.get("peers") or []) if on else []
                )
            elif isinstance(event.get("registrations"), int):
                peer.registrations = event.get("registrations")
        elif name in self.hosts:
            if event.kind in _HOST_WIDE:
                for endpoint in self.hosts[name]:
                    self._apply(endpoint, event)
            elif event.kind in (Kind.REGISTRATION_STATE, Kind.REGISTRATION_FLOW):
                endpoint = self.endpoints.get(str(event.get("aor")))
                if endpoint is not None and endpoint.host == name:
                    self._apply(endpoint, event)

    def _double(self, reporter: str, aor: str | None, peers: list[str]) -> None:
        """``reporter`` now sees ``aor`` (every AOR if None) bound on ``peers``."""
        for key in [aor] if aor is not None else list(self.double_reports):
            reports = self.double_reports.setdefault(key, {})
            if peers:
                reports[reporter] = peers
            else:
                reports.pop(reporter, None)
            if not reports:
                del self.double_reports[key]

    def doubles(self) -> list[dict[str, Any]]:
        """AORs bound on more than one peer at once, as the peers report them."""
        return [
            {"aor": aor, "peers": sorted({p for peers in reports.values() for p in peers})}
            for aor, reports in sorted(self.double_reports.items())
        ]

    def _apply(self, endpoint: EndpointStatus, event: Event) -> None:
        was = endpoint.final
        endpoint.apply(event)
        self._unsettled += was - endpoint.final

    def settled(self) -> bool:
        """Every endpoint has reached a final state, or was stopped (or there are none)."""
        return self._unsettled == 0

    def endpoint_counts(self) -> dict[str, dict[str, int]]:
        """How many endpoints are in each state, and registered with each registrar."""
        by_state = Counter(e.state for e in self.endpoints.values())
        by_registrar = Counter(e.registrar for e in self.endpoints.values() if e.registrar)
        return {"by_state": dict(by_state), "by_registrar": dict(by_registrar)}

    def to_dict(self) -> dict[str, Any]:
        dns = self.dns.to_dict()
        return {
            "lab": self.lab,
            "dns": {**dns, "metrics": self.dns_metrics},
            "peers": [p.to_dict() for p in self.peers.values()],
            "endpoints": [e.to_dict() for e in self.endpoints.values()],
            "endpoint_counts": self.endpoint_counts(),
            "doubles": self.doubles(),
        }
