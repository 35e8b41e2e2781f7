"""Shared by the DNS server tests: the seed-like zone and dnspython query helpers."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import dns.message
import dns.rdatatype

from dnsserver.authority import Authority, QueryInfo
from dnsserver.config import DnsServerConfig, RecordConfig, ZoneConfig
from emulator.lab.testing import ComponentUnderTest

CLIENT = ("127.0.0.1", 40000)
REPO = Path(__file__).resolve().parent.parent


def seed_zone(peers: tuple[str, ...] = ("127.0.0.11", "127.0.0.12"), **extra: Any) -> ZoneConfig:
    """``uctest.local`` as the seed configures it: SRV per peer, and the cluster A name."""
    records = []
    for index, address in enumerate(peers, start=1):
        records += [
            RecordConfig(name="_sips._tcp", type="SRV", data=f"10 10 5061 exp{index}"),
            RecordConfig(name="_sip._tcp", type="SRV", data=f"10 10 5060 exp{index}"),
            RecordConfig(name=f"exp{index}", type="A", data=address),
            RecordConfig(name="habibexpc-cluster", type="A", data=address),
        ]
    return ZoneConfig(origin="uctest.local", records=records, **extra)


def seed_server(address: str, port: int = 1053) -> DnsServerConfig:
    return DnsServerConfig(address=address, port=port, zones=[seed_zone()])


def ask(
    authority: Authority,
    name: str,
    rdtype: str = "A",
    *,
    transport: str = "udp",
    **query_args: Any,
) -> tuple[dns.message.Message, QueryInfo]:
    query = dns.message.make_query(name, rdtype, **query_args)
    wire, info = authority.answer(query.to_wire(), CLIENT, transport)  # type: ignore[arg-type]
    assert wire is not None
    assert info is not None
    return dns.message.from_wire(wire), info


def texts(response: dns.message.Message, section: str = "answer") -> list[str]:
    """Every record of a section as 'name type rdata' text, in wire order."""
    return [
        f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rdata.to_text()}"
        for rrset in getattr(response, section)
        for rdata in rrset
    ]


def _header(qdcount: int = 1, ancount: int = 0, nscount: int = 0, arcount: int = 0) -> bytes:
    return struct.pack("!HHHHHH", 0x1234, 0x0100, qdcount, ancount, nscount, arcount)


# Hand-made hostile queries, each with a readable header (so FORMERR is the right answer).
HOSTILE = {
    # A name that is a pointer to itself, and two pointers pointing at each other.
    "compression loop": _header() + b"\xc0\x0c" + b"\x00\x01\x00\x01",
    "pointer ping-pong": _header() + b"\xc0\x0e\xc0\x0c" + b"\x00\x01\x00\x01",
    "pointer past the end": _header() + b"\xc0\xff" + b"\x00\x01\x00\x01",
    # Counts far beyond what the packet holds.
    "huge counts": _header(65535, 65535, 65535, 65535) + b"\x00\x00\x01\x00\x01",
    "question count 0": _header(qdcount=0),
    "label longer than the packet": _header() + b"\x3fabc",
    "name over 255 octets": _header() + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01",
    "truncated question": _header() + b"\x03www\x07uctest",
}


class DnsProcess(ComponentUnderTest):
    """``python -m dnsserver`` as a real subprocess; every wait bounded, ``stop`` leaves none."""

    @classmethod
    async def start(cls, config: DnsServerConfig) -> DnsProcess:
        return await cls.launch("dnsserver", config.model_dump_json())
