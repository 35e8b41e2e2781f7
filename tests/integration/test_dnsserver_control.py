"""Runtime changes, faults and master files on a real ``python -m dnsserver`` process."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import pytest

from dnsserver.config import DnsServerConfig
from tests.dnshelpers import DnsProcess, seed_zone
from tests.labs import allocate_prefix

pytestmark = pytest.mark.integration

NET = allocate_prefix()
PORT = 1053
CLUSTER = "habibexpc-cluster.uctest.local"


async def udp(address: str, name: str, timeout: float = 3) -> dns.message.Message:
    query = dns.message.make_query(name, "A")
    return await dns.asyncquery.udp(query, address, port=PORT, timeout=timeout)


# One address per test in a /24 of the process's own /16 (tests/labs.py), so that tests and
# test sessions can run in parallel.
ADDRESSES = {
    "test_replace_changes_the_answer_and_is_reported": f"{NET}.30",
    "test_fault_down_silences_and_none_restores": f"{NET}.32",
    "test_fault_delay_holds_the_answer": f"{NET}.33",
}


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[DnsProcess, str]]:
    address = ADDRESSES[request.node.name]
    config = DnsServerConfig(address=address, port=PORT, zones=[seed_zone()])
    process = await DnsProcess.start(config)
    try:
        await process.wait_for("ready")
        yield process, address
    finally:
        await process.stop()


async def test_replace_changes_the_answer_and_is_reported(
    server: tuple[DnsProcess, str],
) -> None:
    process, address = server
    reply = await process.request(
        "replace", records=[{"name": "habibexpc-cluster", "type": "A", "data": "127.0.0.12"}]
    )
    assert reply["ok"], reply
    change = await process.wait_for("dns.change", op="replace")
    assert change["records"] == ["habibexpc-cluster.uctest.local. 60 IN A 127.0.0.12"]
    response = await udp(address, CLUSTER)
    assert [rdata.address for rdata in response.answer[0]] == ["127.0.0.12"]
    bad = await process.request("add", records=[{"name": "x", "type": "A", "data": "nope"}])
    assert not bad["ok"]
    assert "A data must be an IPv4 address" in bad["error"]


async def test_fault_down_silences_and_none_restores(server: tuple[DnsProcess, str]) -> None:
    process, address = server
    assert (await process.request("fault", mode="down"))["ok"]
    with pytest.raises(dns.exception.Timeout):
        await udp(address, "exp1.uctest.local", timeout=0.5)
    assert (await process.request("fault", mode="none"))["ok"]
    assert (await udp(address, "exp1.uctest.local")).rcode() == dns.rcode.NOERROR
    await process.wait_for("fault.applied", fault="dns.down")


async def test_fault_delay_holds_the_answer(server: tuple[DnsProcess, str]) -> None:
    process, address = server
    assert (await process.request("fault", mode="delay", delay=0.4))["ok"]
    started = time.monotonic()
    response = await udp(address, "exp1.uctest.local")
    assert time.monotonic() - started >= 0.35
    assert response.rcode() == dns.rcode.NOERROR
    query = dns.message.make_query("exp1.uctest.local", "A")
    tcp = await dns.asyncquery.tcp(query, address, port=PORT, timeout=3)
    assert tcp.rcode() == dns.rcode.NOERROR


async def test_standalone_flags_with_a_zone_file(tmp_path: Path) -> None:
    zone_file = tmp_path / "uctest.local.zone"
    zone_file.write_text("$TTL 30\nexp1 A 127.0.0.11\n_sip._tcp SRV 10 10 5060 exp1\n")
    process = await DnsProcess.spawn(
        sys.executable,
        "-m",
        "dnsserver",
        "--name",
        "dns-file",
        "--zone",
        str(zone_file),
        "--zone-origin",
        "other.test",
        "--record",
        "www 20 A 127.0.0.99",
        "--listen",
        f"{NET}.31:{PORT}",
        "--control",
        "stdio",
    )
    try:
        ready = await process.wait_for("ready")
        assert ready["component"] == "dns-file"
        assert sorted(ready["zones"]) == ["other.test", "uctest.local"]
        response = await udp(f"{NET}.31", "exp1.uctest.local")
        assert [rdata.address for rdata in response.answer[0]] == ["127.0.0.11"]
        other = await udp(f"{NET}.31", "www.other.test")
        assert other.answer[0].ttl == 20
    finally:
        await process.stop()
