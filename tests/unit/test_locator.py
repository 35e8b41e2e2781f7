"""RFC 3263 target location: the pure ordering, and the dnspython adapter against a tiny DNS server.

The in-test server (dnslib, UDP on 127.0.54.1) serves a canned ``uctest.local`` modelled on the
seed: SRV for ``_sips._tcp`` and ``_sip._tcp`` on two peers, and a round-robin A cluster name.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import pytest
from dnslib import QTYPE, RCODE, RR, SRV, A, DNSRecord
from hypothesis import given
from hypothesis import strategies as st

from endpoint.locator import (
    LocateError,
    NaptrRecord,
    ProxyAddress,
    Resolver,
    SrvRecord,
    Target,
    order_srv,
    parse_proxy,
    plan_targets,
    usable,
)

PEER1, PEER2 = "10.48.53.127", "10.48.53.128"


# --- order_srv -------------------------------------------------------------------------------


def test_order_srv_sorts_by_priority() -> None:
    records = [
        SrvRecord(30, 5, 5060, "c.example."),
        SrvRecord(10, 5, 5060, "a.example."),
        SrvRecord(20, 5, 5060, "b.example."),
    ]
    for seed in range(20):
        ordered = order_srv(records, random.Random(seed))
        assert [r.target for r in ordered] == ["a.example.", "b.example.", "c.example."]


def test_order_srv_follows_weights() -> None:
    heavy, light = SrvRecord(10, 90, 5060, "heavy."), SrvRecord(10, 10, 5060, "light.")
    rng = random.Random(3263)
    draws = 2000
    firsts = [order_srv([light, heavy], rng)[0] for _ in range(draws)]
    # RFC 2782 picks in [0, 100] against running sums 90, 100: P(heavy first) = 91/101 ~ 0.90.
    assert 0.87 <= firsts.count(heavy) / draws <= 0.93


def test_order_srv_gives_weight_zero_a_small_chance() -> None:
    zero, full = SrvRecord(10, 0, 5060, "zero."), SrvRecord(10, 100, 5060, "full.")
    rng = random.Random(2782)
    draws = 2000
    zero_first = sum(order_srv([full, zero], rng)[0] == zero for _ in range(draws))
    # Chosen only when the draw in [0, 100] is 0: about 1 in 101, never zero, never common.
    assert 1 <= zero_first <= 60


def test_order_srv_all_zero_weights_keep_dns_order() -> None:
    records = [SrvRecord(10, 0, 5060, f"p{i}.") for i in range(4)]
    assert order_srv(records, random.Random(1)) == records


def test_order_srv_dot_target_means_no_service() -> None:
    assert order_srv([SrvRecord(0, 0, 0, ".")], random.Random(1)) == []


srv_records = st.builds(
    SrvRecord,
    priority=st.integers(0, 3),
    weight=st.integers(0, 20),
    port=st.integers(1, 65535),
    target=st.sampled_from([".", "a.", "b.", "c."]),
)


@given(st.lists(srv_records, max_size=8), st.integers())
def test_order_srv_is_a_priority_sorted_permutation(records: list[SrvRecord], seed: int) -> None:
    ordered = order_srv(records, random.Random(seed))
    assert sorted(ordered, key=repr) == sorted((r for r in records if r.target != "."), key=repr)
    assert [r.priority for r in ordered] == sorted(r.priority for r in ordered)


# --- parse_proxy -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("uctest.local", ProxyAddress("uctest.local", None)),
        ("habibexpc-cluster.uctest.local", ProxyAddress("habibexpc-cluster.uctest.local", None)),
        (" uctest.local. ", ProxyAddress("uctest.local.", None)),
        ("10.0.0.1", ProxyAddress("10.0.0.1", None)),
        ("10.0.0.1:5070", ProxyAddress("10.0.0.1", 5070)),
        ("host:5070", ProxyAddress("host", 5070)),
        ("[::1]:5060", ProxyAddress("::1", 5060)),
        ("[2001:db8::1]", ProxyAddress("2001:db8::1", None)),
        ("::1", ProxyAddress("::1", None)),
    ],
)
def test_parse_proxy(text: str, expected: ProxyAddress) -> None:
    assert parse_proxy(text) == expected


def test_proxy_is_numeric() -> None:
    assert parse_proxy("10.0.0.1").is_numeric
    assert parse_proxy("[::1]:5060").is_numeric
    assert not parse_proxy("uctest.local").is_numeric


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty proxy address"),
        ("   ", "empty proxy address"),
        ("host:", "bad port ''"),
        ("host:0", "bad port '0'"),
        ("host:65536", "bad port '65536'"),
        ("host:sip", "bad port 'sip'"),
        ("[::1", "missing ']'"),
        ("[uctest.local]:5060", "not an IPv6 address"),
        ("[::1]5060", "unexpected '5060'"),
        ("::1:5060:x", "write IPv6 with a port as [addr]:port"),
        ("bad host", "bad host name 'bad host'"),
        ("-lead.uctest.local", "bad host name"),
        ("a..b", "bad host name"),
    ],
)
def test_parse_proxy_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"^[^\n]*$") as info:
        parse_proxy(text)
    assert message in str(info.value)


@given(st.text(max_size=40))
def test_parse_proxy_never_fails_otherwise(text: str) -> None:
    try:
        proxy = parse_proxy(text)
    except ValueError:
        return
    assert proxy.host
    assert proxy.port is None or 1 <= proxy.port <= 65535


# --- plan_targets ----------------------------------------------------------------------------

SEED_SRV = {
    "_sips._tcp": [
        SrvRecord(10, 10, 5061, "exp1.uctest.local."),
        SrvRecord(10, 10, 5061, "exp2.uctest.local."),
    ],
    "_sip._tcp": [
        SrvRecord(10, 10, 5060, "exp1.uctest.local."),
        SrvRecord(10, 10, 5060, "exp2.uctest.local."),
    ],
}
SEED_ADDRESSES = {"exp1.uctest.local": [PEER1], "exp2.uctest.local": [PEER2]}


def test_plan_option1_srv() -> None:
    targets = plan_targets(
        parse_proxy("uctest.local"),
        transport="tcp",
        srv=SEED_SRV,
        addresses=SEED_ADDRESSES,
        rng=random.Random(7),
    )
    assert [(t.strategy, t.label) for t in targets] == [
        (1, "tls"),
        (1, "tls"),
        (2, "tcp"),
        (2, "tcp"),
    ]
    assert {t.display() for t in targets[:2]} == {f"{PEER1}:5061", f"{PEER2}:5061"}
    assert {t.display() for t in targets[2:]} == {f"{PEER1}:5060", f"{PEER2}:5060"}
    # TLS is not configured: RoomOS logs the strategy 1 targets but registers over strategy 2.
    assert [t for t in targets if usable(t, "tcp")] == targets[2:]
    assert [t for t in targets if usable(t, "tls")] == targets[:2]
    assert [t for t in targets if usable(t, "auto")] == targets


def test_plan_srv_names_match_case_and_trailing_dot_insensitively() -> None:
    targets = plan_targets(
        parse_proxy("uctest.local"),
        transport="tcp",
        srv={"_sip._udp": [SrvRecord(1, 0, 5062, "EXP1.uctest.local.")]},
        addresses={"exp1.uctest.local.": [PEER1]},
        rng=random.Random(1),
    )
    assert targets == [Target(3, "udp", PEER1, 5062, True)]


def test_plan_srv_follows_priority_and_expands_addresses_in_dns_order() -> None:
    targets = plan_targets(
        parse_proxy("uctest.local"),
        transport="tcp",
        srv={
            "_sip._tcp": [
                SrvRecord(20, 100, 5060, "backup.uctest.local."),
                SrvRecord(10, 0, 5070, "main.uctest.local."),
                SrvRecord(30, 0, 5060, "gone.uctest.local."),  # no address: no target
            ]
        },
        addresses={"main.uctest.local": ["10.0.0.2", "10.0.0.1"], "backup.uctest.local": ["::1"]},
        rng=random.Random(1),
    )
    assert [t.display() for t in targets] == ["10.0.0.2:5070", "10.0.0.1:5070", "[::1]:5060"]


def test_plan_option2_round_robin_a() -> None:
    targets = plan_targets(
        parse_proxy("habibexpc-cluster.uctest.local"),
        transport="tcp",
        srv={},
        addresses={"habibexpc-cluster.uctest.local": [PEER2, PEER1]},
        rng=random.Random(1),
    )
    assert targets == [
        Target(4, "tcp", PEER2, 5060, False),
        Target(4, "tcp", PEER1, 5060, False),
    ]
    assert [(t.label, t.display()) for t in targets] == [("unspec", PEER2), ("unspec", PEER1)]
    assert all(usable(t, "tcp") for t in targets)


def test_plan_no_a_fallback_when_srv_says_service_unavailable() -> None:
    targets = plan_targets(
        parse_proxy("uctest.local"),
        transport="tcp",
        srv={"_sip._tcp": [SrvRecord(0, 0, 0, ".")]},
        addresses={"uctest.local": [PEER1]},
        rng=random.Random(1),
    )
    assert targets == []


def test_plan_a_fallback_default_transport() -> None:
    def plan(transport: str) -> Target:
        [target] = plan_targets(
            parse_proxy("uctest.local"),
            transport=transport,  # type: ignore[arg-type]
            srv={"_sip._tcp": []},
            addresses={"uctest.local": [PEER1]},
            rng=random.Random(1),
        )
        return target

    assert plan("tls") == Target(4, "tls", PEER1, 5061, False)
    # RFC 3263 §4.1: a sip: URI with no transport and no SRV uses UDP.
    assert plan("auto") == Target(4, "udp", PEER1, 5060, False)


def test_plan_numeric_proxy() -> None:
    targets = plan_targets(
        parse_proxy(PEER1),
        transport="tcp",
        srv=SEED_SRV,
        addresses=SEED_ADDRESSES,
        rng=random.Random(1),
    )
    assert targets == [Target(0, "tcp", PEER1, 5060, False)]
    assert (targets[0].label, targets[0].display()) == ("unspec", PEER1)
    [with_port] = plan_targets(
        parse_proxy(f"{PEER1}:5070"), transport="tcp", srv={}, addresses={}, rng=random.Random(1)
    )
    assert with_port.display() == f"{PEER1}:5070"


def test_plan_explicit_port_skips_srv() -> None:
    targets = plan_targets(
        parse_proxy("uctest.local:5070"),
        transport="tcp",
        srv=SEED_SRV,
        addresses={"uctest.local": [PEER1]},
        rng=random.Random(1),
    )
    assert targets == [Target(4, "tcp", PEER1, 5070, True)]
    assert targets[0].display() == f"{PEER1}:5070"


# --- Resolver against a tiny DNS server --------------------------------------------------------

SERVER_ADDRESS = "127.0.54.1"
SILENT_ADDRESS = "127.0.54.2"
EXP1, EXP2 = "127.0.54.11", "127.0.54.12"
CLUSTER = "habibexpc-cluster.uctest.local"


@dataclass
class CannedZone(asyncio.DatagramProtocol):
    """Answers from a fixed record set: NXDOMAIN for unknown names, rotation for ``CLUSTER``."""

    glue: bool = False
    queries: list[tuple[str, str]] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None
    cluster: list[str] = field(default_factory=lambda: [EXP1, EXP2])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not isinstance: CPython 3.11's selector datagram transport does not subclass
        # asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def records(self, name: str) -> list[RR]:
        srv = {"_sips._tcp.uctest.local": 5061, "_sip._tcp.uctest.local": 5060}
        hosts = {"exp1.uctest.local": EXP1, "exp2.uctest.local": EXP2}
        if name in srv:
            return [
                RR(name, QTYPE.SRV, rdata=SRV(10, 10, srv[name], host), ttl=60) for host in hosts
            ]
        if name in hosts:
            return [RR(name, QTYPE.A, rdata=A(hosts[name]), ttl=60)]
        if name == CLUSTER:
            # Like the seed's DNS server: each answer starts with the next peer.
            answer = [RR(name, QTYPE.A, rdata=A(a), ttl=60) for a in self.cluster]
            self.cluster.append(self.cluster.pop(0))
            return answer
        if name == "uctest.local":
            return [RR(name, QTYPE.A, rdata=A(EXP1), ttl=60)]
        return []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = DNSRecord.parse(data)
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        self.queries.append((name, qtype))
        reply = request.reply()
        records = self.records(name)
        if not records:
            reply.header.rcode = RCODE.NXDOMAIN
        for rr in records:
            if QTYPE[rr.rtype] == qtype:
                reply.add_answer(rr)
                if self.glue and qtype == "SRV":
                    target = str(rr.rdata.target).rstrip(".")
                    reply.add_ar(*self.records(target))
        assert self.transport is not None
        self.transport.sendto(reply.pack(), addr)


class Silent(asyncio.DatagramProtocol):
    """A DNS server that reads queries and never answers (a paused or partitioned server)."""


async def serve(protocol: asyncio.DatagramProtocol, host: str) -> asyncio.DatagramTransport:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: protocol, local_addr=(host, 0))
    return transport


@pytest.fixture
async def zone() -> AsyncIterator[tuple[CannedZone, int]]:
    protocol = CannedZone()
    transport = await serve(protocol, SERVER_ADDRESS)
    yield protocol, transport.get_extra_info("sockname")[1]
    transport.close()


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    transport = await serve(Silent(), SILENT_ADDRESS)
    yield transport.get_extra_info("sockname")[1]
    transport.close()


async def test_locate_srv_end_to_end(zone: tuple[CannedZone, int]) -> None:
    server, port = zone
    resolver = Resolver([(SERVER_ADDRESS, port)], timeout=1.0, lifetime=2.0)
    targets = await resolver.locate(
        parse_proxy("uctest.local"), transport="tcp", rng=random.Random(5)
    )
    assert [(t.strategy, t.transport) for t in targets] == [
        (1, "tls"),
        (1, "tls"),
        (2, "tcp"),
        (2, "tcp"),
    ]
    assert {t.display() for t in targets} == {
        f"{EXP1}:5061",
        f"{EXP2}:5061",
        f"{EXP1}:5060",
        f"{EXP2}:5060",
    }
    assert [t.strategy for t in targets if usable(t, "tcp")] == [2, 2]
    # Three SRV queries (_sip._udp is NXDOMAIN), then one A per distinct SRV target.
    assert sorted(q for q in server.queries if q[1] == "SRV") == [
        ("_sip._tcp.uctest.local", "SRV"),
        ("_sip._udp.uctest.local", "SRV"),
        ("_sips._tcp.uctest.local", "SRV"),
    ]
    assert sorted(q for q in server.queries if q[1] == "A") == [
        ("exp1.uctest.local", "A"),
        ("exp2.uctest.local", "A"),
    ]


async def test_locate_uses_additional_section(zone: tuple[CannedZone, int]) -> None:
    server, port = zone
    server.glue = True
    resolver = Resolver([(SERVER_ADDRESS, port)], timeout=1.0, lifetime=2.0)
    targets = await resolver.locate(
        parse_proxy("uctest.local"), transport="tcp", rng=random.Random(5)
    )
    assert {t.host for t in targets} == {EXP1, EXP2}
    assert all(qtype == "SRV" for _, qtype in server.queries)
    # _sips._tcp and _sip._tcp answers carry the same glue; each target appears once.
    assert len(targets) == len(set(targets)) == 4


async def test_locate_round_robin_a_is_not_cached(zone: tuple[CannedZone, int]) -> None:
    _, port = zone
    resolver = Resolver([(SERVER_ADDRESS, port)], timeout=1.0, lifetime=2.0)
    proxy = parse_proxy(CLUSTER)
    first = await resolver.locate(proxy, transport="tcp", rng=random.Random(1))
    again = await resolver.locate(proxy, transport="tcp", rng=random.Random(1))
    assert [t.display() for t in first] == [EXP1, EXP2]
    # The "restarted locator" after a lost connection sees the next rotation: peer 2 first.
    assert [t.display() for t in again] == [EXP2, EXP1]
    assert {(t.strategy, t.label) for t in first + again} == {(4, "unspec")}


async def test_locate_explicit_port_queries_a_only(zone: tuple[CannedZone, int]) -> None:
    server, port = zone
    resolver = Resolver([(SERVER_ADDRESS, port)], timeout=1.0, lifetime=2.0)
    targets = await resolver.locate(
        parse_proxy("uctest.local:5070"), transport="tcp", rng=random.Random(1)
    )
    assert targets == [Target(4, "tcp", EXP1, 5070, True)]
    assert server.queries == [("uctest.local", "A")]


async def test_locate_numeric_proxy_sends_no_query(zone: tuple[CannedZone, int]) -> None:
    server, port = zone
    resolver = Resolver([(SERVER_ADDRESS, port)], timeout=1.0, lifetime=2.0)
    targets = await resolver.locate(parse_proxy(EXP2), transport="udp", rng=random.Random(1))
    assert targets == [Target(0, "udp", EXP2, 5060, False)]
    assert server.queries == []


async def test_locate_nxdomain_is_empty(zone: tuple[CannedZone, int]) -> None:
    server, port = zone
    resolver = Resolver([(SERVER_ADDRESS, port)], timeout=1.0, lifetime=2.0)
    targets = await resolver.locate(
        parse_proxy("nothing.uctest.local"), transport="tcp", rng=random.Random(1)
    )
    assert targets == []
    assert ("nothing.uctest.local", "A") in server.queries


async def test_locate_silent_server_gives_up_at_the_lifetime(silent_port: int) -> None:
    # One try would wait 600 s; the 0.3 s lifetime must end the lookup long before the guard.
    resolver = Resolver([(SILENT_ADDRESS, silent_port)], timeout=600.0, lifetime=0.3)
    with pytest.raises(LocateError, match=rf"DNS server {SILENT_ADDRESS}:{silent_port} did not"):
        async with asyncio.timeout(60):
            await resolver.locate(
                parse_proxy("uctest.local"), transport="tcp", rng=random.Random(1)
            )


def test_resolver_needs_a_server() -> None:
    with pytest.raises(ValueError, match="at least one DNS server"):
        Resolver([])


# --- DefaultTransport Auto: NAPTR, then SRV (RFC 3263 §4.1) ----------------------------------


def test_auto_follows_naptr_order_then_preference_to_srv() -> None:
    naptr = [
        NaptrRecord(10, 20, "S", "SIPS+D2T", "_sips._tcp.uctest.local."),
        NaptrRecord(10, 10, "S", "SIP+D2T", "_sip._tcp.uctest.local."),
        NaptrRecord(20, 10, "S", "SIP+D2U", "_sip._udp.uctest.local."),
        NaptrRecord(5, 10, "U", "E2U+sip", "!^.*$!sip:x@y!"),  # not an SRV pointer: skipped
    ]
    srv = {
        "_sips._tcp.uctest.local": [SrvRecord(10, 10, 5061, "exp1.uctest.local.")],
        "_sip._tcp.uctest.local": [SrvRecord(10, 10, 5060, "exp2.uctest.local.")],
        "_sip._udp.uctest.local": [SrvRecord(10, 10, 5060, "exp1.uctest.local.")],
    }
    addresses = {"exp1.uctest.local": [PEER1], "exp2.uctest.local": [PEER2]}
    targets = plan_targets(
        ProxyAddress("uctest.local", None),
        transport="auto",
        srv=srv,
        addresses=addresses,
        rng=random.Random(1),
        naptr=naptr,
    )
    # TCP first (same order, better preference), then TLS, then UDP (a later order).
    assert [(t.transport, t.host, t.name) for t in targets] == [
        ("tcp", PEER2, "exp2.uctest.local"),
        ("tls", PEER1, "exp1.uctest.local"),
        ("udp", PEER1, "exp1.uctest.local"),
    ]


def test_a_configured_transport_ignores_naptr() -> None:
    naptr = [NaptrRecord(10, 10, "S", "SIP+D2U", "_sip._udp.uctest.local.")]
    srv = {"_sip._tcp": [SrvRecord(10, 10, 5060, "exp1.uctest.local.")]}
    targets = plan_targets(
        ProxyAddress("uctest.local", None),
        transport="tcp",
        srv=srv,
        addresses={"exp1.uctest.local": [PEER1]},
        rng=random.Random(1),
        naptr=naptr,
    )
    assert [(t.strategy, t.transport) for t in targets] == [(2, "tcp")]
