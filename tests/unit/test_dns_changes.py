"""Runtime changes (control ops), faults, and the response cache of the core."""

from __future__ import annotations

import dns.message
import dns.rcode
import pytest

from dnsserver.authority import Authority
from dnsserver.control import ZoneEditor, set_fault
from emulator.component import ControlError
from emulator.events import EventList
from tests.dnshelpers import CLIENT, ask, seed_zone

CLUSTER = "habibexpc-cluster.uctest.local"


@pytest.fixture
def authority() -> Authority:
    return Authority([seed_zone()])


@pytest.fixture
def events() -> EventList:
    return EventList()


@pytest.fixture
def editor(authority: Authority, events: EventList) -> ZoneEditor:
    return ZoneEditor(events, authority)


def test_add_record_is_served_and_reported(
    authority: Authority, editor: ZoneEditor, events: EventList
) -> None:
    assert ask(authority, "exp3.uctest.local")[0].rcode() == dns.rcode.NXDOMAIN
    assert editor.add({"records": [{"name": "exp3", "type": "A", "data": "127.0.0.13"}]}) == {
        "added": 1
    }
    assert ask(authority, "exp3.uctest.local")[1].answers == ["127.0.0.13"]
    [change] = events.of("dns.change")
    assert change["op"] == "add"
    assert change["zone"] == "uctest.local"
    assert change["records"] == ["exp3.uctest.local. 60 IN A 127.0.0.13"]


def test_remove_by_name_type_and_data(authority: Authority, editor: ZoneEditor) -> None:
    editor.remove({"name": "_sip._tcp", "type": "SRV", "data": "10 10 5060 exp1"})
    assert ask(authority, "_sip._tcp.uctest.local", "SRV")[1].answers == [
        "10 10 5060 exp2.uctest.local."
    ]
    editor.remove({"name": "habibexpc-cluster"})
    assert ask(authority, CLUSTER)[0].rcode() == dns.rcode.NXDOMAIN
    with pytest.raises(ControlError, match="no record matches"):
        editor.remove({"name": "habibexpc-cluster"})
    with pytest.raises(ControlError, match="no SOA"):
        editor.remove({"name": "@", "type": "SOA"})


def test_replace_swaps_one_rrset(authority: Authority, editor: ZoneEditor) -> None:
    editor.replace({"records": [{"name": "habibexpc-cluster", "type": "A", "data": "127.0.0.12"}]})
    assert ask(authority, CLUSTER)[1].answers == ["127.0.0.12"]
    assert ask(authority, "exp1.uctest.local")[1].answers == ["127.0.0.11"]


def test_set_ttl(authority: Authority, editor: ZoneEditor, events: EventList) -> None:
    editor.set_ttl({"name": "habibexpc-cluster", "ttl": 5})
    assert ask(authority, CLUSTER)[0].answer[0].ttl == 5
    assert ask(authority, "exp1.uctest.local")[0].answer[0].ttl == 60
    editor.set_ttl({"ttl": 10})
    assert ask(authority, "exp1.uctest.local")[0].answer[0].ttl == 10
    assert events.of("dns.change")[-1]["ttl"] == 10
    with pytest.raises(ControlError, match="ttl"):
        editor.set_ttl({"ttl": -1})


def test_bad_change_requests_leave_the_zone_alone(authority: Authority, editor: ZoneEditor) -> None:
    with pytest.raises(ControlError, match=r"^records\[0\]: _sip._udp SRV: SRV data must be"):
        editor.add({"records": [{"name": "_sip._udp", "type": "SRV", "data": "1 2 exp1"}]})
    with pytest.raises(ControlError, match="CNAME must stand alone"):
        editor.add({"records": [{"name": "exp1", "type": "CNAME", "data": "exp2"}]})
    with pytest.raises(ControlError, match="no zone"):
        editor.add(
            {"zone": "other.test", "records": [{"name": "a", "type": "A", "data": "127.0.0.1"}]}
        )
    assert ask(authority, "exp1.uctest.local")[1].answers == ["127.0.0.11"]


def test_rotation_survives_unrelated_changes(authority: Authority, editor: ZoneEditor) -> None:
    first = ask(authority, CLUSTER)[1].answers
    editor.add({"records": [{"name": "exp3", "type": "A", "data": "127.0.0.13"}]})
    assert ask(authority, CLUSTER)[1].answers == first[::-1]


