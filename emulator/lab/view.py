"""The lab's status, folded from its events: what ``siplab status`` shows.

Nothing here asks a component anything; the view is a pure function of the event stream, so
the status a user sees and the timings a test asserts come from the same source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from emulator.events import Event
from emulator.lab.model import LabConfig

FINAL_STATES = frozenset({"Registered", "Failed"})


@dataclass(slots=True)
class PeerStatus:
    name: str
    address: str
    state: str = "starting"
    registrations: int = 0
    pid: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "state": self.state,
            "registrations": self.registrations,
            "pid": self.pid,
        }


@dataclass(slots=True)
class EndpointStatus:
    name: str
    uri: str
    address: str
    state: str = "Inactive"
    reason: str = ""
    registrar: str | None = None
    transport: str | None = None
    pid: int | None = None
    since: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uri": self.uri,
            "address": self.address,
            "state": self.state,
            "reason": self.reason,
            "registrar": self.registrar,
            "transport": self.transport,
            "pid": self.pid,
            "since": self.since,
        }


@dataclass(slots=True)
class LabView:
    lab: str
    dns_address: str
    dns_metrics: str | None = None
    dns_state: str = "starting"
    dns_pid: int | None = None
    peers: dict[str, PeerStatus] = field(default_factory=dict)
    endpoints: dict[str, EndpointStatus] = field(default_factory=dict)

    @classmethod
    def of(cls, lab: LabConfig) -> LabView:
        metrics = lab.dns.metrics_address()
        view = cls(
            lab=lab.name,
            dns_address=lab.dns_address(),
            dns_metrics=f"http://{metrics}/metrics" if metrics else None,
        )
        for peer in lab.peers:
            view.peers[peer.name] = PeerStatus(peer.name, str(peer.address))
        for spec in lab.endpoints:
            assert spec.name is not None
            view.endpoints[spec.name] = EndpointStatus(spec.name, spec.uri, str(spec.address))
        return view

    def apply(self, event: Event) -> None:
        name = event.component
        if name == "dns":
            self._apply_dns(event)
        elif name in self.peers:
            self._apply_peer(self.peers[name], event)
        elif name in self.endpoints:
            self._apply_endpoint(self.endpoints[name], event)

    def _apply_dns(self, event: Event) -> None:
        if event.kind == "process.started":
            self.dns_state, self.dns_pid = "starting", event.get("pid")
        elif event.kind == "ready":
            self.dns_state = "running"
        elif event.kind == "process.exited":
            self.dns_state, self.dns_pid = "stopped", None

    @staticmethod
    def _apply_peer(peer: PeerStatus, event: Event) -> None:
        kind = event.kind
        if kind == "process.started":
            peer.state, peer.pid, peer.registrations = "starting", event.get("pid"), 0
        elif kind == "ready":
            peer.state = "maintenance" if event.get("maintenance") else "active"
        elif kind == "maintenance":
            peer.state = "maintenance" if event.get("on") else "active"
        elif kind == "process.exited":
            peer.state, peer.pid, peer.registrations = "stopped", None, 0
        if kind != "process.exited" and isinstance(event.get("registrations"), int):
            peer.registrations = event.get("registrations")

    @staticmethod
    def _apply_endpoint(endpoint: EndpointStatus, event: Event) -> None:
        kind = event.kind
        if kind == "process.started":
            endpoint.pid = event.get("pid")
        elif kind == "registration.state":
            endpoint.state = event.get("state", endpoint.state)
            endpoint.reason = event.get("reason", "")
            endpoint.since = event.t
            registered = endpoint.state == "Registered"
            endpoint.registrar = event.get("registrar") if registered else None
            endpoint.transport = event.get("transport") if registered else None
        elif kind == "process.exited":
            endpoint.state, endpoint.reason, endpoint.pid = "Inactive", "process exited", None
            endpoint.registrar = endpoint.transport = None
            endpoint.since = event.t

    def settled(self) -> bool:
        """Every endpoint has reached a final state (or there are none)."""
        return all(e.state in FINAL_STATES for e in self.endpoints.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "lab": self.lab,
            "dns": {
                "address": self.dns_address,
                "state": self.dns_state,
                "pid": self.dns_pid,
                "metrics": self.dns_metrics,
            },
            "peers": [p.to_dict() for p in self.peers.values()],
            "endpoints": [e.to_dict() for e in self.endpoints.values()],
        }
