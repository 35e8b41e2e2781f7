"""RFC 2136 dynamic UPDATE against the sans-I/O core, with dnspython as the client."""

from __future__ import annotations

import base64
import time

import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update
import pytest
from pydantic import ValidationError

from dnsserver.authority import Authority, QueryInfo, Transport
from dnsserver.config import RecordConfig, TsigKeyConfig, ZoneConfig
from dnsserver.update import attach_updates
from emulator.events import EventList
from tests.dnshelpers import CLIENT, ask, seed_zone

CLUSTER = "habibexpc-cluster.uctest.local."
KEY_NAME = "lab-key."
SECRET = base64.b64encode(b"siplab-test-secret-0123456789abc").decode()
KEYRING = dns.tsigkeyring.from_text({KEY_NAME: ("hmac-sha256", SECRET)})
WRONG_KEYRING = dns.tsigkeyring.from_text(
    {KEY_NAME: ("hmac-sha256", base64.b64encode(b"not-the-secret").decode())}
)


def zones() -> list[ZoneConfig]:
    return [
        seed_zone(),
        ZoneConfig(
            origin="secure.test",
            tsig=TsigKeyConfig(name=KEY_NAME, secret=SECRET),
            records=[RecordConfig(name="host", type="A", data="127.0.0.50")],
        ),
        ZoneConfig(origin="closed.test", allow_update=False),
    ]


@pytest.fixture
def events() -> EventList:
    return EventList()


@pytest.fixture
def authority(events: EventList) -> Authority:
    authority = Authority(zones())
    attach_updates(authority, events, zones())
    return authority


def send(
    authority: Authority, update: dns.message.Message, transport: Transport = "udp"
) -> tuple[dns.message.Message, QueryInfo]:
    """Send ``update``; a signed one's response must verify with the same key."""
    wire, info = authority.answer(update.to_wire(), CLIENT, transport)
    assert wire is not None
    assert info is not None
    if update.had_tsig:
        return dns.message.from_wire(wire, keyring=update.keyring, request_mac=update.mac), info
    return dns.message.from_wire(wire), info


def addresses(authority: Authority, name: str) -> list[str]:
    response, info = ask(authority, name)
    return sorted(info.answers) if response.rcode() == dns.rcode.NOERROR else []


def serial(authority: Authority, zone: str = "uctest.local") -> int:
    response, _ = ask(authority, zone, "SOA")
    return int(response.answer[0][0].serial)


# -- the update section ------------------------------------------------------------------


def test_add_is_answered_next_reported_and_bumps_the_serial(
    authority: Authority, events: EventList
) -> None:
    before = serial(authority)
    update = dns.update.UpdateMessage("uctest.local")
    update.add("exp3", 30, "A", "127.0.0.13")
    response, info = send(authority, update)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.opcode() == dns.opcode.UPDATE
    assert (info.name, info.qtype, info.rcode) == ("uctest.local", "UPDATE", "NOERROR")
    assert addresses(authority, "exp3.uctest.local") == ["127.0.0.13"]
    [change] = events.of("dns.change")
    assert change["op"] == "update"
    assert change["zone"] == "uctest.local"
    assert change["client"] == "127.0.0.1:40000"
    assert change["added"] == ["exp3.uctest.local. 30 IN A 127.0.0.13"]
    assert change["removed"] == []
    assert change["serial"] == serial(authority) == before + 1


def test_the_answer_cache_does_not_hide_a_change(authority: Authority) -> None:
    assert addresses(authority, "exp1.uctest.local") == ["127.0.0.11"]  # now cached
    update = dns.update.UpdateMessage("uctest.local")
    update.replace("exp1", 60, "A", "127.0.0.21")
    assert send(authority, update)[0].rcode() == dns.rcode.NOERROR
    assert addresses(authority, "exp1.uctest.local") == ["127.0.0.21"]


def test_updates_are_never_answered_from_the_cache(authority: Authority) -> None:
    update = dns.update.UpdateMessage("uctest.local")
    update.absent("exp7")
    update.add("exp7", 60, "A", "127.0.0.17")
    wire = update.to_wire()
    first = dns.message.from_wire(authority.answer(wire, CLIENT, "udp")[0] or b"")
    again = dns.message.from_wire(authority.answer(wire, CLIENT, "udp")[0] or b"")
    assert first.rcode() == dns.rcode.NOERROR
    assert again.rcode() == dns.rcode.YXDOMAIN  # the same bytes, judged on the new zone


