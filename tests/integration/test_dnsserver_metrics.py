"""``python -m dnsserver --metrics``: Prometheus counters scraped over HTTP from a real process,
and ``--events`` switching query events. Addresses: 127.0.53.60-69."""

from __future__ import annotations

import asyncio
import sys
import urllib.request

import dns.asyncquery
import dns.message
import pytest

from dnsserver.config import DnsServerConfig
from tests.dnshelpers import DnsProcess, seed_zone

pytestmark = pytest.mark.integration


def config(address: str, **fields: object) -> DnsServerConfig:
    return DnsServerConfig(
        address=address, port=0, zones=[seed_zone(("127.0.53.11", "127.0.53.12"))], **fields
    )


def scrape(where: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{where}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def query(address: str, port: int, name: str, *, tcp: bool = False) -> None:
    message = dns.message.make_query(name, "A")
    if tcp:
        await dns.asyncquery.tcp(message, address, port=port, timeout=3)
    else:
        await dns.asyncquery.udp(message, address, port=port, timeout=3)


async def test_metrics_count_queries_hits_changes_and_tcp() -> None:
    address = "127.0.53.60"
    process = await DnsProcess.start(config(address, metrics=f"{address}:0"))
    try:
        ready = await process.wait_for("ready")
        port, where = ready["port"], ready["metrics"]
        before = await asyncio.to_thread(scrape, where)
        assert before['siplab_dns_cache_hits_total{transport="udp"}'] == 0
        for _ in range(3):
            await query(address, port, "exp1.uctest.local")
        await query(address, port, "nosuch.uctest.local")
        await query(address, port, "exp1.uctest.local", tcp=True)
        reply = await process.request(
            "replace", records=[{"name": "exp1", "type": "A", "data": "127.0.53.21"}]
        )
        assert "error" not in reply
        after = await asyncio.to_thread(scrape, where)
        assert after['siplab_dns_queries_total{rcode="NOERROR",transport="udp"}'] == 3
        assert after['siplab_dns_queries_total{rcode="NXDOMAIN",transport="udp"}'] == 1
        assert after['siplab_dns_queries_total{rcode="NOERROR",transport="tcp"}'] == 1
        assert after['siplab_dns_cache_hits_total{transport="udp"}'] == 2
        assert after['siplab_dns_queries_by_type_total{qtype="A"}'] == 5
        assert after["siplab_dns_tcp_connections_total"] == 1
        assert after["siplab_dns_zone_changes_total"] == 1
        assert after["siplab_dns_events_total"] == 5
    finally:
        await process.stop()


async def test_metrics_listener_stops_with_the_server() -> None:
    address = "127.0.53.61"
    process = await DnsProcess.start(config(address, metrics=f"{address}:0"))
    try:
        where = (await process.wait_for("ready"))["metrics"]
        await asyncio.to_thread(scrape, where)
        await process.request("shutdown")
        assert await process.wait_exit() == 0
        with pytest.raises(OSError, match=r"refused|Errno"):
            await asyncio.to_thread(scrape, where)
    finally:
        await process.stop()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [(("--events", "off"), 0), (("--events", "sample", "--event-sample", "4"), 2)],
)
async def test_events_flag(flags: tuple[str, ...], expected: int) -> None:
    address = "127.0.53.62" if expected == 0 else "127.0.53.63"
    process = await DnsProcess.spawn(
        sys.executable,
        "-m",
        "dnsserver",
        "--config-json",
        config(address).model_dump_json(),
        "--control",
        "stdio",
        *flags,
    )
    try:
        port = (await process.wait_for("ready"))["port"]
        for _ in range(9):
            await query(address, port, "exp2.uctest.local")
        status = await process.request("status")
        assert status["result"]["queries_by_rcode"] == {"NOERROR": 9}
        kinds = [event["kind"] for event in process.events]
        assert kinds.count("dns.query") == expected
    finally:
        await process.stop()


async def test_bad_metrics_address_is_one_line() -> None:
    process = await DnsProcess.spawn(
        sys.executable,
        "-m",
        "dnsserver",
        "--listen",
        "127.0.53.64:0",
        "--zone-origin",
        "uctest.local",
        "--metrics",
        "nonsense",
    )
    assert await process.wait_exit() == 2
    assert process.process.stderr is not None
    err = (await process.process.stderr.read()).decode()
    assert "ADDRESS:PORT" in err
    assert len(err.strip().splitlines()) == 1
