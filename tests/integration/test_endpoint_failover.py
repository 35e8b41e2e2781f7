"""Silent failures, UDP errors and the RoomOS settings that decide failover, end to end.

Real registrar processes on real loopback sockets; faults from the ``Lab`` API. Every time
bound here comes from a configured protocol timer (keep-alive interval, pong timeout, Timer F,
registration interval), with a generous margin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from emulator.lab.testing import TestLab
from tests.labs import Match, kind

pytestmark = pytest.mark.integration

AOR = "1001@uctest.local"
CLUSTER = "habibexpc-cluster.uctest.local"
# Long registrations: only the mechanism under test can move the endpoint within a test.
LONG = {"min_expires": 1, "max_expires": 60, "default_expires": 60}


def endpoint(prefix: str, **settings: Any) -> list[dict[str, Any]]:
    return [
        {
            "uri": AOR,
            "proxy": "uctest.local",
            "transport": "tcp",
            "address": f"{prefix}.101",
            "retry_base": 1,
            "retry_max": 4,
            **settings,
        }
    ]


def other_peer(lab: TestLab, name: str) -> dict[str, Any]:
    return next(p for p in lab.status()["peers"] if p["name"] != name)


def test_keepalive_detects_a_paused_peer_within_interval_plus_pong_timeout(
    make_lab: Callable[..., TestLab],
) -> None:
    interval, pong_timeout = 1.0, 1.0
    lab = make_lab(
        registrar=LONG,
        endpoints=lambda p: endpoint(
            p, keepalive_interval=interval, pong_timeout=pong_timeout, expires=60
        ),
    )
    first = lab.peer_of()
    second = other_peer(lab, first)
    seq = lab.seq()
    paused = lab.pause(first)
    assert paused is not None
    pause_event = lab.until(kind("process.paused"), since=seq, timeout=10, what="pause")
    bound = interval + pong_timeout
    failed = lab.until(
        kind("registration.state", state="Failed"),
        since=seq,
        timeout=bound + 10,
        what="Failed after the pong timeout",
    )
    assert failed["reason"].startswith("Keep-alive timed out: no pong from")
    # One interval (pings come at 80-100 % of it) plus the pong timeout, plus a generous
    # margin for a loaded machine; the refresh (54 s) and Timer F (32 s) are far beyond.
    assert failed["t"] - pause_event["t"] < bound + 2.0
    registered = lab.until(
        kind("registration.state", state="Registered", registrar=f"{second['address']}:5060"),
        since=failed["seq"],
        timeout=10,
        what="registration on the other peer",
    )
    assert registered["t"] >= failed["t"]
    lab.resume(first)


def test_udp_endpoint_moves_at_once_on_icmp_after_a_kill(make_lab: Callable[..., TestLab]) -> None:
    lab = make_lab(
        registrar=LONG,
        endpoints=lambda p: endpoint(
            p, proxy=CLUSTER, transport="udp", keepalive_interval=1.0, expires=60
        ),
    )
    status = lab.endpoint()
    assert status["transport"] == "UDP"
    first = lab.peer_of()
    second = other_peer(lab, first)
    seq = lab.seq()
    lab.kill(first)
    failed = lab.until(
        kind("registration.state", state="Failed"), since=seq, timeout=15, what="Failed"
    )
    # The kernel's ICMP port unreachable, not Timer F's 408 (64 * T1 = 32 s).
    assert failed["reason"] == "ICMP port unreachable"
    lost = lab.until(kind("transport.lost", aor=AOR), since=seq, timeout=5, what="lost")
    assert lost["host"] == next(p["address"] for p in lab.status()["peers"] if p["name"] == first)
    registered = lab.until(
        kind("registration.state", state="Registered", registrar=f"{second['address']}:5060"),
        since=failed["seq"],
        timeout=10,
        what="registration on the other peer",
    )
    assert registered["t"] - failed["t"] < 64 * 0.5  # well inside one Timer F


def test_static_proxies_with_outbound_off_do_not_fail_over(
    make_lab: Callable[..., TestLab],
) -> None:
    lab = make_lab(
        registrar=LONG,
        endpoints=lambda p: endpoint(
            p, proxy=f"{p}.11", proxy2=f"{p}.12", outbound=False, keepalive_interval=1.0
        ),
    )
    assert lab.peer_of() == "exp1"  # Proxy[1] only
    warning = lab.until(kind("endpoint.warning", aor=AOR), since=0, timeout=5, what="warning")
    assert "no redundancy" in warning["text"]
    seq = lab.seq()
    lab.kill("exp1")
    lab.until(kind("registration.state", state="Failed"), since=seq, timeout=10, what="Failed")
    # Every target (Proxy[1] alone) tried: the endpoint backs off instead of using Proxy[2].
    lab.until(kind("registration.backoff", aor=AOR), since=seq, timeout=10, what="backoff")
    events = lab.events(since=seq)
    assert not [
        e for e in events if e["kind"] == "registration.state" and e["state"] == "Registered"
    ]
    assert not [e for e in events if e["kind"] == "stack.configured" and ".12" in e["target"]]
    assert lab.status()["peers"][1]["registrations"] == 0


def test_outbound_on_survives_a_kill_with_no_gap(make_lab: Callable[..., TestLab]) -> None:
    lab = make_lab(
        registrar=LONG,
        endpoints=lambda p: endpoint(p, outbound=True, keepalive_interval=1.0, expires=60),
    )
    flows = lab.until(
        lambda e: (
            e["kind"] == "registration.flow" and e["state"] == "Registered" and e["reg_id"] == 2
        ),
        since=0,
        timeout=15,
        what="second flow registered",
    )
    assert flows["aor"] == AOR
    for peer in ("exp1", "exp2"):  # one flow to each peer, both bound (their own events)
        lab.until(kind("binding.added", peer, aor=AOR), since=0, timeout=10, what=f"{peer} bound")
    seq = lab.seq()
    lab.kill("exp1")
    lost = lab.until(
        kind("registration.flow", state="Failed"), since=seq, timeout=10, what="a flow failed"
    )
    assert lost["reason"] == "Connection lost"
    # The flow to exp1 looks for another peer, and comes to exp2 as well.
    lab.until(
        lambda e: (
            e["kind"] == "registration.flow"
            and e["state"] == "Registered"
            and e["reg_id"] == lost["reg_id"]
        ),
        since=lost["seq"],
        timeout=15,
        what="the lost flow registered again",
    )
    # No gap: the endpoint as a whole never left Registered.
    overall = [e for e in lab.events(since=seq) if e["kind"] == "registration.state"]
    assert overall == []
    assert lab.endpoint()["state"] == "Registered"


def test_outbound_flows_spread_out_again_so_a_second_kill_leaves_no_gap(
    make_lab: Callable[..., TestLab],
) -> None:
    # Short registrations and a short failed-peer memory: once exp1 is back, the next refresh
    # of a flow sharing exp2 moves it to exp1.
    lab = make_lab(
        registrar={"min_expires": 1, "max_expires": 2, "default_expires": 2},
        endpoints=lambda p: endpoint(
            p, outbound=True, keepalive_interval=1.0, expires=2, failed_memory=1
        ),
    )

    def flow_registered(reg_id: int | None = None, address: str | None = None) -> Match:
        return lambda e: (
            e["kind"] == "registration.flow"
            and e["state"] == "Registered"
            and (reg_id is None or e["reg_id"] == reg_id)
            and (address is None or e["registrar"].startswith(f"{address}:"))
        )

    lab.until(flow_registered(2), since=0, timeout=15, what="second flow registered")
    exp1 = next(p["address"] for p in lab.status()["peers"] if p["name"] == "exp1")
    seq = lab.seq()
    lab.kill("exp1")
    lost = lab.until(
        kind("registration.flow", state="Failed"), since=seq, timeout=10, what="a flow failed"
    )
    # Both flows now on exp2: the lost one found no other peer.
    lab.until(flow_registered(lost["reg_id"]), since=lost["seq"], timeout=15, what="lost flow back")
    started = lab.seq()
    lab.start("exp1")
    moved = lab.until(
        flow_registered(address=exp1), since=started, timeout=20, what="a flow back on exp1"
    )
    lab.kill("exp2")  # the other peer: the flow on exp1 carries the registration
    lab.until(
        kind("registration.flow", state="Failed", reg_id=3 - moved["reg_id"]),
        since=moved["seq"],
        timeout=10,
        what="the flow on exp2 failed",
    )
    overall = [e for e in lab.events(since=seq) if e["kind"] == "registration.state"]
    assert overall == []  # registered all along, through both kills
    assert lab.endpoint()["state"] == "Registered"


def test_set_restarts_the_locator_with_the_new_proxy(make_lab: Callable[..., TestLab]) -> None:
    lab = make_lab(registrar=LONG, endpoints=lambda p: endpoint(p, expires=60))
    seq = lab.seq()
    result = lab.op(AOR, "set", proxy=CLUSTER)
    assert result["uri"] == AOR
    restart = lab.until(kind("locator.restart", uri=CLUSTER), since=seq, timeout=5, what="restart")
    located = lab.until(kind("dns.located"), since=restart["seq"], timeout=5, what="located")
    assert (located["strategy"], located["label"]) == (4, "unspec")
    lab.until(
        kind("registration.state", state="Registered", proxy=CLUSTER),
        since=restart["seq"],
        timeout=10,
        what="registered through the new proxy",
    )
    with pytest.raises(Exception, match="cannot set"):
        lab.op(AOR, "set", uri="2002@uctest.local")


@pytest.mark.parametrize("algorithms", [["SHA-256", "MD5"], ["MD5"]])
def test_endpoint_answers_the_registrars_digest_challenge(
    make_lab: Callable[..., TestLab], algorithms: list[str]
) -> None:
    """Our endpoint against our registrar with digest auth on: challenged, then registered;
    a wrong password stops (Failed, no retry storm) instead of hammering the peer."""
    auth = {"users": {"1001": "secret"}, "algorithms": algorithms}
    lab = make_lab(
        registrar={**LONG, "auth": auth},
        endpoints=lambda p: endpoint(p, expires=60, username="1001", password="secret"),
    )
    assert lab.endpoint()["state"] == "Registered"
    # Each component writes its events on its own clock: wait for the peer's, not just read.
    lab.until(
        lambda e: e["kind"] == "register.answered" and e["code"] == 401,
        since=0,
        timeout=5,
        what="the registrar's challenge of the first REGISTER",
    )

    seq = lab.seq()
    lab.op(AOR, "set", password="wrong")
    failed = lab.until(kind("registration.state", state="Failed"), since=seq, timeout=10)
    assert "401" in failed["reason"] or "403" in failed["reason"]
    refused = lab.until(
        lambda e: e["kind"] == "register.answered" and e["code"] in (401, 403),
        since=seq,
        timeout=5,
        what="the registrar refusing the wrong password",
    )
    answered = [
        e
        for e in lab.events(refused["seq"])
        if e["kind"] == "register.answered" and e["code"] != 200
    ]
    assert len(answered) <= 4, answered  # a challenge or two, never a storm
