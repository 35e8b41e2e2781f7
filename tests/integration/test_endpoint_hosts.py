"""Endpoint hosts: many endpoints in one process, on real loopback sockets.

A group of endpoints (a URI pattern and a count) runs in one host process, each endpoint with
its own connection and registration; every event carries the endpoint's AOR, so the lab's
views (status, ``siplab endpoints``, one AOR's RoomOS log) read per endpoint. A graceful stop
de-registers (Expires: 0): the registrar's binding is gone, not left to expire.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from emulator.lab.pytest_plugin import LabFactory
from emulator.lab.report import registrar_host
from emulator.lab.testing import TestLab
from tests.labs import fresh_lab_dict

pytestmark = pytest.mark.integration

# Long registrations: these tests look at where endpoints are, not at refreshes.
QUIET_REGISTRAR = {"min_expires": 1, "max_expires": 300, "default_expires": 300}


def group(prefix: str, count: int, **settings: Any) -> list[dict[str, Any]]:
    return [
        {
            "uri": "{n}@uctest.local",
            "count": count,
            "address": f"{prefix}.101",
            "jitter": 1.0,
            "retry_base": 1,
            "retry_max": 4,
            **settings,
        }
    ]


def start(siplab_lab: LabFactory, timeout: float = 30.0, **overrides: Any) -> TestLab:
    return siplab_lab(fresh_lab_dict(registrar=QUIET_REGISTRAR, **overrides), timeout=timeout)


def per_peer(lab: TestLab) -> Counter[str]:
    status = lab.status()
    peers = {p["address"]: p["name"] for p in status["peers"]}
    return Counter(
        peers[str(registrar_host(e["registrar"]))]
        for e in status["endpoints"]
        if e["state"] == "Registered"
    )


def test_a_group_of_500_in_one_process_spreads_across_two_peers(
    siplab_lab: LabFactory,
) -> None:
    lab = start(siplab_lab, 60, endpoints=lambda prefix: group(prefix, 500))
    status = lab.status()
    endpoints = status["endpoints"]
    assert len(endpoints) == 500
    assert {e["host"] for e in endpoints} == {"ep-1"}
    assert len({e["pid"] for e in endpoints}) == 1  # one process
    assert all(e["state"] == "Registered" for e in endpoints)
    # SRV 10/10: about half each (binomial, sd 11); both peers hold their share.
    counts = per_peer(lab)
    assert sum(counts.values()) == 500
    assert min(counts.values()) > 150, counts
    for peer, count in counts.items():
        assert len(lab.bindings(peer)["bindings"]) == count

    summary = lab.siplab("status")
    assert summary.returncode == 0, summary.stderr
    assert "500 endpoints in 1 host process(es)" in summary.stdout
    assert f"exp1 ({status['peers'][0]['address']}:5060)" in summary.stdout

    listed = lab.siplab("endpoints", "--registrar", "exp2", "--state", "Registered")
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()[1:]
    assert len(rows) == counts["exp2"]

    # One endpoint's RoomOS log out of the host's interleaved stream: its lines only, with
    # the host's pid.
    log = lab.siplab("events", "--aor", "1234@uctest.local", "--format", "roomos")
    assert log.returncode == 0, log.stderr
    lines = log.stdout.splitlines()
    pid = endpoints[0]["pid"]
    assert lines
    assert all(f" main[{pid}]: " in line for line in lines)
    assert "URI: '1234@uctest.local'" in lines[-1]
    assert not any("1235@uctest.local" in line for line in lines)


def _binding_aors(lab: TestLab) -> set[str]:
    return {b["aor"] for peer in ("exp1", "exp2") for b in lab.bindings(peer)["bindings"]}


def test_stopping_an_endpoint_host_deregisters_every_endpoint(
    siplab_lab: LabFactory,
) -> None:
    lab = start(siplab_lab, endpoints=lambda prefix: group(prefix, 20))
    assert len(_binding_aors(lab)) == 20
    seq = lab.seq()
    lab.stop("ep-1")
    removed: set[str] = set()

    def all_removed(event: dict[str, Any]) -> bool:
        if event["kind"] == "binding.removed":
            removed.add(event["aor"])
        return len(removed) == 20

    lab.until(all_removed, since=seq, timeout=10)
    assert _binding_aors(lab) == set()  # gone now, not at expiry (300 s)


def test_stopping_one_endpoint_of_a_host_deregisters_it_alone(
    siplab_lab: LabFactory,
) -> None:
    lab = start(siplab_lab, endpoints=lambda prefix: group(prefix, 3))
    seq = lab.seq()
    lab.stop("1002@uctest.local")
    lab.until(
        lambda e: e["kind"] == "binding.removed" and e["aor"] == "1002@uctest.local",
        since=seq,
        timeout=5,
    )
    assert _binding_aors(lab) == {"1001@uctest.local", "1003@uctest.local"}
    stopped = lab.endpoint("1002@uctest.local")
    assert stopped["state"] == "Inactive"
    assert lab.endpoint("1001@uctest.local")["state"] == "Registered"

    lab.start("1002@uctest.local")
    lab.until(
        lambda e: (
            e["kind"] == "registration.state"
            and e["aor"] == "1002@uctest.local"
            and e["state"] == "Registered"
        ),
        since=seq,
        timeout=10,
    )
    assert _binding_aors(lab) == {f"{n}@uctest.local" for n in (1001, 1002, 1003)}


def test_srv_weights_60_40_share_1000_endpoints(siplab_lab: LabFactory) -> None:
    def records(prefix: str) -> dict[str, Any]:
        return {
            "address": f"{prefix}.10",
            "port": 1053,
            "ttl": 60,
            "records": [
                {"name": "_sip._tcp", "type": "SRV", "data": "10 60 5060 exp1"},
                {"name": "_sip._tcp", "type": "SRV", "data": "10 40 5060 exp2"},
                {"name": "exp1", "type": "A", "data": f"{prefix}.11"},
                {"name": "exp2", "type": "A", "data": f"{prefix}.12"},
            ],
        }

    lab = start(
        siplab_lab, 90, dns=records, endpoints=lambda prefix: group(prefix, 1000, jitter=2.0)
    )
    counts = per_peer(lab)
    assert sum(counts.values()) == 1000
    # 600 expected, sd 15.5: within 6 % of the whole (about 4 sd).
    assert abs(counts["exp1"] - 600) <= 60, counts


def test_one_endpoint_of_a_host_is_reconfigured_from_the_cli(siplab_lab: LabFactory) -> None:
    lab = start(siplab_lab, endpoints=lambda prefix: group(prefix, 3, jitter=0.1))
    seq = lab.seq()
    cluster = "habibexpc-cluster.uctest.local"
    result = lab.siplab("endpoint", "1002@uctest.local", "set", f"proxy={cluster}")
    assert result.returncode == 0, result.stderr
    restart = lab.until(
        lambda e: e["kind"] == "locator.restart" and e.get("uri") == cluster,
        since=seq,
        timeout=5,
        what="the locator restarted",
    )
    assert restart["aor"] == "1002@uctest.local"
    lab.until(
        lambda e: (
            e["kind"] == "registration.state"
            and e["state"] == "Registered"
            and e.get("aor") == "1002@uctest.local"
            and e.get("proxy") == cluster
        ),
        since=restart["seq"],
        timeout=10,
        what="registered through the cluster name",
    )
    restarted = {
        e.get("aor") for e in lab.events(seq) if e["kind"] == "locator.restart"
    }  # the others were left alone
    assert restarted == {"1002@uctest.local"}
    bad = lab.siplab("endpoint", "1002@uctest.local", "set", "transport=carrier-pigeon")
    assert bad.returncode != 0
    assert "transport" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    missing = lab.siplab("endpoint", "9999@uctest.local", "show")
    assert "no endpoint '9999@uctest.local'" in missing.stderr
