"""Untrusted packets never raise out of the answering core (hypothesis)."""

from __future__ import annotations

import random

import dns.message
import dns.rcode
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsserver.authority import Authority
from tests.dnshelpers import CLIENT, HOSTILE, seed_zone

AUTHORITY = Authority([seed_zone()], rng=random.Random(3))
VALID = [
    dns.message.make_query(name, rdtype, use_edns=edns).to_wire()
    for name, rdtype in [
        ("_sip._tcp.uctest.local", "SRV"),
        ("habibexpc-cluster.uctest.local", "A"),
        ("nope.uctest.local", "AAAA"),
        ("example.com", "NS"),
    ]
    for edns in (None, 0)
]


def _check(packet: bytes, transport: str) -> None:
    wire, info = AUTHORITY.answer(packet, CLIENT, transport)  # type: ignore[arg-type]
    if wire is not None:
        assert wire[:2] == packet[:2]
        assert wire[2] & 0x80  # QR
        assert info is not None
        assert info.rcode != "SERVFAIL", "an internal error was caught: the core has a bug"
        if transport == "udp":
            assert len(wire) <= 65535


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600), st.sampled_from(["udp", "tcp"]))
def test_random_bytes_never_raise(packet: bytes, transport: str) -> None:
    _check(packet, transport)


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
    st.integers(0, 80),
    st.binary(max_size=20),
)
def test_mutated_queries_never_raise(
    query: bytes, flips: list[tuple[int, int]], cut: int, tail: bytes
) -> None:
    packet = bytearray(query)
    for position, value in flips:
        if position < len(packet):
            packet[position] = value
    packet = packet[: max(0, len(packet) - cut)] + tail
    _check(bytes(packet), "udp")


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_hostile_queries_get_formerr(name: str, transport: str) -> None:
    packet = HOSTILE[name]
    _check(packet, transport)
    wire, info = AUTHORITY.answer(packet, CLIENT, transport)  # type: ignore[arg-type]
    assert wire is not None
    assert info is not None
    assert info.rcode == "FORMERR"
    assert wire[3] & 0x0F == dns.rcode.FORMERR
