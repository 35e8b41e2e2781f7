"""The answering core, driven with dnspython-built queries and parsed answers."""

from __future__ import annotations

import random
import struct

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import pytest

from dnsserver.authority import Authority
from dnsserver.config import RecordConfig, ZoneConfig
from tests.dnshelpers import CLIENT, ask, seed_zone, texts


@pytest.fixture
def authority() -> Authority:
    return Authority([seed_zone()], rng=random.Random(1))


def test_srv_answer_carries_targets_and_their_addresses(authority: Authority) -> None:
    response, info = ask(authority, "_sip._tcp.uctest.local", "SRV")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert not response.flags & dns.flags.RA
    assert texts(response) == [
        "_sip._tcp.uctest.local. SRV 10 10 5060 exp1.uctest.local.",
        "_sip._tcp.uctest.local. SRV 10 10 5060 exp2.uctest.local.",
    ]
    assert sorted(texts(response, "additional")) == [
        "exp1.uctest.local. A 127.0.0.11",
        "exp2.uctest.local. A 127.0.0.12",
    ]
    assert info.rcode == "NOERROR"
    assert info.name == "_sip._tcp.uctest.local"
    assert info.qtype == "SRV"
    assert info.answers == ["10 10 5060 exp1.uctest.local.", "10 10 5060 exp2.uctest.local."]
    assert info.client == "127.0.0.1:40000"


def test_round_robin_a_rotates_by_one_on_each_answer(authority: Authority) -> None:
    orders = [
        [rdata.to_text() for rdata in ask(authority, "habibexpc-cluster.uctest.local")[0].answer[0]]
        for _ in range(3)
    ]
    assert orders == [
        ["127.0.0.11", "127.0.0.12"],
        ["127.0.0.12", "127.0.0.11"],
        ["127.0.0.11", "127.0.0.12"],
    ]


def test_fixed_rotation_keeps_order() -> None:
    authority = Authority([seed_zone(rotation={"habibexpc-cluster": "fixed"})])
    first = ask(authority, "habibexpc-cluster.uctest.local")[1].answers
    second = ask(authority, "habibexpc-cluster.uctest.local")[1].answers
    assert first == second == ["127.0.0.11", "127.0.0.12"]


def test_random_rotation_uses_the_given_rng() -> None:
    peers = tuple(f"127.0.0.{n}" for n in range(11, 19))
    authority = Authority(
        [seed_zone(peers, rotation={"habibexpc-cluster": "random"})], rng=random.Random(7)
    )
    orders = {tuple(ask(authority, "habibexpc-cluster.uctest.local")[1].answers) for _ in range(5)}
    assert len(orders) > 1
    assert all(sorted(order) == sorted(peers) for order in orders)


def test_nxdomain_carries_the_soa_with_negative_ttl(authority: Authority) -> None:
    response, info = ask(authority, "nope.uctest.local")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA
    assert response.answer == []
    [soa] = response.authority
    assert soa.rdtype == dns.rdatatype.SOA
    assert soa.ttl == 60
    assert info.rcode == "NXDOMAIN"


def test_nodata_carries_the_soa(authority: Authority) -> None:
    response, _ = ask(authority, "exp1.uctest.local", "AAAA")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []
    assert response.authority[0].rdtype == dns.rdatatype.SOA


def test_negative_ttl_is_min_of_soa_ttl_and_minimum() -> None:
    zone = ZoneConfig(
        origin="uctest.local",
        records=[
            RecordConfig(name="@", type="SOA", ttl=300, data="ns1 hostmaster 7 3600 600 86400 30"),
            RecordConfig(name="@", type="NS", data="ns1"),
        ],
    )
    response, _ = ask(Authority([zone]), "x.uctest.local")
    assert response.authority[0].ttl == 30


def test_empty_non_terminal_is_nodata_not_nxdomain(authority: Authority) -> None:
    response, _ = ask(authority, "_tcp.uctest.local", "SRV")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []
    assert response.authority[0].rdtype == dns.rdatatype.SOA


def test_names_are_case_insensitive_and_the_question_is_echoed(authority: Authority) -> None:
    response, _ = ask(authority, "HabibExpC-Cluster.UCTEST.local")
    assert str(response.question[0].name) == "HabibExpC-Cluster.UCTEST.local."
    assert len(response.answer[0]) == 2


