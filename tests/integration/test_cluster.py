"""The cluster-wide binding view over real peer links: two peers, three endpoints.

A (1001) finds the peers through SRV (exp1 first), B (1002) is pinned to exp2's address and
C (1003) to exp1's, all over UDP, so each lands where the test needs it and none moves when it
must not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from emulator.lab.testing import TestLab
from tests.labs import Match, kind

pytestmark = pytest.mark.integration

A, B, C = "1001@uctest.local", "1002@uctest.local", "1003@uctest.local"


def dns(prefix: str) -> dict[str, Any]:
    def record(name: str, rtype: str, data: str) -> dict[str, Any]:
        return {"name": name, "type": rtype, "data": data, "ttl": 5}

    return {
        "address": f"{prefix}.10",
        "port": 1053,
        "records": [
            record("_sip._udp", "SRV", "10 10 5060 exp1"),
            record("_sip._udp", "SRV", "20 10 5060 exp2"),
            record("exp1", "A", f"{prefix}.11"),
            record("exp2", "A", f"{prefix}.12"),
        ],
    }


def endpoints(prefix: str) -> list[dict[str, Any]]:
    def endpoint(user: str, proxy: str, host: int, expires: int) -> dict[str, Any]:
        # t1 0.05 s: Timer F = 3.2 s, so A leaves a frozen exp1 within one registration.
        return {
            "uri": f"{user}@uctest.local",
            "proxy": proxy,
            "transport": "udp",
            "address": f"{prefix}.{host}",
            "expires": expires,
            "retry_base": 1,
            "retry_max": 4,
            "t1": 0.05,
        }

    return [
        endpoint("1001", "uctest.local", 101, 10),
        endpoint("1002", f"{prefix}.12", 102, 10),
        endpoint("1003", f"{prefix}.11", 103, 30),
    ]


def registered(aor: str, address: str) -> Match:
    def match(event: dict[str, Any]) -> bool:
        return (
            event["kind"] == "registration.state"
            and event.get("aor") == aor
            and event["state"] == "Registered"
            and str(event.get("registrar", "")).startswith(address + ":")
        )

    return match


def placed(lab: TestLab) -> dict[str, str | None]:
    status = lab.status()
    return {e["uri"]: lab.peer_at(status, e["registrar"]) for e in status["endpoints"]}


def cluster_bindings(lab: TestLab, peer: str) -> set[tuple[str, str]]:
    view = lab.bindings(peer)["cluster"]
    return {(b["peer"], b["aor"]) for b in view["bindings"] if b["live"]}


def test_every_peer_sees_every_binding_learns_back_and_shows_doubles(
    make_lab: Callable[..., TestLab],
) -> None:
    lab = make_lab(
        dns=dns,
        endpoints=endpoints,
        registrar={"min_expires": 1, "max_expires": 30, "default_expires": 30},
    )
    address = {p["name"]: p["address"] for p in lab.status()["peers"]}
    assert placed(lab) == {A: "exp1", B: "exp2", C: "exp1"}
    # Joined means the other's snapshot is applied; later changes travel before the 200 OK.
    lab.until(kind("cluster.joined", "exp1", peer="exp2"), since=0, timeout=10)
    lab.until(kind("cluster.joined", "exp2", peer="exp1"), since=0, timeout=10)
    everything = {("exp1", A), ("exp2", B), ("exp1", C)}
    assert cluster_bindings(lab, "exp1") == everything
    assert cluster_bindings(lab, "exp2") == everything
    shown = lab.siplab("bindings", "exp2")
    assert "cluster: linked to exp1; 2 binding(s) on other peers" in shown.stdout, shown.stdout
    status = lab.siplab("status")
    rows = {line.split()[0]: line for line in status.stdout.splitlines() if "@" in line}
    assert address["exp1"] in rows[A], status.stdout
    assert address["exp2"] in rows[B], status.stdout

    # A restarted peer learns back what it held: C is gone (killed, so it never says so),
    # and only the cluster can give exp1 C's binding again.
    c_host = next(e["host"] for e in lab.status()["endpoints"] if e["uri"] == C)
    lab.kill(c_host)
    since = lab.seq()
    lab.restart("exp1")
    restored = lab.until(kind("binding.restored", "exp1", aor=C), since=since, timeout=20)
    assert 0 < restored["expires"] <= 30
    assert C in {b["aor"] for b in lab.bindings("exp1")["bindings"]}

    # A frozen exp1: A moves to exp2; exp2's link to exp1 goes silent; once resumed, exp1
    # answers the REGISTER queued while frozen, and A is bound on both peers.
    lab.until(registered(A, address["exp1"]), since=0, timeout=20)
    since = lab.seq()
    lab.pause("exp1")
    lab.until(registered(A, address["exp2"]), since=since, timeout=30)
    lab.until(kind("cluster.left", "exp2", peer="exp1"), since=since, timeout=15)
    since = lab.seq()
    lab.resume("exp1")
    double = lab.until(kind("cluster.double", on=True, aor=A), since=since, timeout=15)
    assert double["peers"] == ["exp1", "exp2"]
    assert {"aor": A, "peers": ["exp1", "exp2"]} in lab.status()["doubles"]
    status = lab.siplab("status")
    assert f"double registration: {A} on exp1, exp2" in status.stdout, status.stdout