def test_cache_patches_the_id_and_tracks_changes(authority: Authority, editor: ZoneEditor) -> None:
    query = dns.message.make_query("exp1.uctest.local", "A")
    first, _ = authority.answer(query.to_wire(), CLIENT, "udp")
    query.id = (query.id + 1) % 65536
    second, info = authority.answer(query.to_wire(), ("127.0.0.2", 5), "udp")
    assert first is not None
    assert second is not None
    assert info is not None
    assert second[2:] == first[2:]
    assert dns.message.from_wire(second).id == query.id
    assert info.client == "127.0.0.2:5"
    editor.replace({"records": [{"name": "exp1", "type": "A", "data": "127.0.0.21"}]})
    assert ask(authority, "exp1.uctest.local")[1].answers == ["127.0.0.21"]


def test_cache_keeps_letter_case_and_rd_apart(authority: Authority) -> None:
    lower, _ = ask(authority, "exp1.uctest.local")
    upper, _ = ask(authority, "EXP1.uctest.local")
    assert str(upper.question[0].name) == "EXP1.uctest.local."
    assert str(lower.question[0].name) == "exp1.uctest.local."


def test_rotating_answers_are_not_frozen_by_the_cache(authority: Authority) -> None:
    query = dns.message.make_query(CLUSTER, "A").to_wire()
    one, _ = authority.answer(query, CLIENT, "udp")
    two, _ = authority.answer(query, CLIENT, "udp")
    assert one != two


def test_fault_down_drops_then_none_restores(authority: Authority, events: EventList) -> None:
    query = dns.message.make_query("exp1.uctest.local", "A").to_wire()
    authority.answer(query, CLIENT, "udp")  # now cached: the fault must still win
    set_fault(events, authority, {"mode": "down"})
    wire, info = authority.answer(query, CLIENT, "udp")
    assert wire is None
    assert info is not None
    assert info.dropped
    set_fault(events, authority, {"mode": "none"})
    assert authority.answer(query, CLIENT, "udp")[0] is not None
    assert [e["fault"] for e in events.of("fault.applied")] == ["dns.down", "dns.none"]


def test_fault_servfail_for_one_name(authority: Authority, events: EventList) -> None:
    set_fault(events, authority, {"mode": "servfail", "name": CLUSTER})
    assert ask(authority, CLUSTER)[0].rcode() == dns.rcode.SERVFAIL
    assert ask(authority, "exp1.uctest.local")[0].rcode() == dns.rcode.NOERROR


def test_fault_name_without_a_dot_is_relative_to_the_zone(
    authority: Authority, events: EventList
) -> None:
    described = set_fault(events, authority, {"mode": "servfail", "name": "exp1"})
    assert described["name"] == "exp1.uctest.local"
    assert ask(authority, "exp1.uctest.local")[0].rcode() == dns.rcode.SERVFAIL
    assert ask(authority, "exp2.uctest.local")[0].rcode() == dns.rcode.NOERROR
    # A name already inside a served zone, or ending with a dot, is taken as written.
    set_fault(events, authority, {"mode": "servfail", "name": "exp2.uctest.local"})
    assert ask(authority, "exp2.uctest.local")[0].rcode() == dns.rcode.SERVFAIL
    set_fault(events, authority, {"mode": "servfail", "name": "elsewhere.example."})
    assert ask(authority, "exp2.uctest.local")[0].rcode() == dns.rcode.NOERROR


def test_bad_record_in_add_is_one_line_naming_it(editor: ZoneEditor) -> None:
    bad = {"name": "exp9", "type": "A", "data": "999.1.1.1"}
    with pytest.raises(ControlError) as caught:
        editor.add({"records": [{"name": "exp8", "type": "A", "data": "127.0.0.8"}, bad]})
    message = str(caught.value)
    assert message.startswith("records[1]: ")
    assert "'999.1.1.1'" in message
    assert "\n" not in message
    assert "http" not in message
    with pytest.raises(ControlError, match=r"^records\[0\]: type: Input should be 'A'"):
        editor.add({"records": [{"name": "exp9", "type": "Q", "data": "1"}]})


def test_fault_delay_is_handed_to_the_shell(authority: Authority, events: EventList) -> None:
    set_fault(events, authority, {"mode": "delay", "delay": 0.5})
    response, info = ask(authority, "exp1.uctest.local")
    assert response.rcode() == dns.rcode.NOERROR
    assert info.delay == 0.5
    with pytest.raises(ValueError, match="delay"):
        set_fault(events, authority, {"mode": "delay", "delay": 0})
    with pytest.raises(ControlError, match="mode"):
        set_fault(events, authority, {"mode": "sideways"})
