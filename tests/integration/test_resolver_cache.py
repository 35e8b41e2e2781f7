"""The endpoint host's resolver against a real DNS server: identical questions asked at once
go to the server once, answers are reused for their TTL and asked again after it."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from dnsserver.config import DnsServerConfig
from endpoint.locator import parse_proxy
from endpoint.resolver_cache import CachingDnsResolver, shared_resolver
from tests.dnshelpers import seed_zone
from tests.labs import allocate_prefix

pytestmark = pytest.mark.integration


class Clock:
    """Wall-clock time that a test can move on (dnspython stamps answers with time.time)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def queries(process: Any) -> int:
    return sum(1 for e in process.events if e["kind"] == "dns.query")


async def test_identical_queries_coalesce_and_answers_live_for_their_ttl(
    start_dns: Callable[..., Any],
) -> None:
    prefix = allocate_prefix()
    config = DnsServerConfig(
        address=f"{prefix}.10", port=1053, zones=[seed_zone(ttl=30)], events="all"
    )
    process = await start_dns(config)
    clock = Clock()
    resolver = shared_resolver([(f"{prefix}.10", 1053)], clock=clock)
    inner = resolver._resolver
    assert isinstance(inner, CachingDnsResolver)
    proxy = parse_proxy("uctest.local")
    rng = random.Random(1)

    async def locate_many() -> list[Any]:
        return await asyncio.gather(
            *(resolver.locate(proxy, transport="tcp", rng=rng) for _ in range(200))
        )

    first = await locate_many()
    assert all({t.host for t in targets} == {"127.0.0.11", "127.0.0.12"} for targets in first)
    # 3 SRV names and 2 peer names (no glue in this zone's answers is assumed): at most 5
    # questions for 200 lookups, each asked once.
    asked = await _settled_count(process)
    assert 1 <= asked <= 5
    assert inner.coalesced > 0

    await locate_many()  # within the TTL: from the cache
    assert await _settled_count(process) == asked

    clock.now += 31  # past the TTL: asked again, once each
    await locate_many()
    assert await _settled_count(process) == 2 * asked


async def _settled_count(process: Any) -> int:
    """The server's query count once its events have arrived (they are flushed every 20 ms)."""
    count = -1
    async with asyncio.timeout(5):
        while (now := queries(process)) != count:
            count = now
            await asyncio.sleep(0.2)
    return count