def test_names_outside_our_zones_are_refused(authority: Authority) -> None:
    response, info = ask(authority, "www.example.com")
    assert response.rcode() == dns.rcode.REFUSED
    assert not response.flags & dns.flags.AA
    assert info.rcode == "REFUSED"


def test_zone_transfers_and_other_classes_are_refused(authority: Authority) -> None:
    assert ask(authority, "uctest.local", "AXFR")[0].rcode() == dns.rcode.REFUSED
    chaos = ask(authority, "uctest.local", "TXT", rdclass=dns.rdataclass.CH)[0]
    assert chaos.rcode() == dns.rcode.REFUSED


def test_synthesized_soa_and_ns_answer_at_the_apex(authority: Authority) -> None:
    assert texts(ask(authority, "uctest.local", "SOA")[0]) == [
        "uctest.local. SOA ns1.uctest.local. hostmaster.uctest.local. 1 3600 600 86400 60"
    ]
    assert texts(ask(authority, "uctest.local", "NS")[0]) == ["uctest.local. NS ns1.uctest.local."]


def test_other_record_types() -> None:
    zone = ZoneConfig(
        origin="uctest.local",
        records=[
            RecordConfig(name="exp1", type="AAAA", data="fd00::11"),
            RecordConfig(name="@", type="TXT", data='"v=siplab" "two words"'),
            RecordConfig(
                name="@", type="NAPTR", data='10 50 "s" "SIP+D2T" "" _sip._tcp.uctest.local.'
            ),
        ],
    )
    authority = Authority([zone])
    assert ask(authority, "exp1.uctest.local", "AAAA")[1].answers == ["fd00::11"]
    assert texts(ask(authority, "uctest.local", "TXT")[0]) == [
        'uctest.local. TXT "v=siplab" "two words"'
    ]
    assert texts(ask(authority, "uctest.local", "NAPTR")[0]) == [
        'uctest.local. NAPTR 10 50 "s" "SIP+D2T" "" _sip._tcp.uctest.local.'
    ]


def test_ptr_zone() -> None:
    zone = ZoneConfig(
        origin="0.0.127.in-addr.arpa",
        records=[RecordConfig(name="11", type="PTR", data="exp1.uctest.local.")],
    )
    response, _ = ask(Authority([zone]), "11.0.0.127.in-addr.arpa", "PTR")
    assert texts(response) == ["11.0.0.127.in-addr.arpa. PTR exp1.uctest.local."]


def test_cname_chain_is_followed_inside_the_zone() -> None:
    zone = seed_zone()
    zone.records += [
        RecordConfig(name="sip", type="CNAME", data="proxy"),
        RecordConfig(name="proxy", type="CNAME", data="habibexpc-cluster"),
        RecordConfig(name="loop1", type="CNAME", data="loop2"),
        RecordConfig(name="loop2", type="CNAME", data="loop1"),
        RecordConfig(name="away", type="CNAME", data="www.example.com."),
        RecordConfig(name="dangling", type="CNAME", data="gone"),
    ]
    authority = Authority([zone])
    response, info = ask(authority, "sip.uctest.local")
    assert texts(response) == [
        "sip.uctest.local. CNAME proxy.uctest.local.",
        "proxy.uctest.local. CNAME habibexpc-cluster.uctest.local.",
        "habibexpc-cluster.uctest.local. A 127.0.0.11",
        "habibexpc-cluster.uctest.local. A 127.0.0.12",
    ]
    assert info.answers[0] == "proxy.uctest.local."
    assert ask(authority, "sip.uctest.local", "CNAME")[1].answers == ["proxy.uctest.local."]
    assert ask(authority, "loop1.uctest.local")[0].rcode() == dns.rcode.NOERROR
    assert texts(ask(authority, "away.uctest.local")[0]) == [
        "away.uctest.local. CNAME www.example.com."
    ]
    dangling, _ = ask(authority, "dangling.uctest.local")
    assert dangling.rcode() == dns.rcode.NXDOMAIN  # RFC 6604: the rcode of the last name
    assert len(dangling.answer) == 1


