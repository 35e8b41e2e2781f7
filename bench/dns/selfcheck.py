"""``run.py --self-check``: our server under load, checked answer by answer (no dnsperf, no NSD).

Starts ``python -m dnsserver`` (events sampled, /metrics on) on a loopback /24 it claims, fires a
few thousand queries from a small asyncio UDP client with many in flight, and checks that every
answer is the right one for its question (ID, letter case, rcode, records), that the cluster
name still rotates when answers come from the cache, that a runtime change (the ``replace``
control op) is seen by the very next query, and that the Prometheus counters moved.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import urllib.request
from collections import Counter
from typing import Any

import dns.flags
import dns.message
import dns.rcode

from emulator.lab.addresses import next_block
from emulator.lab.testing import ComponentUnderTest

NET = next_block().prefix
ADDRESS = f"{NET}.5"
ORIGIN = "uctest.local"
CLUSTER = f"habibexpc-cluster.{ORIGIN}"
PEERS = [f"{NET}.11", f"{NET}.12"]


def _config() -> dict[str, Any]:
    records = [{"name": "exp1", "type": "A", "data": PEERS[0]}]
    records += [{"name": "exp2", "type": "A", "data": PEERS[1]}]
    for index in (1, 2):
        records.append({"name": "_sip._tcp", "type": "SRV", "data": f"10 10 5060 exp{index}"})
        records.append({"name": "habibexpc-cluster", "type": "A", "data": PEERS[index - 1]})
    return {
        "name": "dns-selfcheck",
        "address": ADDRESS,
        "port": 0,
        "events": "sample",
        "event_sample": 100,
        "metrics": f"{ADDRESS}:0",
        "zones": [{"origin": ORIGIN, "ttl": 30, "records": records}],
    }


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: dict[int, asyncio.Future[bytes]] = {}

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        future = self.waiting.pop(int.from_bytes(data[:2], "big"), None)
        if future is not None and not future.done():
            future.set_result(data)


async def _ask(
    client: _Client,
    transport: asyncio.DatagramTransport,
    port: int,
    queries: list[dns.message.Message],
    window: int,
) -> list[dns.message.Message]:
    """Send ``queries`` with up to ``window`` in flight; the responses in query order."""
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(window)

    async def one(query: dns.message.Message) -> dns.message.Message:
        async with limit:
            future: asyncio.Future[bytes] = loop.create_future()
            client.waiting[query.id] = future
            transport.sendto(query.to_wire(), (ADDRESS, port))
            async with asyncio.timeout(3):
                wire = await future
        response = dns.message.from_wire(wire)
        if not query.is_response(response):
            raise AssertionError(f"response does not match its query: {query} / {response}")
        return response

    return list(await asyncio.gather(*(one(query) for query in queries)))


def _records(response: dns.message.Message) -> list[str]:
    return [rdata.to_text() for rrset in response.answer for rdata in rrset]


def _scrape(where: str) -> str:
    with urllib.request.urlopen(f"http://{where}/metrics", timeout=5) as answer:
        return answer.read().decode()


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def self_check(count: int) -> int:
    started = time.monotonic()
    server = await ComponentUnderTest.launch("dnsserver", json.dumps(_config()))
    transport: asyncio.DatagramTransport | None = None
    try:
        ready = await server.wait_for("ready")
        port, metrics = ready["port"], ready["metrics"]
        loop = asyncio.get_running_loop()
        client = _Client()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: client, local_addr=("127.0.0.1", 0)
        )
        rng = random.Random(53)
        # (name as sent, type, expected rcode, expected records as a sorted list or None)
        kinds = [
            (f"_sip._tcp.{ORIGIN}", "SRV", dns.rcode.NOERROR, None),
            (f"EXP1.{ORIGIN}", "A", dns.rcode.NOERROR, [PEERS[0]]),
            (f"exp2.{ORIGIN}", "A", dns.rcode.NOERROR, [PEERS[1]]),
            (CLUSTER, "A", dns.rcode.NOERROR, sorted(PEERS)),
            (f"nosuch.{ORIGIN}", "A", dns.rcode.NXDOMAIN, []),
        ]
        plan = [rng.choice(kinds) for _ in range(count)]
        queries = []
        for index, (name, rtype, _, _) in enumerate(plan):
            query = dns.message.make_query(name, rtype, use_edns=index % 3 == 0)
            query.id = index % 65536  # unique among those in flight
            if index % 5 == 0:
                query.flags &= ~dns.flags.RD
            queries.append(query)
        responses = await _ask(client, transport, port, queries, window=64)
        firsts: Counter[str] = Counter()
        for (name, _, rcode, expected), query, response in zip(
            plan, queries, responses, strict=True
        ):
            if response.rcode() != rcode:
                raise AssertionError(f"{name}: rcode {dns.rcode.to_text(response.rcode())}")
            if str(response.question[0].name) != name + ".":  # letter case kept
                raise AssertionError(f"question came back as {response.question[0].name}")
            if bool(response.flags & dns.flags.RD) != bool(query.flags & dns.flags.RD):
                raise AssertionError("RD not copied from the query")
            if (response.edns >= 0) != (query.edns >= 0):
                raise AssertionError("EDNS in the answer does not follow the query")
            records = _records(response)
            if expected is not None and sorted(records) != expected:
                raise AssertionError(f"{name}: answer {records}, expected {expected}")
            if name == CLUSTER:
                firsts[records[0]] += 1
        cluster_total = sum(firsts.values())
        # Rotation advances once per answer: in any run of answers each peer leads half.
        if cluster_total and min(firsts[p] for p in PEERS) < cluster_total // 2 - 1:
            raise AssertionError(f"cluster name does not rotate under load: {dict(firsts)}")

        # A runtime change must be seen by the very next answer (the cache is invalidated).
        reply = await server.request(
            "replace", records=[{"name": "exp1", "type": "A", "data": "127.62.56.21"}]
        )
        if not reply.get("ok", True) or "error" in reply:
            raise AssertionError(f"replace failed: {reply}")
        again = await _ask(
            client, transport, port, [dns.message.make_query(f"EXP1.{ORIGIN}", "A")], 1
        )
        if _records(again[0]) != ["127.62.56.21"]:
            raise AssertionError(f"stale answer after replace: {_records(again[0])}")

        await asyncio.sleep(0.2)  # let sampled events arrive
        sampled = sum(1 for event in server.events if event["kind"] == "dns.query")
        text = await asyncio.to_thread(_scrape, metrics)
        answered = _metric(text, "siplab_dns_queries_total")
        hits = _metric(text, "siplab_dns_cache_hits_total")
        if answered < count + 1 or hits < count * 0.9:
            raise AssertionError(f"metrics did not move: answered {answered}, hits {hits}")
        if not count // 100 - 1 <= sampled <= count // 100 + 2:
            raise AssertionError(f"{sampled} sampled events for {count + 1} queries")
        print(
            f"self-check passed: {count} queries in {time.monotonic() - started:.1f} s, "
            f"cluster leaders {dict(firsts)}, {int(hits)} cache hits, {sampled} sampled events, "
            "change seen at once"
        )
        return 0
    except AssertionError as exc:
        print(f"self-check FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if transport is not None:
            transport.close()
        await server.stop()