def test_delete_an_rrset(authority: Authority, events: EventList) -> None:
    update = dns.update.UpdateMessage("uctest.local")
    update.delete("habibexpc-cluster", "A")
    assert send(authority, update, "tcp")[0].rcode() == dns.rcode.NOERROR
    assert ask(authority, CLUSTER)[0].rcode() == dns.rcode.NXDOMAIN
    [change] = events.of("dns.change")
    assert sorted(change["removed"]) == [
        "habibexpc-cluster.uctest.local. 60 IN A 127.0.0.11",
        "habibexpc-cluster.uctest.local. 60 IN A 127.0.0.12",
    ]


def test_delete_one_rr_keeps_the_rest_of_the_rrset(authority: Authority) -> None:
    update = dns.update.UpdateMessage("uctest.local")
    update.delete("habibexpc-cluster", "A", "127.0.0.11")
    assert send(authority, update)[0].rcode() == dns.rcode.NOERROR
    assert addresses(authority, CLUSTER) == ["127.0.0.12"]


def test_delete_every_rrset_at_a_name(authority: Authority) -> None:
    add = dns.update.UpdateMessage("uctest.local")
    add.add("exp1", 60, "TXT", '"peer one"')
    send(authority, add)
    update = dns.update.UpdateMessage("uctest.local")
    update.delete("exp1")
    assert send(authority, update)[0].rcode() == dns.rcode.NOERROR
    assert ask(authority, "exp1.uctest.local", "TXT")[0].rcode() == dns.rcode.NXDOMAIN


def test_adding_a_record_that_exists_changes_nothing(
    authority: Authority, events: EventList
) -> None:
    update = dns.update.UpdateMessage("uctest.local")
    update.add("exp1", 60, "A", "127.0.0.11")
    assert send(authority, update)[0].rcode() == dns.rcode.NOERROR
    assert events.of("dns.change") == []


def test_the_apex_keeps_its_soa_and_ns(authority: Authority, events: EventList) -> None:
    before = serial(authority)
    for name, rdtype, rdata in (
        ("@", "SOA", None),
        ("@", "NS", None),
        ("@", None, None),
        ("@", "NS", "ns1.uctest.local."),
        ("@", "SOA", "ns1.uctest.local. hostmaster.uctest.local. 1 3600 600 86400 60"),
    ):
        update = dns.update.UpdateMessage("uctest.local")
        if rdtype is None:
            update.delete(name)
        elif rdata is None:
            update.delete(name, rdtype)
        else:
            update.delete(name, rdtype, rdata)
        assert send(authority, update)[0].rcode() == dns.rcode.NOERROR
    assert serial(authority) == before
    assert ask(authority, "uctest.local", "NS")[1].answers == ["ns1.uctest.local."]
    assert events.of("dns.change") == []


def test_a_newer_soa_replaces_the_old_one(authority: Authority) -> None:
    update = dns.update.UpdateMessage("uctest.local")
    update.add("@", 60, "SOA", "ns1 hostmaster 2024010101 3600 600 86400 30")
    assert send(authority, update)[0].rcode() == dns.rcode.NOERROR
    assert serial(authority) == 2024010101  # the UPDATE's serial, not bumped again
    older = dns.update.UpdateMessage("uctest.local")
    older.add("@", 60, "SOA", "ns1 hostmaster 5 3600 600 86400 30")
    send(authority, older)
    assert serial(authority) == 2024010101


def test_a_cname_never_joins_other_data(authority: Authority, events: EventList) -> None:
    update = dns.update.UpdateMessage("uctest.local")
    update.add("exp1", 60, "CNAME", "exp2")
    assert send(authority, update)[0].rcode() == dns.rcode.NOERROR  # §3.4.2.2: ignored
    assert ask(authority, "exp1.uctest.local", "CNAME")[1].answers == []
    assert events.of("dns.change") == []


