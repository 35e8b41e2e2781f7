"""Scripted failover experiments: fault a peer N times against a running lab and report.

Each run: wait until every endpoint is Registered; pick the target (given, or the peer holding
most endpoints); write a ``scenario.run`` start marker; apply the fault; wait (at most
``settle_timeout``) until every endpoint that was on the target is Registered on another peer;
write the end marker; restore the peer and wait until it is back and the lab is settled. The
report is then computed from the lab's events (:mod:`emulator.lab.report`), exactly as
``siplab report`` would compute it from ``events.jsonl``.

Every wait is on events (``until``), re-reading the status after each relevant one, and bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from emulator.kinds import Kind
from emulator.lab.model import EndpointSpec, LabConfig
from emulator.lab.report import RESTORE_OF, Report, build_report, registrar_host

OPTIONS = ("srv", "rr", "static", "outbound")
# RoomOS has four proxy settings (Proxy[1..4] Address).
MAX_PROXIES = 4


class ScenarioLab(Protocol):
    """What the runner needs of a running lab (the ``Lab`` API implements it)."""

    async def status(self) -> dict[str, Any]: ...

    async def apply(self, fault: str, target: str, **args: Any) -> dict[str, Any]: ...

    async def restore(self, fault: str, target: str) -> dict[str, Any]: ...

    async def mark(self, **fields: Any) -> None: ...

    async def until(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        timeout: float,
        since: int | None = None,
    ) -> dict[str, Any]: ...

    async def wait_settled(self, timeout: float) -> bool: ...

    async def events(self, since: int = 0) -> list[dict[str, Any]]: ...

    @property
    def next_seq(self) -> int: ...


class ScenarioError(Exception):
    """The lab did not reach the state a run needs; ``str()`` says which run and what."""


async def run_failover(
    lab: ScenarioLab,
    *,
    option: str,
    fault: str,
    runs: int,
    target: str | None = None,
    settle_timeout: float = 60.0,
    fault_args: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Run the failover experiment ``runs`` times and return its report."""
    if option not in OPTIONS:
        raise ValueError(f"unknown option {option!r}; options are: {', '.join(OPTIONS)}")
    if fault not in RESTORE_OF:
        raise ValueError(f"unknown fault {fault!r}; faults are: {', '.join(RESTORE_OF)}")
    if runs < 1:
        raise ValueError("runs must be at least 1")
    scenario = uuid.uuid4().hex[:12]
    for run in range(1, runs + 1):
        status = await _all_registered(lab, settle_timeout, f"before run {run}")
        peer = target or _busiest_peer(status)
        address = _peer_address(status, peer)
        marker = {
            "scenario": scenario,
            "run": run,
            "fault": fault,
            "target": peer,
            "option": option,
        }
        await lab.mark(phase="start", **marker)
        await lab.apply(fault, peer, **(fault_args or {}))
        affected = {e["name"] for e in status["endpoints"] if address in _hosts(e)}
        # On timeout the run simply ends: the report counts who did not move.
        with contextlib.suppress(TimeoutError):
            await _await_status(
                lab,
                functools.partial(_moved, names=affected, address=address),
                timeout=settle_timeout,
                wake=_is_registration,
            )
        await lab.mark(phase="end", **marker)
        await _restore(lab, fault, peer, settle_timeout, run)
        if progress is not None:
            progress(run, runs)
    # From 0, not from this scenario's start: who was registered where before run 1 is needed.
    return build_report(await lab.events(0), scenario=scenario)


async def _restore(lab: ScenarioLab, fault: str, peer: str, timeout: float, run: int) -> None:
    await lab.restore(fault, peer)
    try:
        await _await_status(
            lab,
            lambda s: _peer_state(s, peer) == "active",
            timeout=timeout,
            wake=lambda e: e.get("component") == peer or e.get("target") == peer,
        )
    except TimeoutError:
        raise ScenarioError(
            f"run {run}: {peer} was not back (active) within {timeout:g} s of its restoration"
        ) from None
    if not await lab.wait_settled(timeout):
        raise ScenarioError(f"run {run}: the lab did not settle within {timeout:g} s")


