"""Changing a running lab's DNS with ``siplab dns ...``, seen by a real resolver and endpoint."""

from __future__ import annotations

from collections.abc import Callable

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from emulator.lab.testing import TestLab

pytestmark = pytest.mark.integration


def query(lab: TestLab, name: str, rdtype: str) -> dns.message.Message:
    host, port = lab.status()["dns"]["address"].rsplit(":", 1)
    request = dns.message.make_query(name, rdtype)
    return dns.query.udp(request, host, port=int(port), timeout=2)


def rdata(response: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in response.answer for rd in rrset)


def test_records_change_at_run_time(make_lab: Callable[..., TestLab]) -> None:
    lab = make_lab()
    prefix = lab.status()["peers"][0]["address"].rsplit(".", 1)[0]
    seq = lab.seq()

    removed = lab.siplab("dns", "remove", "_sip._tcp", "SRV", "10 10 5060 exp1")
    assert removed.returncode == 0, removed.stderr
    assert rdata(query(lab, "_sip._tcp.uctest.local", "SRV")) == ["10 10 5060 exp2.uctest.local."]
    change = lab.until(lambda e: e["kind"] == "dns.change", since=seq, what="dns.change")
    assert change["op"] == "remove"

    added = lab.siplab("dns", "add", "habibexpc-cluster", "A", f"{prefix}.13", "--ttl", "9")
    assert added.returncode == 0, added.stderr
    cluster = query(lab, "habibexpc-cluster.uctest.local", "A")
    assert len(rdata(cluster)) == 3

    assert lab.siplab("dns", "ttl", "7", "--name", "exp1").returncode == 0
    assert query(lab, "exp1.uctest.local", "A").answer[0].ttl == 7

    assert lab.siplab("dns", "replace", "exp2", "A", f"{prefix}.14").returncode == 0
    assert rdata(query(lab, "exp2.uctest.local", "A")) == [f"{prefix}.14"]

    fault = lab.siplab("dns", "fault", "servfail", "--name", "habibexpc-cluster.uctest.local")
    assert fault.returncode == 0, fault.stderr
    assert query(lab, "habibexpc-cluster.uctest.local", "A").rcode() == dns.rcode.SERVFAIL
    assert query(lab, "exp1.uctest.local", "A").rcode() == dns.rcode.NOERROR
    assert lab.siplab("dns", "fault", "none").returncode == 0
    assert query(lab, "habibexpc-cluster.uctest.local", "A").rcode() == dns.rcode.NOERROR

    bad = lab.siplab("dns", "add", "x", "SRV", "not srv data")
    assert bad.returncode != 0
    assert "SRV" in bad.stderr
    assert "Traceback" not in bad.stderr
    missing = lab.siplab("dns", "remove", "nosuch")
    assert missing.returncode != 0
    assert "no record matches" in missing.stderr


def test_endpoint_rides_out_a_dns_outage_during_failover(
    make_lab: Callable[..., TestLab],
) -> None:
    lab = make_lab(
        endpoints=lambda prefix: [
            {
                "uri": "1001@uctest.local",
                "proxy": "habibexpc-cluster.uctest.local",
                "address": f"{prefix}.101",
                "retry_base": 1,
                "retry_max": 2,
                # No cache: the lookup after the loss meets the outage (a cache would answer).
                "resolve": "uncached",
            }
        ],
    )
    first = lab.peer_at(lab.status(), lab.endpoint()["registrar"])
    seq = lab.seq()
    assert lab.siplab("dns", "fault", "down").returncode == 0
    assert lab.siplab("kill", first).returncode == 0

    # Connection lost, then the lookup fails: Failed with the DNS reason, and a backoff.
    dns_failed = lab.until(
        lambda e: (
            e["kind"] == "registration.state"
            and e["state"] == "Failed"
            and "did not answer" in e["reason"]
        ),
        since=seq,
        timeout=20,
        what="Failed because DNS is down",
    )
    lab.until(
        lambda e: e["kind"] == "registration.backoff",
        since=dns_failed["seq"],
        timeout=5,
        what="backoff",
    )
    heal = lab.seq()
    assert lab.siplab("dns", "fault", "none").returncode == 0
    registered = lab.until(
        lambda e: e["kind"] == "registration.state" and e["state"] == "Registered",
        since=heal,
        timeout=20,
        what="registration once DNS answers again",
    )
    assert lab.peer_at(lab.status(), registered["registrar"]) != first
