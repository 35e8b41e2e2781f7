"""Events as the short human lines that ``siplab up`` and ``siplab events`` print."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from endpoint import roomos

# Per-query and per-connection events are the bulk of a lab's stream; shown with --verbose.
CHATTY = frozenset({"dns.query", "transport.closed", "registration.refreshed", "component.output"})


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def _describe(event: Mapping[str, Any]) -> str | None:
    kind = event.get("kind")
    get = event.get
    match kind:
        case "ready" if get("zones") is not None:
            return f"DNS ready on {get('address')}:{get('port')} for {', '.join(get('zones'))}"
        case "ready" if get("listeners") is not None:
            mode = " (maintenance)" if get("maintenance") else ""
            return f"registrar ready on {get('address')} {' '.join(get('listeners'))}{mode}"
        case "ready" if (get("endpoints") or 1) > 1:
            return (
                f"endpoint host up: {get('endpoints')} endpoints from {get('uri')} on "
                f"{get('address')}, proxy {get('proxy')}"
            )
        case "ready":
            return f"endpoint {get('uri')} up on {get('address')}, proxy {get('proxy')}"
        case "register.answered":
            return f"REGISTER {get('aor')} from {get('source')} -> {get('code')} {get('reason')}"
        case "maintenance":
            return f"maintenance {'on' if get('on') else 'off'}"
        case "binding.expired":
            return f"binding expired: {get('aor')} {get('contact')}"
        case "process.started":
            return f"process {get('pid')} started (python -m {get('module')})"
        case "process.exited":
            how = f"signal {get('signal')}" if get("signal") else f"status {get('returncode')}"
            return f"process {get('pid')} exited ({how})"
        case "component.failed":
            return f"FAILED: {get('error')}"
        case "component.stderr":
            return f"stderr: {get('line')}"
        case "fault.applied":
            return "fault: " + _fault(event)
        case "registration.backoff":
            return f"every target failed; retrying in {get('wait')} s"
        case "dns.query":
            return f"{get('qtype')} {get('name')} -> {get('rcode')} {get('answers')}"
        case "lab.started" | "lab.stopping" | "lab.stopped":
            return f"lab {get('lab')} {kind.split('.')[1]}"
        case "transport.closed":
            return f"connection {get('flow')} closed: {get('reason')}"
        case "registration.refreshed":
            return f"registration refreshed ({get('expires')} s)"
        case "process.paused" | "process.resumed":
            who = " (not by the lab)" if get("by") == "outside" else ""
            return f"process {get('pid')} {kind.split('.')[1]}{who}"
        case "component.unresponsive":
            return "not answering the lab" if get("on") else "answering the lab again"
        case "component.joined":
            return f"attached at {get('peer')}"
        case "component.left":
            return f"detached: {get('reason')}"
        case "link.changed":
            partition = "partitioned" if get("partition") else "not partitioned"
            impair = {k: v for k, v in (get("impair") or {}).items() if v}
            return f"link: {partition}" + (f", impaired {impair}" if impair else "")
        case "scenario.run":
            return f"scenario run {get('run')} {get('phase')}: {get('fault')} {get('target')}"
    return None


def _fault(event: Mapping[str, Any]) -> str:
    """``kill exp1 (pid 4242)``, ``maintenance on exp1``, ``dns.servfail for exp1.uctest.local.``"""
    fault, target = event.get("fault"), event.get("target")
    if fault == "maintenance":
        fault = f"maintenance {'on' if event.get('on') else 'off'}"
    words = [str(fault)] + ([str(target)] if target else [])
    details = []
    if event.get("pid"):
        details.append(f"pid {event['pid']}")
    args = event.get("args") or {}
    details += [f"{k} {v}" for k, v in args.items() if v not in (None, [], 0, 0.0)]
    if event.get("name"):  # a DNS fault's scope
        details.append(f"for {event['name']}")
    if event.get("delay"):
        details.append(f"delay {event['delay']} s")
    return " ".join(words) + (f" ({', '.join(details)})" if details else "")


class Renderer:
    """Events as lines in one of ``siplab events``' formats; remembers each component's pid,
    which RoomOS lines print as ``main[pid]`` (an endpoint host's, for all its endpoints).
    With ``aor``, only that endpoint's events: one endpoint's log out of a host of thousands."""

    def __init__(self, fmt: str, *, verbose: bool = False, aor: str | None = None) -> None:
        self.fmt = fmt
        self.verbose = verbose
        self.aor = aor.removeprefix("sip:").lower() if aor else None
        self._pids: dict[str, int] = {}

    def learn_pids(self, status: Mapping[str, Any]) -> None:
        """Pids from a lab status, for a window of events that starts after they were told."""
        for item in [
            status.get("dns") or {},
            *status.get("peers", []),
            *status.get("endpoints", []),
        ]:
            if item.get("pid"):
                self._pids[str(item.get("host") or item.get("name", "dns"))] = int(item["pid"])

    def remember(self, event: Mapping[str, Any]) -> None:
        if event.get("kind") == "process.started":
            self._pids[str(event.get("component"))] = int(event.get("pid") or 0)

    def lines(self, event: Mapping[str, Any]) -> list[str]:
        self.remember(event)
        if self.aor is not None and str(event.get("aor", "")).lower() != self.aor:
            return []
        if self.fmt == "json":
            return [json.dumps(event)]
        if self.fmt == "roomos":
            return roomos.render(event, pid=self._pids.get(str(event.get("component")), 0))
        return human_lines(event, verbose=self.verbose)


def human_lines(event: Mapping[str, Any], *, verbose: bool = False) -> list[str]:
    if event.get("kind") in CHATTY and not verbose:
        return []
    component = str(event.get("component", "?"))
    stamp = _clock(float(event.get("t", 0.0)))
    rendered = roomos.render(event, pid=0)
    if rendered:
        # RoomOS lines carry their own timestamp and "main[pid]:" prefix; keep only the text.
        return [f"{stamp} {component:<18} {line.split(': ', 1)[1]}" for line in rendered]
    text = _describe(event)
    return [f"{stamp} {component:<18} {text}"] if text else []