async def _all_registered(lab: ScenarioLab, timeout: float, when: str) -> dict[str, Any]:
    """Wait until every endpoint is Registered (a settled lab may still have Failed ones)."""
    if not await lab.wait_settled(timeout):
        raise ScenarioError(f"{when}: the lab did not settle within {timeout:g} s")
    try:
        return await _await_status(lab, _every_registered, timeout=timeout, wake=_is_registration)
    except TimeoutError:
        status = await lab.status()
        waiting = [e["name"] for e in status["endpoints"] if e.get("state") != "Registered"]
        shown = ", ".join(waiting[:5]) + (
            f" and {len(waiting) - 5} more" if len(waiting) > 5 else ""
        )
        raise ScenarioError(
            f"{when}: {len(waiting)} endpoint(s) not Registered after {timeout:g} s: {shown}"
        ) from None


async def _await_status(
    lab: ScenarioLab,
    ok: Callable[[dict[str, Any]], bool],
    *,
    timeout: float,
    wake: Callable[[dict[str, Any]], bool],
) -> dict[str, Any]:
    """Re-read the status after each event ``wake`` accepts until ``ok``; TimeoutError if not."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        # The sequence number is taken before the status, so no event between them is missed.
        seq = lab.next_seq
        status = await lab.status()
        if ok(status):
            return status
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError
        await lab.until(wake, timeout=remaining, since=seq)


def _is_registration(event: dict[str, Any]) -> bool:
    # With Outbound On a flow can move while the endpoint's overall state stays Registered.
    return event.get("kind") in (Kind.REGISTRATION_STATE, Kind.REGISTRATION_FLOW)


def _hosts(endpoint: dict[str, Any]) -> set[str]:
    """The IPs of the registrars holding a live registration of ``endpoint`` (a status entry;
    with Outbound On one per registered flow)."""
    registrars = endpoint.get("registrars")
    if registrars is None:
        registrars = [endpoint.get("registrar")]
    return {host for r in registrars if (host := registrar_host(r)) is not None}


def _every_registered(status: dict[str, Any]) -> bool:
    """Every endpoint Registered, with each of its Outbound flows (a run that began while a
    flow was still coming back would fault the one peer holding the endpoint)."""
    return all(
        e.get("state") == "Registered"
        and all(f.get("state") == "Registered" for f in e.get("flows") or ())
        for e in status["endpoints"]
    )


def _moved(status: dict[str, Any], names: set[str], address: str) -> bool:
    """Every endpoint in ``names`` is Registered, elsewhere than ``address`` only."""
    for e in status["endpoints"]:
        if e["name"] in names:
            hosts = _hosts(e)
            if e.get("state") != "Registered" or not hosts or address in hosts:
                return False
    return True


def _busiest_peer(status: dict[str, Any]) -> str:
    """The peer most endpoints are registered to (the first listed on a tie)."""
    counts = {p["name"]: 0 for p in status["peers"]}
    by_address = {p["address"]: p["name"] for p in status["peers"]}
    for endpoint in status["endpoints"]:
        name = by_address.get(registrar_host(endpoint.get("registrar")) or "")
        if name is not None:
            counts[name] += 1
    if not counts:
        raise ScenarioError("the lab has no peers")
    return max(counts, key=lambda name: counts[name])


def _peer_address(status: dict[str, Any], peer: str) -> str:
    for p in status["peers"]:
        if p["name"] == peer:
            return str(p["address"])
    names = ", ".join(p["name"] for p in status["peers"])
    raise ScenarioError(f"{peer!r} is not a peer of this lab; peers are: {names}")


def _peer_state(status: dict[str, Any], peer: str) -> str | None:
    return next((p.get("state") for p in status["peers"] if p["name"] == peer), None)


def experiment_lab(base: LabConfig, option: str, endpoints: int | None) -> LabConfig:
    """The lab an experiment runs on: ``base`` with its endpoints pointed the option's way,
    ``endpoints`` of them when given (URIs 1001@domain and up).

    srv: the domain (RFC 3263 SRV); rr: the round-robin cluster name; static: the peers'
    addresses as Proxy[1..4] with Outbound Off (RoomOS then uses Proxy 1 only: the experiment
    shows that it does not fail over); outbound: the same proxies with Outbound On (RFC 5626,
    one flow per proxy, all registered at once)."""
    if option not in OPTIONS:
        raise ValueError(f"unknown option {option!r}; options are: {', '.join(OPTIONS)}")
    template = base.endpoints[0] if base.endpoints else EndpointSpec(uri=f"1001@{base.domain}")
    if option in ("srv", "rr"):
        name = base.domain if option == "srv" else f"{base.dns.cluster_name}.{base.domain}"
        proxies = _proxy_settings([name])
    else:
        proxies = _proxy_settings(_static_proxies(base, template.transport))
    count = endpoints if endpoints is not None else max(1, base.endpoint_count())
    # One endpoint keeps its own process and name; more are one group, URIs 1001@domain up.
    group = template.model_copy(
        update={
            "uri": f"1001@{base.domain}" if count == 1 else f"{{n}}@{base.domain}",
            "count": count,
            "first": 1001,
            "name": None,
            "hosts": None,
            "address": None,
            "outbound": option == "outbound",
            **proxies,
        }
    )
    data = base.model_dump(mode="json")
    data["endpoints"] = [group.model_dump(mode="json", exclude_none=True)]
    return LabConfig.model_validate(data)


def _static_proxies(base: LabConfig, transport: str) -> list[str]:
    """The first four peers by address (and port, where not the transport's default)."""
    if not base.peers:
        raise ValueError("the static and outbound options need at least one peer in the lab")
    addresses = []
    for peer in base.peers[:MAX_PROXIES]:
        port = {"udp": peer.udp_port, "tcp": peer.tcp_port, "tls": peer.tls_port}.get(transport)
        default = 5061 if transport == "tls" else 5060
        host = f"[{peer.address}]" if peer.address.version == 6 else str(peer.address)
        addresses.append(host if port in (None, default) else f"{host}:{port}")
    return addresses


def _proxy_settings(addresses: list[str]) -> dict[str, str | None]:
    """Proxy[1..4] as endpoint settings; those not given are cleared."""
    names = ("proxy", "proxy2", "proxy3", "proxy4")
    return {name: addresses[i] if i < len(addresses) else None for i, name in enumerate(names)}


async def run_experiment(
    lab_config: LabConfig | None,
    *,
    option: str,
    fault: str,
    runs: int,
    out: Path,
    target: str | None = None,
    settle_timeout: float = 60.0,
    fault_args: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    running: str | None = None,
) -> tuple[Report, dict[str, Path]]:
    """Start ``lab_config``, run the experiment, write report.json and timeline.png to ``out``,
    and stop the lab whatever happens — or run it on the lab named ``running`` (one in
    containers, say), which is left running."""
    from emulator.lab.api import Lab
    from emulator.lab.report import load_events, write_outputs

    args = dict(fault_args or {})
    if fault == "maintenance":
        args.setdefault("on", True)
    experiment = functools.partial(
        run_failover,
        option=option,
        fault=fault,
        runs=runs,
        target=target,
        settle_timeout=settle_timeout,
        fault_args=args,
        progress=progress,
    )
    if running is not None:
        async with Lab.attach(running) as lab:
            report = await experiment(lab)
            recorded = await lab.events()
        events = [{k: v for k, v in event.items() if k != "seq"} for event in recorded]
        return report, write_outputs(report, events, out)
    assert lab_config is not None
    async with await Lab.up(lab_config, timeout=settle_timeout) as lab:
        report = await experiment(lab)
        events_path = lab.run_dir / "events.jsonl"
    events = load_events(events_path)  # the whole record, flushed now that the lab stopped
    return report, write_outputs(report, events, out)
