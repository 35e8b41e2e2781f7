"""The seed's two failover options, end to end: real processes on real loopback sockets.

Timing bounds come from the protocol, not from the machine: a failover must finish well
inside one registration interval (the registrar grants 4 s here), which is what makes the
endpoint's reaction "at once" rather than "at the next refresh" or "at expiry".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from emulator.lab.testing import TestLab
from endpoint import roomos

pytestmark = pytest.mark.integration

MAINTENANCE_REASON = "503 Service Unavailable / System in Maintenance Mode"


def state_event(state: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    def match(event: dict[str, Any]) -> bool:
        return (
            event["kind"] == "registration.state"
            and event["state"] == state
            and all(event.get(k) == v for k, v in fields.items())
        )

    return match


def other_peer(lab: TestLab, name: str) -> dict[str, Any]:
    return next(p for p in lab.status()["peers"] if p["name"] != name)


def test_option1_srv_maintenance_fails_over_at_next_refresh(
    make_lab: Callable[..., TestLab],
) -> None:
    lab = make_lab()
    endpoint = lab.endpoint()
    assert endpoint["state"] == "Registered"
    assert endpoint["transport"] == "TCP"
    first = lab.peer_at(lab.status(), endpoint["registrar"])
    second = other_peer(lab, first)
    first_address = endpoint["registrar"].rsplit(":", 1)[0]
    granted = 4  # registrar.max_expires in the test lab

    seq = lab.seq()
    assert lab.siplab("maintenance", first, "on", "--lab", lab.name).returncode == 0

    warning = lab.until(
        lambda e: e["kind"] == "sip.warning", since=seq, timeout=granted * 3, what="Warning line"
    )
    assert warning["header"] == f'Warning: 382 {first_address} "System in Maintenance Mode"'
    failed = lab.until(
        state_event("Failed", reason=MAINTENANCE_REASON), since=seq, timeout=5, what="Failed"
    )
    registered = lab.until(
        state_event("Registered", registrar=f"{second['address']}:5060"),
        since=failed["seq"],
        timeout=granted,
        what="registration on the other peer",
    )
    # Well before one registration interval after the 503 (the seed took 0.34 s).
    assert registered["t"] - failed["t"] < granted / 2

    # The endpoint tells the story in the seed's words.
    lines = [
        line.split(": ", 1)[1]
        for event in lab.events(since=seq)
        if event["component"] == "1001@uctest.local"
        for line in roomos.render(event, pid=1)
    ]
    assert f'SipPacket W: SIP Msg: Warning: 382 {first_address} "System in Maintenance Mode"' in (
        lines
    )
    assert (
        "SipSubscriber I: [p=0] Registration Status: 'Failed', URI: '1001@uctest.local', "
        f"Reason: '{MAINTENANCE_REASON}'"
    ) in lines
    assert (
        "DnsLocator I: locatedAt() Uri 'uctest.local', profile 0, strategy 2: "
        f"tcp '{second['address']}:5060' (internal)"
    ) in lines

    status = lab.status()
    peers = {p["name"]: p for p in status["peers"]}
    assert peers[first]["state"] == "maintenance"
    assert status["endpoints"][0]["registrar"] == f"{second['address']}:5060"


def test_option2_round_robin_kill_fails_over_at_once(make_lab: Callable[..., TestLab]) -> None:
    # Long registrations: the failover must not wait for the refresh (54 s) or expiry (60 s).
    lab = make_lab(
        registrar={"min_expires": 1, "max_expires": 60, "default_expires": 60},
        endpoints=lambda prefix: [
            {
                "uri": "1001@uctest.local",
                "proxy": "habibexpc-cluster.uctest.local",
                "transport": "tcp",
                "address": f"{prefix}.101",
            }
        ],
    )
    endpoint = lab.endpoint()
    assert endpoint["state"] == "Registered"
    first = lab.peer_at(lab.status(), endpoint["registrar"])
    second = other_peer(lab, first)

    seq = lab.seq()
    result = lab.siplab("kill", first, "--lab", lab.name)
    assert result.returncode == 0, result.stderr

    failed = lab.until(
        state_event("Failed", reason="Connection lost"), since=seq, timeout=10, what="Failed"
    )
    restart = lab.until(
        lambda e: e["kind"] == "locator.restart", since=failed["seq"], timeout=5, what="re-resolve"
    )
    assert restart["uri"] == "habibexpc-cluster.uctest.local"
    located = lab.until(
        lambda e: e["kind"] == "dns.located", since=restart["seq"], timeout=5, what="locatedAt"
    )
    # The DNS server rotated the round-robin name: the other peer now comes first.
    assert (located["strategy"], located["label"], located["target"]) == (
        4,
        "unspec",
        second["address"],
    )
    registered = lab.until(
        state_event("Registered", registrar=f"{second['address']}:5060"),
        since=failed["seq"],
        timeout=10,
        what="registration on the other peer",
    )
    assert registered["t"] - failed["t"] < 5  # not the 54 s refresh, not the 60 s expiry

    # The peer's own event of that binding comes over its own channel, so it can reach the lab
    # just after the endpoint's: wait for it, then read the status.
    lab.until(
        lambda e: e["component"] == second["name"] and e.get("registrations") == 1,
        since=failed["seq"],
        timeout=5,
        what=f"{second['name']}'s binding",
    )
    peers = {p["name"]: p for p in lab.status()["peers"]}
    assert peers[first]["state"] == "stopped"
    assert peers[second["name"]]["registrations"] == 1
