"""Shared by the DNS server tests: the seed-like zone and dnspython query helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dns.message
import dns.rdatatype

from dnsserver.authority import Authority, QueryInfo
from dnsserver.config import DnsServerConfig, RecordConfig, ZoneConfig
from emulator.testing import ComponentUnderTest

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


class DnsProcess(ComponentUnderTest):
    """``python -m dnsserver`` as a real subprocess; every wait bounded, ``stop`` leaves none."""

    @classmethod
    async def start(cls, config: DnsServerConfig) -> DnsProcess:
        return await cls.launch("dnsserver", config.model_dump_json())
