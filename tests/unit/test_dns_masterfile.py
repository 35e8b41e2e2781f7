"""RFC 1035 master files as zone data."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from dnsserver.authority import Authority
from dnsserver.config import ZoneConfig
from tests.dnshelpers import ask, texts

ZONE = """\
$ORIGIN uctest.local.
$TTL 30
@   IN SOA dns hostmaster (
        2024010101 ; serial
        3600 600 86400 20 )
    IN NS dns
dns             A     127.0.0.10
_sip._tcp  60   SRV   10 10 5060 exp1
                SRV   10 10 5060 exp2.uctest.local.
exp1       IN 1h A    127.0.0.11
exp2            A     127.0.0.12
habibexpc-cluster A   127.0.0.11
habibexpc-cluster A   127.0.0.12
@               TXT   "v=siplab; not a comment" two
$ORIGIN sub.uctest.local.
deep            A     127.0.0.99
"""


@pytest.fixture
def zone_file(tmp_path: Path) -> Path:
    path = tmp_path / "uctest.local.zone"
    path.write_text(ZONE)
    return path


def test_master_file_is_served(zone_file: Path) -> None:
    authority = Authority([ZoneConfig(origin="uctest.local", file=zone_file)])
    srv, _ = ask(authority, "_sip._tcp.uctest.local", "SRV")
    assert texts(srv) == [
        "_sip._tcp.uctest.local. SRV 10 10 5060 exp1.uctest.local.",
        "_sip._tcp.uctest.local. SRV 10 10 5060 exp2.uctest.local.",
    ]
    assert srv.answer[0].ttl == 30  # the second SRV takes $TTL; the RRset has the shortest
    exp1, _ = ask(authority, "exp1.uctest.local")
    assert exp1.answer[0].ttl == 3600
    dns_a, _ = ask(authority, "dns.uctest.local")
    assert dns_a.answer[0].ttl == 30
    assert ask(authority, "deep.sub.uctest.local")[1].answers == ["127.0.0.99"]
    assert ask(authority, "uctest.local", "TXT")[1].answers == ['"v=siplab; not a comment" "two"']
    nx, _ = ask(authority, "nope.uctest.local")
    assert nx.authority[0].ttl == 20
    assert ask(authority, "uctest.local", "NS")[1].answers == ["dns.uctest.local."]
    first = ask(authority, "habibexpc-cluster.uctest.local")[1].answers
    assert ask(authority, "habibexpc-cluster.uctest.local")[1].answers == first[::-1]


def test_file_and_inline_records_combine(zone_file: Path) -> None:
    zone = ZoneConfig.model_validate(
        {
            "origin": "uctest.local",
            "file": str(zone_file),
            "records": [{"name": "exp3", "type": "A", "data": "127.0.0.13"}],
        }
    )
    assert [r.type for r in zone.records] == ["A"]  # the file has SOA and NS: none synthesized
    assert ask(Authority([zone]), "exp3.uctest.local")[1].answers == ["127.0.0.13"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("exp1 A 127.0.0.300\n", ":1: A data must be an IPv4 address"),
        ("\n\nexp1 MX 10 mail\n", ":3: unsupported record type 'MX'"),
        ("exp1 CH A 127.0.0.1\n", "only IN"),
        ("   A 127.0.0.1\n", "needs an owner name"),
        ("$INCLUDE other.zone\n", r"\$INCLUDE is not supported"),
        ("@ SOA ns hm ( 1 2 3 4 5\n", "never closed"),
        ("exp1.example.com. A 127.0.0.1\n", "outside the zone"),
    ],
)
def test_bad_master_files_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.zone"
    path.write_text(text)
    with pytest.raises(ValidationError, match=message):
        ZoneConfig(origin="uctest.local", file=path)


def test_missing_file_is_a_validation_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot read zone file"):
        ZoneConfig(origin="uctest.local", file=tmp_path / "absent.zone")
