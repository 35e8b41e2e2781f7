"""Configuration validation: bad input fails at the edge with a message naming the problem."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from dnsserver.config import DnsServerConfig, RecordConfig, ZoneConfig


def _zone(*records: dict[str, Any], **fields: Any) -> ZoneConfig:
    return ZoneConfig.model_validate({"origin": "uctest.local", "records": list(records), **fields})


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"name": "_sip._tcp", "type": "SRV", "data": "10 10 exp1"},
            "SRV data must be 'priority weight port target'",
        ),
        (
            {"name": "_sip._tcp", "type": "SRV", "data": "10 10 99999 exp1"},
            "SRV port must be a number 0-65535",
        ),
        ({"name": "exp1", "type": "A", "data": "127.0.0.300"}, "A data must be an IPv4 address"),
        ({"name": "exp1", "type": "A", "data": "127.0.0.1 127.0.0.2"}, "one IPv4 address"),
        ({"name": "exp1", "type": "AAAA", "data": "127.0.0.1"}, "must be an IPv6 address"),
        ({"name": "www", "type": "CNAME", "data": "a..b"}, "empty label"),
        ({"name": "x", "type": "TXT", "data": '"unterminated'}, "unterminated quoted string"),
        ({"name": "@", "type": "SOA", "data": "ns1 hostmaster 1 2 3"}, "SOA data must be"),
        ({"name": "@", "type": "NAPTR", "data": '10 "s" x'}, "NAPTR data must be"),
        ({"name": "bad name", "type": "A", "data": "127.0.0.1"}, "bad name 'bad name'"),
        ({"name": "x" * 64, "type": "A", "data": "127.0.0.1"}, "longer than 63"),
        ({"name": "exp1", "type": "MX", "data": "10 mail"}, "type"),
        ({"name": "exp1", "type": "A", "ttl": -1, "data": "127.0.0.1"}, "ttl"),
        ({"name": "exp1", "type": "A", "ttl": 2**31, "data": "127.0.0.1"}, "ttl"),
    ],
)
def test_bad_records_fail_with_a_clear_message(record: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RecordConfig.model_validate(record)


def test_lower_case_type_is_accepted() -> None:
    assert RecordConfig(name="exp1", type="a", data="127.0.0.1").type == "A"  # type: ignore[arg-type]


def test_zone_rules() -> None:
    with pytest.raises(ValidationError, match="outside the zone"):
        _zone({"name": "exp1.example.com.", "type": "A", "data": "127.0.0.1"})
    with pytest.raises(ValidationError, match="CNAME must stand alone"):
        _zone(
            {"name": "www", "type": "CNAME", "data": "exp1"},
            {"name": "www", "type": "A", "data": "127.0.0.1"},
        )
    with pytest.raises(ValidationError, match="only the origin"):
        _zone({"name": "sub", "type": "SOA", "data": "ns1 hm 1 2 3 4 5"})
    with pytest.raises(ValidationError, match="2 SOA records"):
        _zone(
            {"name": "@", "type": "SOA", "data": "ns1 hm 1 2 3 4 5"},
            {"name": "@", "type": "SOA", "data": "ns2 hm 1 2 3 4 5"},
        )
    with pytest.raises(ValidationError, match="origin"):
        ZoneConfig(origin="@")
    with pytest.raises(ValidationError, match="rotation"):
        _zone(rotation={"bad name": "rotate"})
    with pytest.raises(ValidationError, match="rotate"):
        _zone(rotation={"cluster": "sideways"})


def test_soa_and_ns_are_synthesized_once() -> None:
    zone = _zone({"name": "exp1", "type": "A", "data": "127.0.0.11"}, ttl=30)
    apex = [(r.type, r.data) for r in zone.records if r.name == "@"]
    assert apex == [
        ("SOA", "ns1.uctest.local. hostmaster.uctest.local. 1 3600 600 86400 30"),
        ("NS", "ns1.uctest.local."),
    ]
    again = ZoneConfig.model_validate_json(zone.model_dump_json())
    assert again.records == zone.records


def test_existing_soa_is_kept() -> None:
    zone = _zone({"name": "@", "type": "SOA", "data": "dns hostmaster 5 1 1 1 1"})
    assert [r.type for r in zone.records] == ["SOA", "NS"]


def test_duplicate_zones_are_rejected() -> None:
    with pytest.raises(ValidationError, match="configured more than once"):
        DnsServerConfig.model_validate(
            {
                "address": "127.0.0.10",
                "zones": [{"origin": "uctest.local"}, {"origin": "UCTEST.local."}],
            }
        )


def test_server_defaults_and_bad_address() -> None:
    config = DnsServerConfig.model_validate({"address": "127.0.0.10", "zones": []})
    assert (config.name, config.port) == ("dns", 1053)
    with pytest.raises(ValidationError, match="address"):
        DnsServerConfig.model_validate({"address": "127.0.0.300", "zones": []})
