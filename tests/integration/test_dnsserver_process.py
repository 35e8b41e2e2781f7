"""``python -m dnsserver`` as a real process on loopback, queried with dnspython.

Addresses: one /24 of the process's own loopback /16 (tests/labs.py), one address per test, so
tests and test sessions can run in parallel.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from typing import Any

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from dnsserver.config import DnsServerConfig
from tests.dnshelpers import HOSTILE, DnsProcess, seed_zone
from tests.labs import allocate_prefix

pytestmark = pytest.mark.integration

NET = allocate_prefix()
PORT = 1053
CLUSTER = "habibexpc-cluster.uctest.local"


def lab_config(address: str) -> DnsServerConfig:
    return DnsServerConfig(
        address=address, port=PORT, zones=[seed_zone(("127.0.53.11", "127.0.53.12"))]
    )


async def udp(address: str, name: str, rdtype: str = "A") -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    return await dns.asyncquery.udp(query, address, port=PORT, timeout=3)


async def test_ready_event_names_address_port_and_zones(start_dns: Callable[..., Any]) -> None:
    process = await start_dns(lab_config(f"{NET}.20"))
    ready = await process.wait_for("ready")
    assert (ready["address"], ready["port"], ready["zones"]) == (
        f"{NET}.20",
        PORT,
        ["uctest.local"],
    )
    assert ready["component"] == "dns"


async def test_srv_lists_both_peers(start_dns: Callable[..., Any]) -> None:
    process = await start_dns(lab_config(f"{NET}.21"))
    response = await udp(f"{NET}.21", "_sip._tcp.uctest.local", "SRV")
    targets = sorted(str(rdata.target) for rdata in response.answer[0])
    assert targets == ["exp1.uctest.local.", "exp2.uctest.local."]
    event = await process.wait_for("dns.query", name="_sip._tcp.uctest.local")
    assert event["qtype"] == "SRV"
    assert event["rcode"] == "NOERROR"
    assert event["transport"] == "udp"
    assert sorted(event["answers"]) == [
        "10 10 5060 exp1.uctest.local.",
        "10 10 5060 exp2.uctest.local.",
    ]
    assert event["client"].startswith("127.0.0.1:")


async def test_cluster_name_comes_back_rotated_between_two_answers(
    start_dns: Callable[..., Any],
) -> None:
    await start_dns(lab_config(f"{NET}.22"))
    first = [rdata.address for rdata in (await udp(f"{NET}.22", CLUSTER)).answer[0]]
    second = [rdata.address for rdata in (await udp(f"{NET}.22", CLUSTER)).answer[0]]
    assert sorted(first) == sorted(second) == ["127.0.53.11", "127.0.53.12"]
    assert second == [first[1], first[0]]


async def test_tcp_query(start_dns: Callable[..., Any]) -> None:
    process = await start_dns(lab_config(f"{NET}.23"))
    query = dns.message.make_query("exp1.uctest.local", "A")
    response = await dns.asyncquery.tcp(query, f"{NET}.23", port=PORT, timeout=3)
    assert [rdata.address for rdata in response.answer[0]] == ["127.0.53.11"]
    await process.wait_for("dns.query", transport="tcp", name="exp1.uctest.local")


async def test_nxdomain_carries_the_soa(start_dns: Callable[..., Any]) -> None:
    await start_dns(lab_config(f"{NET}.24"))
    response = await udp(f"{NET}.24", "missing.uctest.local")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.authority[0].rdtype == dns.rdatatype.SOA


async def test_stops_on_shutdown_request(start_dns: Callable[..., Any]) -> None:
    process = await start_dns(lab_config(f"{NET}.25"))
    await process.send_line('{"id":1,"op":"shutdown"}')
    assert await process.wait_exit(10) == 0
    assert process.events[-1]["kind"] == "component.stopped"


async def test_stops_when_stdin_closes(start_dns: Callable[..., Any]) -> None:
    process = await start_dns(lab_config(f"{NET}.26"))
    assert process.process.stdin is not None
    process.process.stdin.close()
    assert await process.wait_exit(10) == 0
    assert "component.orphaned" in [event["kind"] for event in process.events]


async def test_keeps_answering_after_garbage_datagrams(start_dns: Callable[..., Any]) -> None:
    process = await start_dns(lab_config(f"{NET}.27"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for garbage in (b"", b"\x00", b"\xff" * 11, b"\x12\x34\x01\x00\x00\x01" + b"\xff" * 40):
            sock.sendto(garbage, (f"{NET}.27", PORT))
        for hostile in HOSTILE.values():
            sock.sendto(hostile, (f"{NET}.27", PORT))
    response = await udp(f"{NET}.27", "exp2.uctest.local")
    assert [rdata.address for rdata in response.answer[0]] == ["127.0.53.12"]
    status = await process.request("status")
    assert status["ok"]
    assert status["result"]["queries_by_rcode"]["FORMERR"] == 1 + len(HOSTILE)
    assert status["result"]["unanswered"] == 3


async def test_second_server_on_the_same_address_fails_with_one_line(
    start_dns: Callable[..., Any],
) -> None:
    await start_dns(lab_config(f"{NET}.28"))
    second = await start_dns(lab_config(f"{NET}.28"), wait_ready=False)
    assert await second.wait_exit(10) == 2
    assert second.process.stderr is not None
    stderr = (await second.process.stderr.read()).decode()
    assert stderr.strip().count("\n") == 0
    assert f"cannot listen on {NET}.28:1053/udp" in stderr


async def test_bad_config_exits_2_with_one_line() -> None:
    bad = (
        '{"address": "127.0.53.29", "zones": [{"origin": "uctest.local", "records": '
        '[{"name": "_sip._tcp", "type": "SRV", "data": "10 10 exp1"}]}]}'
    )
    process = await DnsProcess.spawn(sys.executable, "-m", "dnsserver", "--config-json", bad)
    try:
        assert await process.wait_exit(10) == 2
        assert process.process.stderr is not None
        stderr = (await process.process.stderr.read()).decode()
        assert stderr.count("\n") == 1
        assert "SRV data must be 'priority weight port target'" in stderr
    finally:
        await process.stop()
