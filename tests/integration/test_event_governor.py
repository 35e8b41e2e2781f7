"""The rate governor in a real component process: counts are exact whatever gets sampled.

Addresses: a /24 from the session's claimed /16 (tests.labs.allocate_prefix).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dns.asyncquery
import dns.message
import pytest

from dnsserver.config import DnsServerConfig
from tests.dnshelpers import seed_zone
from tests.labs import allocate_prefix

pytestmark = pytest.mark.integration

QUERIES = 600


async def test_default_events_count_every_query_in_stats(start_dns: Callable[..., Any]) -> None:
    address = f"{allocate_prefix()}.10"
    config = DnsServerConfig(address=address, port=1053, zones=[seed_zone()])
    assert config.events == "auto"
    process = await start_dns(config)
    query = dns.message.make_query("exp1.uctest.local", "A")
    for _ in range(QUERIES):
        await dns.asyncquery.udp(query, address, port=1053, timeout=3)
    assert (await process.request("shutdown"))["ok"]
    assert await process.wait_exit() == 0
    kinds = [event["kind"] for event in process.events]
    stats = [event for event in process.events if event["kind"] == "stats"]
    # However fast the queries came (sampled or not), the stats carry every one, and the last
    # stats event comes before the component's last event.
    assert sum(event["counts"].get("dns.query", 0) for event in stats) == QUERIES
    assert kinds.index("component.stopped") > max(i for i, k in enumerate(kinds) if k == "stats")
    sampled = [event for event in process.events if event["kind"] == "dns.query"]
    assert 0 < sum(event.get("sample", 1) for event in sampled) <= QUERIES
    assert all(event["interval"] >= 0 for event in stats)