# -- prerequisites -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prerequisite", "rcode"),
    [
        (("present", "nobody"), dns.rcode.NXDOMAIN),
        (("absent", "exp1"), dns.rcode.YXDOMAIN),
        (("present", "exp1", "AAAA"), dns.rcode.NXRRSET),
        (("absent", "exp1", "A"), dns.rcode.YXRRSET),
        (("present", "habibexpc-cluster", "A", "127.0.0.11"), dns.rcode.NXRRSET),
        (("present", "exp1", "A", "127.0.0.99"), dns.rcode.NXRRSET),
        (("present", "exp1"), dns.rcode.NOERROR),
        (("absent", "nobody"), dns.rcode.NOERROR),
        (("present", "exp1", "A"), dns.rcode.NOERROR),
        (("absent", "exp1", "AAAA"), dns.rcode.NOERROR),
        (("present", "exp1", "A", "127.0.0.11"), dns.rcode.NOERROR),
    ],
)
def test_prerequisites(
    authority: Authority, events: EventList, prerequisite: tuple[str, ...], rcode: int
) -> None:
    update = dns.update.UpdateMessage("uctest.local")
    method, *args = prerequisite
    getattr(update, method)(*args)
    update.add("exp9", 60, "A", "127.0.0.19")
    response, info = send(authority, update)
    assert response.rcode() == rcode
    assert info.rcode == dns.rcode.to_text(rcode)
    applied = addresses(authority, "exp9.uctest.local") == ["127.0.0.19"]
    assert applied == (rcode == dns.rcode.NOERROR)
    assert len(events.of("dns.change")) == int(applied)


def test_value_dependent_prerequisite_needs_the_whole_rrset(authority: Authority) -> None:
    update = dns.update.UpdateMessage("uctest.local")
    update.present("habibexpc-cluster", "A", "127.0.0.11")
    update.present("HABIBEXPC-cluster", "A", "127.0.0.12")  # names match case-insensitively
    update.delete("habibexpc-cluster", "A", "127.0.0.12")
    assert send(authority, update)[0].rcode() == dns.rcode.NOERROR
    assert addresses(authority, CLUSTER) == ["127.0.0.11"]


def test_a_name_outside_the_zone_is_notzone(authority: Authority) -> None:
    update = dns.update.UpdateMessage("uctest.local")
    update.add("exp3", 60, "A", "127.0.0.13")
    update.add("host.secure.test.", 60, "A", "127.0.0.51")
    assert send(authority, update)[0].rcode() == dns.rcode.NOTZONE
    assert addresses(authority, "exp3.uctest.local") == []  # all or nothing


# -- zone section, policy, atomicity -------------------------------------------------------


def test_a_zone_we_do_not_serve_is_notauth(authority: Authority, events: EventList) -> None:
    update = dns.update.UpdateMessage("example.org")
    update.add("www", 60, "A", "192.0.2.1")
    response, info = send(authority, update)
    assert response.rcode() == dns.rcode.NOTAUTH
    assert info.name == "example.org"
    assert events.of("dns.change") == []


def test_a_name_below_the_origin_is_not_a_zone(authority: Authority) -> None:
    update = dns.update.UpdateMessage("exp1.uctest.local")
    update.add("x", 60, "A", "127.0.0.1")
    assert send(authority, update)[0].rcode() == dns.rcode.NOTAUTH


def test_a_zone_without_updates_refuses(authority: Authority) -> None:
    update = dns.update.UpdateMessage("closed.test")
    update.add("www", 60, "A", "127.0.0.60")
    assert send(authority, update)[0].rcode() == dns.rcode.REFUSED
    assert addresses(authority, "www.closed.test") == []


def test_one_bad_record_means_no_change_at_all(authority: Authority, events: EventList) -> None:
    update = dns.update.UpdateMessage("uctest.local")
    update.add("exp3", 60, "A", "127.0.0.13")
    update.delete("habibexpc-cluster", "A")
    update.add("mail", 60, "MX", "10 exp1")  # a type this server does not hold
    assert send(authority, update)[0].rcode() == dns.rcode.REFUSED
    assert addresses(authority, "exp3.uctest.local") == []
    assert addresses(authority, CLUSTER) == ["127.0.0.11", "127.0.0.12"]
    assert events.of("dns.change") == []


def test_meta_types_are_formerr(authority: Authority) -> None:
    update = dns.update.UpdateMessage("uctest.local")
    update.add("exp3", 60, "A", "127.0.0.13")
    update.delete("exp1", "AXFR")
    assert send(authority, update)[0].rcode() == dns.rcode.FORMERR
    assert addresses(authority, "exp3.uctest.local") == []


def test_garbage_update_is_formerr(authority: Authority) -> None:
    wire = bytearray(dns.update.UpdateMessage("uctest.local").to_wire())
    wire[5] = 2  # claims two zone records but carries one
    response, info = authority.answer(bytes(wire), CLIENT, "udp")
    assert response is not None
    assert dns.message.from_wire(response).rcode() == dns.rcode.FORMERR
    assert info is not None
    assert info.rcode == "FORMERR"


