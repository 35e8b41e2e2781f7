"""Every fault class, through the CLI and through the Python API, with the lab's reaction.

Bounds come from the protocol or from the configured fault (an impairment's delay), never
from how fast this machine happens to be.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from emulator.lab.testing import TestLab, leftovers
from tests.labs import Match, fresh_lab_dict, kind, lab_dict

pytestmark = pytest.mark.integration


def peer(lab: TestLab, name: str) -> dict[str, Any]:
    return next(p for p in lab.status()["peers"] if p["name"] == name)


def registered_on_other(lab: TestLab, name: str) -> Match:
    address = peer(lab, name)["address"]

    def match(event: dict[str, Any]) -> bool:
        return (
            event["kind"] == "registration.state"
            and event["state"] == "Registered"
            and not str(event.get("registrar", "")).startswith(address + ":")
        )

    return match


def test_pause_and_resume_through_the_cli(make_lab: Callable[..., TestLab]) -> None:
    lab = make_lab()
    paused = lab.siplab("pause", "exp2")
    assert paused.returncode == 0, paused.stderr
    assert peer(lab, "exp2")["state"] == "paused"
    # A frozen peer answers nothing; the lab says so at once instead of timing out.
    bindings = lab.siplab("bindings", "exp2")
    assert bindings.returncode != 0
    assert "exp2 is paused" in bindings.stderr
    assert "Traceback" not in bindings.stderr
    resumed = lab.siplab("resume", "exp2")
    assert resumed.returncode == 0, resumed.stderr
    assert peer(lab, "exp2")["state"] == "active"
    assert lab.siplab("bindings", "exp2").returncode == 0


def test_a_peer_frozen_by_hand_shows_as_paused(make_lab: Callable[..., TestLab]) -> None:
    lab = make_lab()
    pid = peer(lab, "exp1")["pid"]
    since = lab.seq()
    os.kill(pid, signal.SIGSTOP)  # a user's own kill -STOP, not the lab's
    try:
        lab.until(kind("process.paused", "exp1", by="outside"), since=since, timeout=5)
        assert peer(lab, "exp1")["state"] == "paused"
    finally:
        os.kill(pid, signal.SIGCONT)
    lab.until(kind("process.resumed", "exp1"), since=since, timeout=5)
    assert peer(lab, "exp1")["state"] == "active"


def test_kill_stop_start_restart_through_the_api(make_lab: Callable[..., TestLab]) -> None:
    lab = make_lab()
    first = lab.peer_of()
    since = lab.seq()
    killed = lab.kill(first)
    assert killed["fault"] == "kill"
    exited = lab.until(kind("process.exited", first), since=since, timeout=10)
    assert exited["signal"] == "SIGKILL"
    lab.until(registered_on_other(lab, first), since=since, timeout=10)

    started = lab.start(first)
    assert started["pid"] != killed["pid"]
    assert peer(lab, first)["state"] == "active"

    stopped = lab.stop(first)
    assert stopped["fault"] == "stop"
    assert peer(lab, first)["state"] == "stopped"
    lab.start(first)
    old_pid = peer(lab, first)["pid"]
    restarted = lab.restart(first)
    assert restarted["pid"] != old_pid
    assert peer(lab, first)["state"] == "active"
    applied = [e for e in lab.events(since) if e["kind"] == "fault.applied"]
    assert [e["fault"] for e in applied] == ["kill", "start", "stop", "start", "restart"]
    assert all(e["target"] == first for e in applied)


def test_maintenance_through_the_api_is_seen_at_the_next_refresh(
    make_lab: Callable[..., TestLab],
) -> None:
    lab = make_lab()
    first = lab.peer_of()
    since = lab.seq()
    lab.maintenance(first, True)
    assert peer(lab, first)["state"] == "maintenance"
    failed = lab.until(kind("registration.state", state="Failed"), since=since, timeout=10)
    assert failed["reason"].startswith("503 Service Unavailable")
    lab.until(registered_on_other(lab, first), since=since, timeout=10)
    lab.maintenance(first, False)
    assert peer(lab, first)["state"] == "active"


def test_partition_is_noticed_by_the_transaction_timer_and_healed(
    make_lab: Callable[..., TestLab],
) -> None:
    # t1 0.05 s: Timer F = 64 * T1 = 3.2 s, within the 4 s registrations of test labs.
    lab = make_lab(
        endpoints=lambda prefix: [{**lab_dict(prefix, "unused")["endpoints"][0], "t1": 0.05}]
    )
    first = lab.peer_of()
    since = lab.seq()
    result = lab.siplab("partition", first)
    assert result.returncode == 0, result.stderr
    assert peer(lab, first)["state"] == "partitioned"
    assert "partition" in lab.siplab("events", "--since", str(since)).stdout
    failed = lab.until(kind("registration.state", state="Failed"), since=since, timeout=15)
    assert "408" in failed["reason"] or "Timeout" in failed["reason"]
    lab.until(registered_on_other(lab, first), since=since, timeout=15)
    assert lab.siplab("heal", first).returncode == 0
    assert peer(lab, first)["state"] == "active"


def test_impairment_delays_the_answer_by_at_least_the_delay(
    make_lab: Callable[..., TestLab],
) -> None:
    lab = make_lab()
    first = lab.peer_of()
    lab.impair(first, delay=0.4, direction="out")
    assert "impaired" in peer(lab, first)["conditions"]
    since = lab.seq()
    answered = lab.until(kind("register.answered", first, code=200), since=since, timeout=10)
    refreshed = lab.until(kind("registration.refreshed"), since=answered["seq"], timeout=10)
    assert refreshed["t"] - answered["t"] >= 0.4 - 0.01
    lab.heal(first)
    assert peer(lab, first)["conditions"] == []


def test_faults_on_external_or_unknown_components_are_refused_in_one_line(
    siplab_lab: Any, tmp_path: Any
) -> None:
    lab = siplab_lab(
        fresh_lab_dict(
            peers=lambda prefix: [
                {"name": "exp1", "address": f"{prefix}.11"},
                {"name": "kam1", "address": f"{prefix}.21", "external": True},
            ],
            endpoints=[],
        )
    )
    assert peer(lab, "kam1")["state"] == "external"
    for args, expected in [
        (("kill", "kam1"), "kam1 is an external peer"),
        (("pause", "kam1"), "kam1 is an external peer"),
        (("maintenance", "kam1", "on"), "kam1 is an external peer"),
        (("bindings", "1001@uctest.local"), "'1001@uctest.local' is not a registrar peer"),
        (("resume", "exp1"), "exp1 is not paused"),
        (("partition", "nosuch"), "no component named 'nosuch'"),
    ]:
        result = lab.siplab(*args)
        assert result.returncode != 0, args
        assert expected in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_status_json_names_state_and_conditions(make_lab: Callable[..., TestLab]) -> None:
    lab = make_lab()
    status = json.loads(lab.siplab("status", "--json").stdout)
    for item in [status["dns"], *status["peers"]]:
        assert {"state", "conditions", "pid", "partition", "impair"} <= item.keys()
    assert status["dns"]["state"] == "running"


async def test_the_async_lab_api_applies_faults_and_awaits_events(tmp_path: Any) -> None:
    from emulator import Lab

    config = fresh_lab_dict()
    async with await Lab.up(config, root=tmp_path) as lab:
        status = await lab.status()
        first = lab.peer_at(status, status["endpoints"][0]["registrar"])
        assert first is not None
        await lab.pause(first)
        assert {p["name"]: p["state"] for p in (await lab.status())["peers"]}[first] == "paused"
        await lab.resume(first)
        await lab.kill(first)  # what until() reads next starts at this fault
        registered = await lab.until(
            lambda e: e["kind"] == "registration.state" and e["state"] == "Registered",
            timeout=10,
        )
        assert lab.peer_at(await lab.status(), registered["registrar"]) != first
        await lab.start(first)
        faults = [e["fault"] for e in await lab.events(0) if e["kind"] == "fault.applied"]
        assert faults == ["pause", "resume", "kill", "start"]
        pids = {e["pid"] for e in await lab.events(0) if e["kind"] == "process.started"}
        supervisor = lab.handle.pid
    addresses = {config["dns"]["address"], *(p["address"] for p in config["peers"])}
    assert leftovers(pids | {supervisor}, addresses) == []