def test_several_questions_are_formerr(authority: Authority) -> None:
    query = dns.message.make_query("exp1.uctest.local", "A")
    wire = bytearray(query.to_wire())
    question = wire[12:]
    wire[4:6] = struct.pack("!H", 2)
    wire += question
    response_wire, info = authority.answer(bytes(wire), CLIENT, "udp")
    assert response_wire is not None
    assert info is not None
    assert response_wire[:2] == wire[:2]
    assert dns.message.from_wire(response_wire).rcode() == dns.rcode.FORMERR
    assert info.rcode == "FORMERR"


def test_no_question_and_garbage_are_formerr(authority: Authority) -> None:
    header_only = struct.pack("!HHHHHH", 0xBEEF, 0x0100, 0, 0, 0, 0)
    garbage = struct.pack("!HHHHHH", 0xBEEF, 0x0100, 1, 0, 0, 0) + b"\x40junk"
    for query in (header_only, garbage):
        wire, _ = authority.answer(query, CLIENT, "udp")
        assert wire is not None
        response = dns.message.from_wire(wire)
        assert response.id == 0xBEEF
        assert response.rcode() == dns.rcode.FORMERR


def test_short_packets_and_responses_are_dropped(authority: Authority) -> None:
    assert authority.answer(b"\x01\x02\x03", CLIENT, "udp") == (None, None)
    response = dns.message.make_response(dns.message.make_query("exp1.uctest.local", "A"))
    assert authority.answer(response.to_wire(), CLIENT, "udp") == (None, None)


def test_other_opcodes_are_notimp(authority: Authority) -> None:
    query = dns.message.make_query("uctest.local", "SOA")
    query.set_opcode(dns.opcode.NOTIFY)
    wire, info = authority.answer(query.to_wire(), CLIENT, "udp")
    assert wire is not None
    assert info is not None
    response = dns.message.from_wire(wire)
    assert response.rcode() == dns.rcode.NOTIMP
    assert response.opcode() == dns.opcode.NOTIFY
    assert info.rcode == "NOTIMP"


def _big_zone(count: int) -> ZoneConfig:
    records = [RecordConfig(name="big", type="A", data=f"127.0.1.{n}") for n in range(1, count + 1)]
    return ZoneConfig(origin="uctest.local", records=records, rotation={"big": "fixed"})


def test_udp_without_edns_is_limited_to_512_bytes_and_sets_tc() -> None:
    authority = Authority([_big_zone(40)])  # 40 * 16 bytes of answers: over 512
    response, info = ask(authority, "big.uctest.local")
    assert response.flags & dns.flags.TC
    assert response.answer == []
    assert info.truncated
    tcp, tcp_info = ask(authority, "big.uctest.local", transport="tcp")
    assert not tcp.flags & dns.flags.TC
    assert len(tcp.answer[0]) == 40
    assert not tcp_info.truncated


def test_edns_payload_size_is_honoured_and_opt_echoed() -> None:
    authority = Authority([_big_zone(40)])
    response, _ = ask(authority, "big.uctest.local", use_edns=0, payload=4096)
    assert not response.flags & dns.flags.TC
    assert len(response.answer[0]) == 40
    assert response.edns == 0
    assert response.payload == 1232
    small, _ = ask(authority, "big.uctest.local", use_edns=0, payload=100)  # floor is 512
    assert small.flags & dns.flags.TC
    assert small.edns == 0
    fits, _ = ask(Authority([_big_zone(20)]), "big.uctest.local", use_edns=0, payload=100)
    assert not fits.flags & dns.flags.TC


def test_no_opt_in_the_answer_without_one_in_the_query(authority: Authority) -> None:
    response, _ = ask(authority, "exp1.uctest.local")
    assert response.edns == -1


def test_unknown_edns_version_is_badvers(authority: Authority) -> None:
    response, info = ask(authority, "exp1.uctest.local", use_edns=1)
    assert response.rcode() == dns.rcode.BADVERS
    assert info.rcode == "BADVERS"


def test_additional_data_is_dropped_before_setting_tc() -> None:
    peers = tuple(f"127.0.2.{n}" for n in range(1, 11))
    authority = Authority([seed_zone(peers)])
    response, info = ask(authority, "_sip._tcp.uctest.local", "SRV")
    assert not response.flags & dns.flags.TC
    assert len(response.answer[0]) == 10
    assert response.additional == []
    assert not info.truncated
