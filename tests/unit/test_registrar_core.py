"""The registrar core, sans-I/O: REGISTER rules of RFC 3261 §10.3 and Expressway's behaviour."""

from __future__ import annotations

import random
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from emulator.events import EventList
from emulator.sip.message import (
    Headers,
    Request,
    Response,
    SipParseError,
    new_branch,
    parse_message,
    parse_name_addr,
    serialize_message,
)
from emulator.sip.transport import Flow
from registrar.bindings import Binding
from registrar.config import RegistrarConfig
from registrar.core import RegistrarCore

TCP = Flow("tcp", ("127.0.0.11", 5060), ("127.0.0.101", 40000))
UDP = Flow("udp", ("127.0.0.11", 5060), ("127.0.0.101", 40000))


def core(**overrides: object) -> tuple[RegistrarCore, EventList]:
    config = RegistrarConfig.model_validate(
        {"name": "exp1", "address": "127.0.0.11", "domains": ["uctest.local"], **overrides}
    )
    events = EventList()
    return RegistrarCore(config, events, wall_clock=lambda: 1e9, rng=random.Random(7)), events


def register(
    aor: str = "1001@uctest.local",
    contact: str | None = "<sip:1001@127.0.0.101:40000;transport=tcp>",
    expires: int | None = 3600,
    cseq: int = 1,
    call_id: str = "call-1@127.0.0.101",
    uri: str = "sip:uctest.local",
    extra: tuple[tuple[str, str], ...] = (),
    via_transport: str = "TCP",
) -> Request:
    headers = [
        ("Via", f"SIP/2.0/{via_transport} 127.0.0.101:40000;branch={new_branch()}"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:{aor}>;tag=abc"),
        ("To", f"<sip:{aor}>"),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} REGISTER"),
    ]
    if contact is not None:
        headers.append(("Contact", contact))
    if expires is not None:
        headers.append(("Expires", str(expires)))
    headers.extend(extra)
    return Request("REGISTER", uri, Headers(headers))


def answer(registrar: RegistrarCore, request: Request, now: float, flow: Flow = TCP) -> Response:
    registrar.receive(request, flow, now)
    (out,) = registrar.pop_outgoing()
    assert out[0] == flow
    response = parse_message(out[1])
    assert isinstance(response, Response)
    return response


def test_register_grants_at_most_max_expires() -> None:
    registrar, events = core()
    response = answer(registrar, register(expires=3600), now=0.0)
    assert response.status == 200
    (contact,) = response.headers.get_all("Contact")
    assert parse_name_addr(contact).params["expires"] == "60"
    assert "Date" in response.headers
    assert len(registrar.bindings) == 1
    (answered,) = events.of("register.answered")
    assert answered["code"] == 200
    assert answered["registrations"] == 1
    assert answered["aor"] == "1001@uctest.local"


def test_contact_expires_parameter_wins_over_header() -> None:
    registrar, _ = core()
    contact = "<sip:1001@127.0.0.101:40000;transport=tcp>;expires=50"
    response = answer(registrar, register(contact=contact, expires=3600), now=0.0)
    assert parse_name_addr(response.headers.get_all("Contact")[0]).params["expires"] == "50"


def test_too_brief_gets_423_with_min_expires() -> None:
    registrar, _ = core()
    response = answer(registrar, register(expires=10), now=0.0)
    assert response.status == 423
    assert response.headers.get("Min-Expires") == "45"
    assert len(registrar.bindings) == 0


def test_other_domains_are_refused() -> None:
    registrar, _ = core()
    assert answer(registrar, register(uri="sip:example.com"), 0.0).status == 403
    assert answer(registrar, register(aor="1001@example.com"), 0.0).status == 404


def test_maintenance_answers_503_with_warning_382_and_keeps_bindings() -> None:
    registrar, events = core(max_expires=60)
    assert answer(registrar, register(cseq=1), now=0.0).status == 200
    registrar.set_maintenance(True)
    response = answer(registrar, register(cseq=2), now=30.0)
    assert response.status == 503
    assert response.reason == "Service Unavailable"
    assert response.headers.get("Warning") == '382 127.0.0.11 "System in Maintenance Mode"'
    # The binding stays until it expires, then goes.
    assert len(registrar.bindings) == 1
    assert registrar.next_timer() == 60.0
    registrar.handle_timer(60.0)
    assert len(registrar.bindings) == 0
    (expired,) = events.of("binding.expired")
    assert expired["registrations"] == 0
    assert events.of("maintenance") == [{"on": True, "registrations": 1}]


def test_refresh_and_out_of_order_register() -> None:
    registrar, events = core()
    assert answer(registrar, register(cseq=5), now=0.0).status == 200
    assert answer(registrar, register(cseq=6), now=50.0).status == 200
    assert len(events.of("binding.refreshed")) == 1
    # The first expiry would have been at 60: the core wakes then, and the refreshed binding
    # stays until 110.
    assert registrar.next_timer() == 60.0
    registrar.handle_timer(60.0)
    assert len(registrar.bindings) == 1
    assert registrar.next_timer() == 110.0
    stale = answer(registrar, register(cseq=4), now=51.0)
    assert stale.status == 500
    # A new Call-ID (a rebooted endpoint) may replace the binding whatever its CSeq.
    assert answer(registrar, register(cseq=1, call_id="other"), now=52.0).status == 200


