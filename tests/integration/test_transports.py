"""Registration over each transport the peers offer, through the SRV records that name it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from emulator.lab.testing import TestLab

pytestmark = pytest.mark.integration


def endpoint(prefix: str, transport: str) -> list[dict[str, object]]:
    return [
        {
            "uri": "1001@uctest.local",
            "proxy": "uctest.local",
            "transport": transport,
            "address": f"{prefix}.101",
        }
    ]


def test_tls_endpoint_registers_through_sips_srv_on_5061(
    make_lab: Callable[..., TestLab],
) -> None:
    lab = make_lab(endpoints=lambda prefix: endpoint(prefix, "tls"))
    status = lab.endpoint()
    assert status["state"] == "Registered"
    assert status["transport"] == "TLS"
    assert status["registrar"].endswith(":5061")
    located = [e for e in lab.events() if e["kind"] == "dns.located"]
    assert located[0]["strategy"] == 1
    assert located[0]["label"] == "tls"


def test_udp_endpoint_registers_through_sip_udp_srv(make_lab: Callable[..., TestLab]) -> None:
    def records(prefix: str) -> dict[str, object]:
        return {
            "address": f"{prefix}.10",
            "port": 1053,
            "ttl": 5,
            "records": [
                {"name": "exp1", "type": "A", "data": f"{prefix}.11"},
                {"name": "exp2", "type": "A", "data": f"{prefix}.12"},
                {"name": "_sip._udp", "type": "SRV", "data": "10 10 5060 exp1"},
                {"name": "_sip._udp", "type": "SRV", "data": "10 10 5060 exp2"},
            ],
        }

    lab = make_lab(dns=records, endpoints=lambda prefix: endpoint(prefix, "udp"))
    status = lab.endpoint()
    assert status["state"] == "Registered"
    assert status["transport"] == "UDP"
    peer = lab.peer_at(lab.status(), status["registrar"])
    seq = lab.seq()
    assert lab.siplab("maintenance", peer, "on").returncode == 0
    lab.until(
        lambda e: (
            e["kind"] == "registration.state"
            and e["state"] == "Registered"
            and e["registrar"] != status["registrar"]
        ),
        since=seq,
        timeout=12,
        what="UDP failover to the other peer",
    )


def test_tcp_endpoint_without_tcp_srv_reports_why(make_lab: Callable[..., TestLab]) -> None:
    def tls_only(prefix: str) -> dict[str, object]:
        return {
            "address": f"{prefix}.10",
            "port": 1053,
            "records": [
                {"name": "exp1", "type": "A", "data": f"{prefix}.11"},
                {"name": "_sips._tcp", "type": "SRV", "data": "10 10 5061 exp1"},
            ],
        }

    lab = make_lab(
        dns=tls_only, endpoints=lambda prefix: endpoint(prefix, "tcp"), require_registered=False
    )
    status = lab.endpoint()
    assert status["state"] == "Failed"
    assert status["reason"] == "No usable TCP target for 'uctest.local'"
