"""The server's fast path: kept answers (rotation included), counters, event control, metrics."""

from __future__ import annotations

import dns.message
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import ValidationError

from dnsserver.authority import Authority
from dnsserver.config import DnsServerConfig
from dnsserver.control import ZoneEditor, set_fault
from dnsserver.metrics import DnsCollector, parse_address
from dnsserver.server import DnsServer, _UdpProtocol
from emulator.eventrate import RateGovernor
from emulator.events import EventList
from tests.dnshelpers import CLIENT, seed_server, seed_zone

CLUSTER = "habibexpc-cluster.uctest.local"


def answers_of(wire: bytes) -> list[str]:
    return [rdata.to_text() for rrset in dns.message.from_wire(wire).answer for rdata in rrset]


def test_cached_rotating_answers_rotate_exactly_like_fresh_ones() -> None:
    cached, fresh = Authority([seed_zone()]), Authority([seed_zone()])
    query = dns.message.make_query(CLUSTER, "A").to_wire()
    seen_cached, seen_fresh = [], []
    for _ in range(7):
        wire, _ = cached.answer(query, CLIENT, "udp")
        assert wire is not None
        seen_cached.append(answers_of(wire))
        fresh.zones_changed()  # nothing kept: every answer built afresh
        wire, _ = fresh.answer(query, CLIENT, "udp")
        assert wire is not None
        seen_fresh.append(answers_of(wire))
    assert seen_cached == seen_fresh
    assert seen_cached[0] != seen_cached[1]
    assert cached.cached("udp", query[2:]) is not None  # served from the cache by now


def test_rotation_state_is_shared_between_differently_spelled_queries() -> None:
    authority = Authority([seed_zone()])
    lower = dns.message.make_query(CLUSTER, "A").to_wire()
    upper = dns.message.make_query(CLUSTER.upper(), "A").to_wire()
    firsts = []
    for query in [lower, upper] * 4:
        wire, _ = authority.answer(query, CLIENT, "udp")
        assert wire is not None
        firsts.append(answers_of(wire)[0])
    assert firsts == ["127.0.0.11", "127.0.0.12"] * 4


def test_change_and_fault_invalidate_kept_rotating_answers() -> None:
    authority = Authority([seed_zone()])
    events = EventList()
    query = dns.message.make_query(CLUSTER, "A").to_wire()
    for _ in range(3):
        authority.answer(query, CLIENT, "udp")
    ZoneEditor(events, authority).add(
        {"records": [{"name": "habibexpc-cluster", "type": "A", "data": "127.0.0.13"}]}
    )
    assert authority.cached("udp", query[2:]) is None
    wire, _ = authority.answer(query, CLIENT, "udp")
    assert wire is not None
    assert sorted(answers_of(wire)) == ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
    set_fault(events, authority, {"mode": "servfail"})
    assert authority.cached("udp", query[2:]) is None
    assert authority.changes == 2


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def is_closing(self) -> bool:
        return False


def udp_server(**config: object) -> tuple[DnsServer, _UdpProtocol, FakeTransport, EventList]:
    events = EventList()
    server = DnsServer(seed_server("127.0.0.1").model_copy(update=config), events)
    protocol = _UdpProtocol(server)
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return server, protocol, transport, events


@pytest.mark.parametrize(("mode", "expected"), [("all", 10), ("sample", 2), ("off", 0)])
def test_events_all_sample_off(mode: str, expected: int) -> None:
    server, protocol, transport, events = udp_server(events=mode, event_sample=5)
    for index in range(10):
        query = dns.message.make_query("exp1.uctest.local", "A", id=index)
        protocol.datagram_received(query.to_wire(), ("127.0.0.9", 4000 + index))
    assert [dns.message.from_wire(wire).id for wire, _ in transport.sent] == list(range(10))
    query_events = [fields for kind, fields in events.events if kind == "dns.query"]
    assert len(query_events) == expected
    if mode == "all":
        assert [e["client"] for e in query_events] == [f"127.0.0.9:{4000 + i}" for i in range(10)]
    assert server.status({})["queries_by_rcode"] == {"NOERROR": 10}
    assert server.status({})["cache_hits"] == 9


def test_events_auto_counts_every_query_and_samples_under_load() -> None:
    clock = [0.0]
    governor = RateGovernor(threshold=5, window=1.0, clock=lambda: clock[0])
    events = EventList()
    config = seed_server("127.0.0.1").model_copy(update={"events": "auto"})
    server = DnsServer(config, events, governor=governor)
    protocol = _UdpProtocol(server)
    protocol.connection_made(FakeTransport())  # type: ignore[arg-type]
    query = dns.message.make_query("exp1.uctest.local", "A").to_wire()
    for _ in range(100):  # all within one window: over the threshold
        protocol.datagram_received(query, CLIENT)
    sampled = events.of("dns.query")
    assert 6 <= len(sampled) < 30
    assert [e.get("sample", 1) for e in sampled[:8]] == [1] * 6 + [2, 2]
    clock[0] += 1.0
    assert governor.tick() == ({"dns.query": 100}, 1.0)
    for _ in range(3):  # a quiet window after the busy one closed: every query again
        clock[0] += 1.0
        governor.tick()
        protocol.datagram_received(query, CLIENT)
    assert [e.get("sample", 1) for e in events.of("dns.query")[len(sampled) :]] == [1, 1, 1]


def test_counters_reach_the_collector() -> None:
    server, protocol, _, _ = udp_server(events="off")
    for name in ("exp1.uctest.local", "exp1.uctest.local", "nosuch.uctest.local"):
        protocol.datagram_received(dns.message.make_query(name, "A").to_wire(), CLIENT)
    protocol.datagram_received(b"\x00", CLIENT)  # a runt: dropped
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DnsCollector(server))
    text = generate_latest(registry).decode()
    assert 'siplab_dns_queries_total{rcode="NOERROR",transport="udp"} 2.0' in text
    assert 'siplab_dns_queries_total{rcode="NXDOMAIN",transport="udp"} 1.0' in text
    assert 'siplab_dns_queries_by_type_total{qtype="A"} 3.0' in text
    assert 'siplab_dns_cache_hits_total{transport="udp"} 1.0' in text
    assert 'siplab_dns_cache_misses_total{transport="udp"} 2.0' in text
    assert "siplab_dns_dropped_total 1.0" in text


def test_update_opcode_never_takes_the_fast_path() -> None:
    _, protocol, transport, _ = udp_server()
    query = dns.message.make_query("exp1.uctest.local", "A")
    protocol.datagram_received(query.to_wire(), CLIENT)
    wire = bytearray(query.to_wire())
    wire[2] |= 5 << 3  # same bytes, opcode UPDATE
    protocol.datagram_received(bytes(wire), CLIENT)
    assert dns.message.from_wire(transport.sent[1][0]).opcode() == 5


def test_config_fields_and_metrics_address() -> None:
    config = DnsServerConfig(address="127.0.0.1", zones=[seed_zone()])
    assert (config.events, config.event_sample, config.metrics) == ("auto", 100, None)
    with pytest.raises(ValidationError):
        DnsServerConfig(address="127.0.0.1", zones=[seed_zone()], events="some")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        DnsServerConfig(address="127.0.0.1", zones=[seed_zone()], event_sample=0)
    assert parse_address("127.0.0.10:9153") == ("127.0.0.10", 9153)
    with pytest.raises(ValueError, match="ADDRESS:PORT"):
        parse_address("9153")