def test_unregister_all_with_star() -> None:
    registrar, _ = core()
    answer(registrar, register(cseq=1), now=0.0)
    answer(registrar, register(cseq=2, contact="<sip:1001@127.0.0.102:5060>"), now=0.0)
    assert len(registrar.bindings) == 2
    bad = answer(registrar, register(cseq=3, contact="*", expires=60), now=1.0)
    assert bad.status == 400
    ok = answer(registrar, register(cseq=4, contact="*", expires=0), now=1.0)
    assert ok.status == 200
    assert len(registrar.bindings) == 0
    assert ok.headers.get_all("Contact") == []


def test_query_lists_bindings_without_changing_them() -> None:
    registrar, _ = core()
    answer(registrar, register(cseq=1), now=0.0)
    response = answer(registrar, register(cseq=2, contact=None, expires=None), now=10.0)
    assert response.status == 200
    (contact,) = response.headers.get_all("Contact")
    assert parse_name_addr(contact).params["expires"] == "50"


def test_require_gets_420_for_what_is_not_understood() -> None:
    registrar, _ = core()
    extra = (("Require", "outbound, 100rel"), ("Require", "timer"))
    response = answer(registrar, register(extra=extra), now=0.0)
    assert response.status == 420
    assert response.headers.get("Unsupported") == "100rel, timer"


def test_options_and_other_methods() -> None:
    registrar, _ = core()
    options = register()
    options.method = "OPTIONS"
    options.headers.set("CSeq", "1 OPTIONS")
    response = answer(registrar, options, now=0.0)
    assert response.status == 200
    assert "REGISTER" in (response.headers.get("Allow") or "")
    invite = register()
    invite.method = "INVITE"
    invite.headers.set("CSeq", "1 INVITE")
    assert answer(registrar, invite, now=0.0).status == 405


def test_udp_retransmission_gets_the_same_answer_once_processed() -> None:
    registrar, events = core()
    request = register(via_transport="UDP")
    first = answer(registrar, request, now=0.0, flow=UDP)
    again = answer(registrar, request, now=0.5, flow=UDP)
    assert serialize_message(first) == serialize_message(again)
    assert len(events.of("register.answered")) == 1
    # Timer J (64*T1) forgets the transaction; then the same bytes are a new request.
    registrar.handle_timer(32.0)
    answer(registrar, request, now=33.0, flow=UDP)
    assert len(events.of("register.answered")) == 2


def test_responses_and_acks_are_ignored() -> None:
    registrar, _ = core()
    stray = Response(200, "OK", register().headers)
    registrar.receive(stray, TCP, 0.0)
    ack = register()
    ack.method = "ACK"
    registrar.receive(ack, TCP, 0.0)
    assert registrar.pop_outgoing() == []


header_text = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=0, max_size=40
)


@settings(max_examples=300, deadline=None)
@given(to=header_text, contact=header_text, expires=header_text, uri=header_text)
def test_hostile_registers_get_an_answer_never_an_exception(
    to: str, contact: str, expires: str, uri: str
) -> None:
    # Whatever gets through the parser (as from a socket) must be answered, not crash the core.
    raw = (
        f"REGISTER {uri or 'sip:uctest.local'} SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.101:40000;branch={new_branch()}\r\n"
        f"From: <sip:1001@uctest.local>;tag=a\r\nTo: {to}\r\nCall-ID: c\r\n"
        f"CSeq: 1 REGISTER\r\nContact: {contact}\r\nExpires: {expires}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    try:
        request = parse_message(raw)
    except SipParseError:
        return
    registrar, _ = core()
    registrar.receive(request, TCP, 0.0)
    (out,) = registrar.pop_outgoing()
    response = parse_message(out[1])
    assert isinstance(response, Response)
    assert 200 <= response.status < 600


def test_config_rejects_inverted_limits() -> None:
    with pytest.raises(ValidationError, match="min_expires"):
        RegistrarConfig(name="x", address=IPv4Address("127.0.0.1"), domains=["d"], min_expires=90)


def test_the_shell_is_told_which_aors_changed_for_the_cluster_view() -> None:
    """Every change to an AOR's bindings (added, refreshed, removed, expired, ended with its
    flow, restored) puts the AOR on the list the shell takes with pop_changed; a refused
    REGISTER does not."""
    registrar, _ = core(max_expires=60, min_expires=10)
    assert registrar.pop_changed() == []
    answer(registrar, register("1001@uctest.local", expires=60), 0.0)
    answer(registrar, register("1002@uctest.local", expires=60), 0.0)
    answer(registrar, register("1001@uctest.local", expires=60, cseq=2), 1.0)
    assert registrar.pop_changed() == ["1001@uctest.local", "1002@uctest.local"]
    assert registrar.pop_changed() == []
    assert answer(registrar, register("1003@uctest.local", expires=5), 2.0).status == 423
    assert registrar.pop_changed() == []
    answer(registrar, register("1002@uctest.local", expires=0, cseq=2), 3.0)
    assert registrar.pop_changed() == ["1002@uctest.local"]
    registrar.handle_timer(61.0)
    assert registrar.pop_changed() == ["1001@uctest.local"]
    key = ("sip", "1004", "127.0.0.101", 5060, None)
    held = Binding("1004@uctest.local", "sip:1004@127.0.0.101", key, 200.0, "c@x", 1, TCP)
    assert registrar.restore(held, 70.0, "tcp 127.0.0.101:5060")
    assert registrar.pop_changed() == ["1004@uctest.local"]
    assert not registrar.restore(held, 70.0, "tcp 127.0.0.101:5060")  # already held
    assert registrar.pop_changed() == []