def test_without_a_handler_update_is_notimp() -> None:
    bare = Authority(zones())
    update = dns.update.UpdateMessage("uctest.local")
    update.add("exp3", 60, "A", "127.0.0.13")
    wire, _ = bare.answer(update.to_wire(), CLIENT, "udp")
    assert dns.message.from_wire(wire or b"").rcode() == dns.rcode.NOTIMP


# -- TSIG ------------------------------------------------------------------------------------


def secure_add(
    keyring: dict[dns.name.Name, dns.tsig.Key] | None = KEYRING,
) -> dns.update.UpdateMessage:
    update = dns.update.UpdateMessage("secure.test", keyring=keyring)
    update.add("new", 60, "A", "127.0.0.52")
    return update


def test_a_signed_update_is_applied_and_the_answer_is_signed(
    authority: Authority, events: EventList
) -> None:
    response, _ = send(authority, secure_add())  # from_wire verified the response's TSIG
    assert response.rcode() == dns.rcode.NOERROR
    assert response.had_tsig
    assert addresses(authority, "new.secure.test") == ["127.0.0.52"]
    assert events.of("dns.change")[0]["zone"] == "secure.test"


def test_an_unsigned_update_to_a_keyed_zone_is_refused(authority: Authority) -> None:
    response, _ = send(authority, secure_add(keyring=None))
    assert response.rcode() == dns.rcode.REFUSED
    assert addresses(authority, "new.secure.test") == []


def test_a_wrong_secret_is_notauth_badsig(authority: Authority, events: EventList) -> None:
    update = secure_add(keyring=WRONG_KEYRING)
    wire, _ = authority.answer(update.to_wire(), CLIENT, "udp")
    response = dns.message.from_wire(wire or b"", keyring=False)
    assert response.rcode() == dns.rcode.NOTAUTH
    assert response.tsig_error == dns.rcode.BADSIG
    assert response.mac == b""  # RFC 8945 §5.3.2: a BADSIG answer is not signed
    assert addresses(authority, "new.secure.test") == []
    assert events.of("dns.change") == []
    # dnspython as a client turns that into its "peer says bad signature" error.
    with pytest.raises(dns.tsig.PeerBadSignature):
        dns.message.from_wire(wire or b"", keyring=WRONG_KEYRING, request_mac=update.mac)


@pytest.mark.parametrize("zone", ["secure.test", "uctest.local"])
def test_an_unknown_key_is_notauth_badkey(authority: Authority, zone: str) -> None:
    other = dns.tsigkeyring.from_text({"someone-else.": ("hmac-sha256", SECRET)})
    update = dns.update.UpdateMessage(zone, keyring=other)
    update.add("new", 60, "A", "127.0.0.52")
    wire, _ = authority.answer(update.to_wire(), CLIENT, "udp")
    response = dns.message.from_wire(wire or b"", keyring=False)
    assert response.rcode() == dns.rcode.NOTAUTH
    assert response.tsig_error == dns.rcode.BADKEY
    assert addresses(authority, f"new.{zone}") == []


def test_a_stale_signature_is_notauth_badtime_and_signed(
    authority: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    update = secure_add()
    wire = update.to_wire()
    later = time.time() + 3600  # far beyond the 300 s fudge
    monkeypatch.setattr(time, "time", lambda: later)
    answer, _ = authority.answer(wire, CLIENT, "udp")
    monkeypatch.undo()
    response = dns.message.from_wire(answer or b"", keyring=False)
    assert response.rcode() == dns.rcode.NOTAUTH
    assert response.tsig_error == dns.rcode.BADTIME
    assert response.mac  # BADTIME answers are signed
    assert addresses(authority, "new.secure.test") == []


# -- configuration ---------------------------------------------------------------------------


def test_zone_config_defaults_allow_unsigned_updates() -> None:
    zone = ZoneConfig(origin="uctest.local")
    assert zone.allow_update is True
    assert zone.tsig is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "k", "secret": "not base64!"}, "base64"),
        ({"name": "k", "secret": ""}, "empty"),
        ({"name": "bad..name", "secret": SECRET}, "empty label"),
        ({"name": "k", "secret": SECRET, "algorithm": "hmac-sha3"}, "algorithm"),
    ],
)
def test_tsig_key_config_is_validated(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TsigKeyConfig.model_validate(fields)
