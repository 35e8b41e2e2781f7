"""The scenario runner against an in-memory lab that emits plausible events on a fake clock.

The fake is a test double of the lab (the runner's dependency), not of the runner: it answers
``status`` from the registrations it simulates and emits the events a real lab would, each a
quarter second after the previous one, so the report's numbers are exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from emulator.kinds import Kind
from emulator.lab.model import LabConfig, default_lab
from emulator.lab.report import RESTORE_OF
from emulator.lab.scenario import ScenarioError, ScenarioLab, experiment_lab, run_failover

ADDRESSES = {"exp1": "127.63.9.11", "exp2": "127.63.9.12"}
STEP = 0.25


class FakeLab:
    def __init__(self, placement: dict[str, str], *, stuck: frozenset[str] = frozenset()) -> None:
        self.clock = 1000.0
        self.log: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self.peer_state = dict.fromkeys(ADDRESSES, "active")
        self.where: dict[str, str | None] = dict(placement)
        self.stuck = stuck  # endpoints that never find another peer
        for name, address in ADDRESSES.items():
            self.emit(name, Kind.PROCESS_STARTED, module="registrar")
            self.emit(name, Kind.READY, address=address, listeners=["tcp:5060"])
        for endpoint, peer in placement.items():
            self._register(endpoint, peer)

    def emit(self, component: str, kind: str, **fields: Any) -> None:
        self.clock += STEP
        event = {"t": self.clock, "component": component, "kind": kind, **fields}
        self.log.append(event | {"seq": len(self.log)})
        self._changed.set()
        self._changed = asyncio.Event()

    def _register(self, endpoint: str, peer: str) -> None:
        self.where[endpoint] = peer
        self.emit(
            endpoint,
            Kind.REGISTRATION_STATE,
            aor=endpoint,
            state="Registered",
            registrar=f"{ADDRESSES[peer]}:5060",
            expires=60,
        )

    def _fail(self, endpoint: str) -> None:
        self.where[endpoint] = None
        self.emit(endpoint, Kind.REGISTRATION_STATE, aor=endpoint, state="Failed", registrar=None)

    @property
    def next_seq(self) -> int:
        return len(self.log)

    async def status(self) -> dict[str, Any]:
        return {
            "peers": [
                {"name": n, "address": a, "state": self.peer_state[n]} for n, a in ADDRESSES.items()
            ],
            "endpoints": [
                {
                    "name": e,
                    "uri": e,
                    "state": "Registered" if peer else "Failed",
                    "registrar": f"{ADDRESSES[peer]}:5060" if peer else None,
                }
                for e, peer in self.where.items()
            ],
        }

    async def apply(self, fault: str, target: str, **args: Any) -> dict[str, Any]:
        on = {"on": True} if fault == "maintenance" else {}
        self.emit("supervisor", Kind.FAULT_APPLIED, fault=fault, target=target, **args, **on)
        self.peer_state[target] = "maintenance" if fault == "maintenance" else "stopped"
        asyncio.get_running_loop().call_soon(self._fail_over, target)
        return {"component": target}

    def _fail_over(self, target: str) -> None:
        other = next(p for p in ADDRESSES if p != target)
        for endpoint, peer in list(self.where.items()):
            if peer == target:
                self._fail(endpoint)
                if endpoint not in self.stuck:
                    self._register(endpoint, other)

    async def restore(self, fault: str, target: str) -> dict[str, Any]:
        restoration = RESTORE_OF[fault]
        on = {"on": False} if fault == "maintenance" else {}
        self.emit("supervisor", Kind.FAULT_APPLIED, fault=restoration, target=target, **on)
        asyncio.get_running_loop().call_soon(self._come_back, target)
        return {"component": target}

    def _come_back(self, target: str) -> None:
        self.emit(target, Kind.READY, address=ADDRESSES[target], listeners=["tcp:5060"])
        self.peer_state[target] = "active"
        for endpoint, peer in list(self.where.items()):
            if peer is None:
                self._register(endpoint, target)

    async def mark(self, **fields: Any) -> None:
        self.emit("supervisor", Kind.SCENARIO_RUN, **fields)

    async def until(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        timeout: float,
        since: int | None = None,
    ) -> dict[str, Any]:
        seq = self.next_seq if since is None else since
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                for event in self.log[seq:]:
                    if predicate(event):
                        return event
                seq = self.next_seq
                await changed.wait()

    async def wait_settled(self, timeout: float) -> bool:
        return True  # every fake endpoint is always Registered or Failed

    async def events(self, since: int = 0) -> list[dict[str, Any]]:
        return self.log[since:]


def _as_protocol(lab: FakeLab) -> ScenarioLab:
    return lab  # type-checks that the fake has the Protocol's shape


async def test_two_kill_runs_pick_the_busiest_peer_and_report_exact_times() -> None:
    lab = FakeLab({"e1": "exp1", "e2": "exp1", "e3": "exp2"})
    calls: list[tuple[int, int]] = []
    report = await run_failover(
        _as_protocol(lab),
        option="srv",
        fault="kill",
        runs=2,
        settle_timeout=5.0,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(1, 2), (2, 2)]
    assert [(r.index, r.fault, r.target, r.option) for r in report.runs] == [
        (1, "kill", "exp1", "srv"),
        (2, "kill", "exp2", "srv"),
    ]
    first, second = report.runs
    # Each endpoint: Failed one step after the previous event, Registered on the other the next.
    assert [(r.aor, r.detection, r.recovery, r.gap) for r in first.affected] == [
        ("e1", 0.25, 0.5, 0.5),
        ("e2", 0.75, 1.0, 1.0),
    ]
    assert [r.aor for r in second.affected] == ["e1", "e2", "e3"]
    assert [r.recovery for r in second.affected] == [0.5, 1.0, 1.5]
    assert report.not_recovered == []
    markers = [e for e in lab.log if e["kind"] == Kind.SCENARIO_RUN]
    assert [(m["run"], m["phase"]) for m in markers] == [
        (1, "start"),
        (1, "end"),
        (2, "start"),
        (2, "end"),
    ]
    assert lab.peer_state == {"exp1": "active", "exp2": "active"}  # restored after each run


async def test_an_endpoint_that_never_moves_ends_the_run_at_the_timeout_and_is_reported() -> None:
    lab = FakeLab({"e1": "exp1", "e2": "exp1"}, stuck=frozenset({"e2"}))
    report = await run_failover(
        lab, option="rr", fault="maintenance", runs=1, target="exp1", settle_timeout=0.2
    )
    (run,) = report.runs
    assert run.gap_rule == "binding lives until expiry"
    e1, e2 = run.records
    assert (e1.recovered_to, e1.gap) == ("exp2", 0.0)  # its binding on exp1 had 60 s left
    assert (e2.detection, e2.recovery) == (0.75, None)
    assert [r.aor for r in report.not_recovered] == ["e2"]
    assert lab.where == {"e1": "exp2", "e2": "exp1"}  # the stuck one came back with exp1


async def test_earlier_faults_in_the_log_are_not_runs_of_this_scenario() -> None:
    lab = FakeLab({"e1": "exp1"})
    await lab.apply("stop", "exp1")
    await lab.restore("stop", "exp1")
    await lab.until(lambda e: e["kind"] == Kind.READY, timeout=5.0, since=lab.next_seq - 1)
    report = await run_failover(lab, option="srv", fault="pause", runs=1, settle_timeout=5.0)
    assert [(r.fault, r.target) for r in report.runs] == [("pause", "exp2")]


@pytest.mark.parametrize(
    ("option", "proxies", "outbound"),
    [
        ("srv", ["uctest.local"], False),
        ("rr", ["habibexpc-cluster.uctest.local"], False),
        ("static", ["127.0.0.11", "127.0.0.12"], False),
        ("outbound", ["127.0.0.11", "127.0.0.12"], True),
    ],
)
def test_each_option_points_the_endpoints_its_way(
    option: str, proxies: list[str], outbound: bool
) -> None:
    base = default_lab()
    (group,) = experiment_lab(base, option, 3).endpoints
    assert [p for p in (group.proxy, group.proxy2, group.proxy3, group.proxy4) if p] == proxies
    assert (group.outbound, group.count, group.uri) == (outbound, 3, "{n}@uctest.local")


def test_static_proxies_carry_a_peer_port_that_is_not_the_default() -> None:
    data = default_lab().model_dump(mode="json")
    data["peers"][1]["tcp_port"] = 5070
    (group,) = experiment_lab(LabConfig.model_validate(data), "static", None).endpoints
    assert (group.proxy, group.proxy2) == ("127.0.0.11", "127.0.0.12:5070")


async def test_bad_arguments_are_refused() -> None:
    lab = FakeLab({"e1": "exp1"})
    with pytest.raises(ValueError, match="unknown fault 'explode'"):
        await run_failover(lab, option="srv", fault="explode", runs=1, settle_timeout=1.0)
    with pytest.raises(ValueError, match="unknown option"):
        await run_failover(lab, option="carrier-pigeon", fault="kill", runs=1, settle_timeout=1.0)
    with pytest.raises(ScenarioError, match="'exp9' is not a peer"):
        await run_failover(
            lab, option="srv", fault="kill", runs=1, target="exp9", settle_timeout=1.0
        )
