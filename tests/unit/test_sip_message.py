"""SIP message parsing and building: headers, start lines, header-value grammar."""

from __future__ import annotations

import pytest

from emulator.memo import MEMO_SIZE
from emulator.sip.message import (
    REASON_PHRASES,
    Headers,
    Limits,
    NameAddr,
    Request,
    Response,
    SipParseError,
    SipUri,
    Via,
    WarningValue,
    new_branch,
    new_call_id,
    new_tag,
    parse_cseq,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    parse_warning,
    response_to,
    serialize_message,
)


def wire(head: str, body: bytes = b"") -> bytes:
    """Message bytes from LF-separated header text; <LEN> becomes the body length."""
    text = head.strip("\n").replace("<LEN>", str(len(body))).replace("\n", "\r\n")
    return text.encode() + b"\r\n\r\n" + body


REGISTER = """
REGISTER sip:uctest.local SIP/2.0
Via: SIP/2.0/TCP 127.0.0.101:5060;branch=z9hG4bK776asdhds;rport
Max-Forwards: 70
To: <sip:1001@uctest.local>
From: "Room 1001" <sip:1001@uctest.local>;tag=1928301774
Call-ID: a84b4c76e66710@127.0.0.101
CSeq: 314159 REGISTER
Contact: <sip:1001@127.0.0.101:5060;transport=tcp>;expires=3600
Content-Length: 0
"""

MAINTENANCE_503 = """
SIP/2.0 503 Service Unavailable
Via: SIP/2.0/TCP 127.0.0.101:5060;branch=z9hG4bK776asdhds;rport=5060;received=127.0.0.101
To: <sip:1001@uctest.local>;tag=abc
From: "Room 1001" <sip:1001@uctest.local>;tag=1928301774
Call-ID: a84b4c76e66710@127.0.0.101
CSeq: 314159 REGISTER
Warning: 382 10.48.53.127 "System in Maintenance Mode"
Content-Length: 0
"""


# --- Headers -------------------------------------------------------------------------------


def test_headers_are_case_insensitive_and_expand_compact_forms() -> None:
    h = Headers([("v", "SIP/2.0/UDP a"), ("CALL-id", "x@y"), ("l", "0"), ("X-Custom", "1")])
    assert h.items() == [
        ("Via", "SIP/2.0/UDP a"),
        ("Call-ID", "x@y"),
        ("Content-Length", "0"),
        ("X-Custom", "1"),
    ]
    assert h.get("v") == h.get("VIA") == "SIP/2.0/UDP a"
    assert h.get("i") == "x@y"
    assert h.get("x-custom") == "1"
    assert "via" in h
    assert "Contact" not in h
    assert 42 not in h
    assert h.get("Contact") is None


@pytest.mark.parametrize(
    ("compact", "canonical"),
    [
        ("v", "Via"), ("f", "From"), ("t", "To"), ("i", "Call-ID"), ("m", "Contact"),
        ("l", "Content-Length"), ("c", "Content-Type"), ("e", "Content-Encoding"),
        ("k", "Supported"), ("s", "Subject"), ("o", "Event"), ("u", "Allow-Events"),
        ("r", "Refer-To"), ("b", "Referred-By"), ("x", "Session-Expires"),
        ("a", "Accept-Contact"), ("j", "Reject-Contact"), ("d", "Request-Disposition"),
        ("y", "Identity"), ("n", "Identity-Info"),
    ],
)  # fmt: skip
def test_every_compact_form(compact: str, canonical: str) -> None:
    h = Headers([(compact.upper(), "value")])
    assert h.items() == [(canonical, "value")]


def test_known_names_are_canonicalised() -> None:
    h = Headers([("cseq", "1 REGISTER"), ("www-authenticate", "Digest x"), ("min-expires", "60")])
    assert [name for name, _ in h.items()] == ["CSeq", "WWW-Authenticate", "Min-Expires"]


def test_set_replaces_all_at_first_position_and_remove() -> None:
    h = Headers([("Via", "1"), ("To", "t"), ("via", "2"), ("From", "f")])
    h.set("V", "3")
    assert h.items() == [("Via", "3"), ("To", "t"), ("From", "f")]
    h.set("Contact", "c")
    assert h.items()[-1] == ("Contact", "c")
    h.remove("to")
    assert h.items() == [("Via", "3"), ("From", "f"), ("Contact", "c")]


def test_copy_is_independent() -> None:
    h = Headers([("To", "t")])
    clone = h.copy()
    clone.add("From", "f")
    assert h.items() == [("To", "t")]
    assert clone == Headers([("To", "t"), ("From", "f")])


def test_get_all_splits_list_headers_on_top_level_commas_only() -> None:
    h = Headers(
        [
            ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b;branch=z9hG4bK2"),
            ("v", "SIP/2.0/TLS c"),
            ("Contact", '"Doe, John" <sip:j@a;x=1,2>;q=0.5, <sip:j@b>'),
            ("Contact", '"quote \\" and, comma" <sip:q@c>'),
            ("Allow", "INVITE,ACK , OPTIONS"),
            ("WWW-Authenticate", 'Digest realm="a,b", nonce="n", qop="auth"'),
            ("Date", "Sat, 13 Nov 2010 23:29:00 GMT"),
        ]
    )
    assert h.get_all("v") == [
        "SIP/2.0/UDP a;branch=z9hG4bK1",
        "SIP/2.0/TCP b;branch=z9hG4bK2",
        "SIP/2.0/TLS c",
    ]
    assert h.get_all("m") == [
        '"Doe, John" <sip:j@a;x=1,2>;q=0.5',
        "<sip:j@b>",
        '"quote \\" and, comma" <sip:q@c>',
    ]
    assert h.get_all("Allow") == ["INVITE", "ACK", "OPTIONS"]
    assert h.get_all("WWW-Authenticate") == ['Digest realm="a,b", nonce="n", qop="auth"']
    assert h.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert h.get("Via") == "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b;branch=z9hG4bK2"


@pytest.mark.parametrize(("name", "value"), [("Bad Name", "v"), ("X", "a\r\nVia: x"), ("", "v")])
def test_headers_refuse_injection(name: str, value: str) -> None:
    with pytest.raises(ValueError, match="header"):
        Headers().add(name, value)


# --- parse / serialize ---------------------------------------------------------------------


def test_parse_request() -> None:
    msg = parse_message(wire(REGISTER))
    assert isinstance(msg, Request)
    assert (msg.method, msg.uri, msg.body) == ("REGISTER", "sip:uctest.local", b"")
    assert msg.headers.get("Call-ID") == "a84b4c76e66710@127.0.0.101"
    assert parse_cseq(msg.headers.get("CSeq") or "") == (314159, "REGISTER")


def test_parse_seed_maintenance_response() -> None:
    msg = parse_message(wire(MAINTENANCE_503))
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (503, "Service Unavailable")
    [warning] = msg.headers.get_all("Warning")
    assert parse_warning(warning) == WarningValue(382, "10.48.53.127", "System in Maintenance Mode")


@pytest.mark.parametrize("text", [REGISTER, MAINTENANCE_503])
def test_serialize_round_trip(text: str) -> None:
    data = wire(text)
    assert serialize_message(parse_message(data)) == data


def test_serialize_writes_content_length_from_body() -> None:
    msg = parse_message(wire(REGISTER))
    msg.body = b"hello"
    msg.headers.add("Content-Type", "text/plain")
    data = serialize_message(msg)
    assert b"Content-Length: 5\r\n" in data
    assert data.count(b"Content-Length") == 1
    assert data.endswith(b"\r\n\r\nhello")
    msg.headers.set("Content-Length", "5")
    assert parse_message(data) == msg


def test_serialize_adds_missing_content_length_last() -> None:
    msg = Response(200, "OK", Headers([("Via", "SIP/2.0/UDP h"), ("To", "<sip:a@b>")]))
    assert serialize_message(msg) == (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nTo: <sip:a@b>\r\nContent-Length: 0\r\n\r\n"
    )


def test_compact_names_are_expanded_when_parsed() -> None:
    data = wire(
        """
OPTIONS sip:a@example.com SIP/2.0
v: SIP/2.0/UDP h.example.com;branch=z9hG4bK1
f: <sip:b@example.com>;tag=1
t: <sip:a@example.com>
i: c1@h
CSeq: 1 OPTIONS
l: 0
"""
    )
    msg = parse_message(data)
    assert [name for name, _ in msg.headers.items()] == [
        "Via", "From", "To", "Call-ID", "CSeq", "Content-Length",
    ]  # fmt: skip
    assert b"\r\nVia: SIP/2.0/UDP" in serialize_message(msg)


def test_header_folding_and_whitespace_around_colon() -> None:
    data = wire(
        """
OPTIONS sip:a@example.com SIP/2.0
Via   :   SIP/2.0/UDP h.example.com;branch=z9hG4bK1
From:
 <sip:b@example.com>
 \t;tag=1
To	:<sip:a@example.com>
Call-ID: c1@h
CSeq: 1
  OPTIONS
Subject: first
  second
\tthird
"""
    )
    msg = parse_message(data)
    assert msg.headers.get("From") == "<sip:b@example.com> ;tag=1"
    assert msg.headers.get("Subject") == "first second third"
    assert msg.headers.get("CSeq") == "1 OPTIONS"
    assert msg.headers.get("To") == "<sip:a@example.com>"


def test_bare_lf_line_endings_are_tolerated() -> None:
    data = wire(REGISTER).replace(b"\r\n", b"\n")
    msg = parse_message(data)
    assert isinstance(msg, Request)
    assert msg.headers.get("CSeq") == "314159 REGISTER"


def test_content_length_absent_takes_the_rest() -> None:
    data = wire(REGISTER.replace("Content-Length: 0\n", ""), b"v=0\r\n")
    assert parse_message(data).body == b"v=0\r\n"


def test_content_length_smaller_ignores_extra_bytes() -> None:
    data = wire(REGISTER.replace("Content-Length: 0", "Content-Length: 3"), b"abcdef")
    assert parse_message(data).body == b"abc"


@pytest.mark.parametrize(
    ("length", "match"),
    [
        ("7", "exceeds the 6 body bytes"),
        ("-1", "invalid Content-Length"),
        ("1x", "invalid Content-Length"),
        ("", "invalid Content-Length"),
        ("9" * 5000, "invalid Content-Length"),
        ("70000", "exceeds 65535"),
    ],
)
def test_bad_content_length(length: str, match: str) -> None:
    data = wire(REGISTER.replace("Content-Length: 0", f"Content-Length: {length}"), b"abcdef")
    with pytest.raises(SipParseError, match=match):
        parse_message(data)


@pytest.mark.parametrize("name", ["Via", "From", "To", "Call-ID", "CSeq"])
@pytest.mark.parametrize("text", [REGISTER, MAINTENANCE_503])
def test_missing_mandatory_header_is_named(text: str, name: str) -> None:
    lines = [line for line in text.splitlines() if not line.startswith(f"{name}:")]
    with pytest.raises(SipParseError, match=f"missing mandatory header {name}"):
        parse_message(wire("\n".join(lines)))


def test_max_forwards_is_never_required() -> None:
    msg = parse_message(wire(REGISTER.replace("Max-Forwards: 70\n", "")))
    assert "Max-Forwards" not in msg.headers


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "no blank line"),
        (b"REGISTER sip:a SIP/2.0\r\nVia: x\r\n", "no blank line"),
        (b"REGISTER sip:a SIP/2.0\r\n bad: continuation\r\n\r\n", "continuation line"),
        (b"REGISTER sip:a SIP/2.0\r\nNoColonHere\r\n\r\n", "malformed header line"),
        (b"REGISTER sip:a SIP/2.0\r\nBad Name: x\r\n\r\n", "malformed header line"),
        (b"REGISTER sip:a SIP/2.0\r\nX: a\rb\r\n\r\n", "stray CR"),
        (b"REGISTER sip:a SIP/2.0\r\nX: \xff\r\n\r\n", "not UTF-8"),
        (b"REGISTER sip:a SIP/3.0\r\n\r\n", "unsupported SIP version"),
        (b"REGISTER sip:a\r\n\r\n", "malformed request line"),
        (b"REG\xc3\xa9 sip:a SIP/2.0\r\n\r\n", "invalid method"),
        (b"REGISTER a.b.c SIP/2.0\r\n\r\n", "invalid Request-URI"),
        (b"SIP/2.0 20 OK\r\n\r\n", "malformed status line"),
        (b"SIP/2.0 099 Low\r\n\r\n", "out of range"),
        (b"SIP/2.0 700 High\r\n\r\n", "out of range"),
        (b"HTTP/1.1 200 OK\r\n\r\n", "unsupported SIP version"),
    ],
)
def test_malformed_messages(data: bytes, match: str) -> None:
    with pytest.raises(SipParseError, match=match):
        parse_message(data)


def test_limits_are_enforced() -> None:
    data = wire(REGISTER)
    with pytest.raises(SipParseError, match="exceeds 100"):
        parse_message(data, Limits(max_message_bytes=100))
    with pytest.raises(SipParseError, match="header section exceeds 100"):
        parse_message(data, Limits(max_header_bytes=100))
    with pytest.raises(SipParseError, match="more than 5 headers"):
        parse_message(data, Limits(max_headers=5))
    assert parse_message(data, Limits(max_message_bytes=len(data), max_headers=9))


def test_response_without_reason_phrase() -> None:
    msg = parse_message(wire(MAINTENANCE_503.replace("503 Service Unavailable", "503")))
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (503, "")


# --- URIs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sip:uctest.local", SipUri("sip", None, "uctest.local", None, {})),
        (
            "SIPS:1001@10.48.53.127:5061;Transport=TLS;lr",
            SipUri("sips", "1001", "10.48.53.127", 5061, {"transport": "TLS", "lr": None}),
        ),
        ("sip:alice@[2001:db8::10]:5060", SipUri("sip", "alice", "2001:db8::10", 5060, {})),
        ("sip:[::1]", SipUri("sip", None, "::1", None, {})),
        (
            "sip:user;par=u%40example.net@example.com",
            SipUri("sip", "user;par=u%40example.net", "example.com", None, {}),
        ),
        (
            "sip:user:secret@example.com?Route=%3Csip:sip.example.com%3E",
            SipUri(
                "sip", "user:secret", "example.com", None, {}, "Route=%3Csip:sip.example.com%3E"
            ),
        ),
    ],
)
def test_parse_uri(text: str, expected: SipUri) -> None:
    assert parse_uri(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@[2001:db8::10]:5060",
        "sips:1001@10.48.53.127:5061;transport=tls;lr",
        "sip:[::1];maddr=x",
        "sip:a@b.example?subject=x&h=y",
    ],
)
def test_uri_round_trips(text: str) -> None:
    assert str(parse_uri(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "tel:+15551234",
        "http://example.com",
        "sip:",
        "sip:@host",
        "sip:host:",
        "sip:host:99999",
        "sip:host:5o60",
        "sip:[2001:db8::1",
        "sip:[2001:db8::1]x",
        "sip:[nothex::]",
        "sip:a b@host",
        "sip:host;=x",
        "sip:host;lr=",
        "sip:-bad-.example",
        "sip:<host>",
    ],
)
def test_parse_uri_rejects(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '"Room 1001" <sip:1001@uctest.local>;tag=abc',
            NameAddr("Room 1001", "sip:1001@uctest.local", {"tag": "abc"}),
        ),
        ("<sip:1001@uctest.local>", NameAddr(None, "sip:1001@uctest.local", {})),
        (
            "sip:1001@uctest.local;tag=abc;Expires=60",
            NameAddr(None, "sip:1001@uctest.local", {"tag": "abc", "expires": "60"}),
        ),
        (
            "caller<sip:caller@example.com>;tag=323",
            NameAddr("caller", "sip:caller@example.com", {"tag": "323"}),
        ),
        (
            'Joe  Q. Public <sip:joe@[2001:db8::1]:5070;lr> ; q = 0.7 ; +sip.instance="<urn:x>"',
            NameAddr(
                "Joe  Q. Public",
                "sip:joe@[2001:db8::1]:5070;lr",
                {"q": "0.7", "+sip.instance": '"<urn:x>"'},
            ),
        ),
        ('"a \\"b\\" \\\\c" <tel:+1555>', NameAddr('a "b" \\c', "tel:+1555", {})),
        ('"" <sip:anon@x>', NameAddr("", "sip:anon@x", {})),
    ],
)
def test_parse_name_addr(text: str, expected: NameAddr) -> None:
    assert parse_name_addr(text) == expected


def test_name_addr_str_and_tag() -> None:
    addr = parse_name_addr('"a \\"b\\""<sip:x@y>;tag=1;lr')
    assert addr.tag == "1"
    assert str(addr) == '"a \\"b\\"" <sip:x@y>;tag=1;lr'
    assert parse_name_addr(str(addr)) == addr
    assert parse_name_addr("<sip:x@y>").tag is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        '"unterminated <sip:a@b>',
        "<sip:a@b",
        "< sip:a@b >",
        "Bell, Alexander <sip:a@b>",
        "sip:a@b?Route=x",
        "<sip:a@b>;;",
        "<sip:a@b>;tag=",
        "<sip:a@b> junk",
        "<not a uri>",
        "<sip:a@b:port>",
    ],
)
def test_parse_name_addr_rejects(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_name_addr(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "SIP/2.0/TCP 127.0.0.101:5060;branch=z9hG4bK776;rport",
            Via("TCP", "127.0.0.101", 5060, {"branch": "z9hG4bK776", "rport": None}),
        ),
        (
            "SIP / 2.0 / udp  host.example.com ; Branch = z9hG4bKx ; received=2001:db8::9",
            Via("UDP", "host.example.com", None, {"branch": "z9hG4bKx", "received": "2001:db8::9"}),
        ),
        ("SIP/2.0/TLS [2001:db8::1]:5061", Via("TLS", "2001:db8::1", 5061, {})),
        ("sip/2.0/WSS h : 443;rport=5062", Via("WSS", "h", 443, {"rport": "5062"})),
    ],
)
def test_parse_via(text: str, expected: Via) -> None:
    assert parse_via(text) == expected


def test_via_str_and_branch() -> None:
    via = parse_via("SIP/2.0/tcp [2001:db8::1]:5061;branch=z9hG4bKa;rport")
    assert via.branch == "z9hG4bKa"
    assert via.sent_by == "[2001:db8::1]:5061"
    assert str(via) == "SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bKa;rport"
    assert parse_via(str(via)) == via
    assert parse_via("SIP/2.0/UDP h").branch is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SIP/2.0/UDP",
        "SIP/3.0/UDP host",
        "XMPP/2.0/UDP host",
        "SIP/2.0/UDP host:70000",
        "SIP/2.0/UDP host;;",
        "SIP/2.0/UDP host;branch=",
        "SIP/2.0/UDP [zz::1]",
        "SIP/2.0/UDP host extra",
    ],
)
def test_parse_via_rejects(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_via(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1 REGISTER", (1, "REGISTER")), ("  0009\tINVITE ", (9, "INVITE")),
     ("2147483647 OPTIONS", (2**31 - 1, "OPTIONS"))],
)  # fmt: skip
def test_parse_cseq(text: str, expected: tuple[int, str]) -> None:
    assert parse_cseq(text) == expected


@pytest.mark.parametrize(
    "text", ["", "REGISTER", "1", "-1 REGISTER", "2147483648 REGISTER", "1 REG ISTER", "x Y"]
)
def test_parse_cseq_rejects(text: str) -> None:
    with pytest.raises(SipParseError, match="invalid CSeq"):
        parse_cseq(text)


def test_parse_warning() -> None:
    seed = '382 10.48.53.127 "System in Maintenance Mode"'
    value = parse_warning(seed)
    assert value == WarningValue(382, "10.48.53.127", "System in Maintenance Mode")
    assert str(value) == seed
    escaped = parse_warning('399 [2001:db8::1]:5060 "say \\"hi\\""')
    assert escaped == WarningValue(399, "[2001:db8::1]:5060", 'say "hi"')
    assert parse_warning(str(escaped)) == escaped


@pytest.mark.parametrize("text", ["", "382", '38 host "x"', "382 host x", '382 "x"', '382 h "x'])
def test_parse_warning_rejects(text: str) -> None:
    with pytest.raises(SipParseError, match="invalid Warning"):
        parse_warning(text)


# --- building ------------------------------------------------------------------------------


def test_identifiers_are_unique_and_well_formed() -> None:
    branches = {new_branch() for _ in range(1000)}
    assert len(branches) == 1000
    assert all(b.startswith("z9hG4bK") and len(b) > 12 for b in branches)
    assert new_tag() != new_tag()
    call_id = new_call_id("127.0.0.101")
    assert call_id.endswith("@127.0.0.101")
    assert call_id != new_call_id("127.0.0.101")


def test_reason_phrases() -> None:
    assert REASON_PHRASES[200] == "OK"
    assert REASON_PHRASES[401] == "Unauthorized"
    assert REASON_PHRASES[423] == "Interval Too Brief"
    assert REASON_PHRASES[503] == "Service Unavailable"


def test_response_to_copies_headers_and_adds_to_tag() -> None:
    request = parse_message(
        wire(REGISTER.replace("Max-Forwards", "Via: SIP/2.0/UDP p2;branch=z9hG4bK2\nMax-Forwards"))
    )
    assert isinstance(request, Request)
    response = response_to(request, 200)
    assert (response.status, response.reason, response.body) == (200, "OK", b"")
    names = [name for name, _ in response.headers.items()]
    assert names == ["Via", "Via", "To", "From", "Call-ID", "CSeq"]
    assert response.headers.get_all("Via") == request.headers.get_all("Via")
    to = parse_name_addr(response.headers.get("To") or "")
    assert to.uri == "sip:1001@uctest.local"
    assert to.tag
    assert response.headers.get("From") == request.headers.get("From")
    parsed = parse_message(serialize_message(response))
    response.headers.add("Content-Length", "0")
    assert parsed == response


def test_response_to_keeps_existing_tag_and_skips_it_for_100() -> None:
    request = parse_message(wire(REGISTER))
    assert isinstance(request, Request)
    assert response_to(request, 100).headers.get("To") == "<sip:1001@uctest.local>"
    request.headers.set("To", "<sip:1001@uctest.local>;tag=known")
    response = response_to(request, 423)
    assert response.reason == "Interval Too Brief"
    assert response.headers.get("To") == "<sip:1001@uctest.local>;tag=known"
    assert response_to(request, 299).reason == "Unknown"
    assert response_to(request, 503, "Maintenance").reason == "Maintenance"


# --- RFC 4475 torture messages -------------------------------------------------------------
# Written after the RFC's messages (same names, same tricks); headers are LF-separated here and
# sent with CRLF by wire().

SDP = b"v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.3\r\ns=-\r\nc=IN IP4 192.0.2.4\r\n"

WSINV = r"""
INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : "J Rosenberg \\\""       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : <LEN>
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:"Quoted string \"\"" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33
"""

INTMETH = (
    "!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy"
    "?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0\n"
    "Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~\n"
    'To: "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:1_unusual.URI~(to-be!sure)&isn\'t+it$/crazy?,/;;*'
    "@example.com>\n"
    "From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%="
    '"\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439";tag=_token~1\'+`*%!-.\n'
    "Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{\n"
    "CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~\n"
    "Max-Forwards: 255\n"
    "extensionHeader-!.%*+_`'~: \ufeff\u5927\u505c\u96fb\n"
    "Content-Length: 0\n"
)

ESC01 = """
INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75ser@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: <LEN>
"""

ESCNULL = """
REGISTER sip:example.com SIP/2.0
To: sip:null-%00-null@example.com
From: sip:null-%00-null@example.com;tag=839923423
Max-Forwards: 70
Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw
Contact: <sip:%00@host5.example.com>
Contact: <sip:%00%00@host5.example.com>
L:0
"""

LWSDISP = """
OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.example.com
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw
l: 0
"""


def longreq() -> str:
    long = "amazinglylongcallid" * 20
    vias = "\n".join(
        f"Via: SIP/2.0/TCP sip{i}.example.com:5060;branch=z9hG4bK{long[:60]}{i}" for i in range(40)
    )
    return f"""
INVITE sip:user@example.com SIP/2.0
To: "I have a user name of {"extreme" * 10} proportion"<sip:user@example.com:6000;unknownparam1=verylonguserparamvalue{"x" * 200}>
From: sip:{"a" * 300}@example.com;tag={"12982424" * 20}
Call-ID: longreq.{long}
CSeq: 3882340 INVITE
Unknown-{"LongLong" * 20}-Header: {"unknown-" * 200}value
{vias}
Max-Forwards: 70
Contact: <sip:{"x" * 100}@host5.example.net>
Content-Type: application/sdp
l: <LEN>
"""  # noqa: E501


VALID = {
    "wsinv": wire(WSINV, SDP),
    "intmeth": wire(INTMETH),
    "esc01": wire(ESC01, SDP),
    "escnull": wire(ESCNULL),
    "lwsdisp": wire(LWSDISP),
    "longreq": wire(longreq(), SDP),
    "esc02": wire(
        """
RE%47IST%45R sip:registrar.example.com SIP/2.0
To: "%Z%45" <sip:resource@example.com>
From: "%Z%45" <sip:resource@example.com>;tag=f232jadfj23
Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf
Via: SIP/2.0/TCP host.example.com;rport;branch=z9hG4bK209%fzsnel234
CSeq: 29344 RE%47IST%45R
Max-Forwards: 70
Contact: <sip:alias1@host1.example.com>
C%6Fntact: <sip:alias2@host2.example.com>
Contact: <sip:alias3@host3.example.com>
l: 0
"""
    ),
    "semiuri": wire(
        """
OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Call-ID: semiuri.0ha0isndaksdj
CSeq: 8 OPTIONS
Accept: application/sdp, application/pkcs7-mime,
        multipart/mixed, multipart/signed,
        message/sip, message/sipfrag
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw
l: 0
"""
    ),
    "transports": wire(
        """
OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: <sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID:  transports.kijh4akdnaqjkwendsasfdj
Accept: application/sdp
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw
Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf
Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj
Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en
Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee
l: 0
"""
    ),
    "mpart01": wire(
        """
MESSAGE sip:kumiko@example.org SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-;rport
Max-Forwards: 70
To: <sip:kumiko@example.org>
From: <sip:fluffy@example.com>;tag=2fb0dcc9
Call-ID: 3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..
CSeq: 1 MESSAGE
Content-Transfer-Encoding: binary
Content-Type: multipart/mixed;boundary=7a9cbec02ceef655
Content-Length: <LEN>
""",
        b"--7a9cbec02ceef655\r\nContent-Type: application/octet-stream\r\n\r\n"
        + bytes(range(256))
        + b"\r\n--7a9cbec02ceef655--\r\n",
    ),
    "unreason": wire(
        "SIP/2.0 200 = 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e \u0434\u0435\u0432\u044f"
        "\u043d\u043e\u0441\u0442\u043e \u0434\u0435\u0432\u044f\u0442\u044c\n"
        "Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923\n"
        "Call-ID: unreason.1234ksdfak3j2erwedfsASdf\n"
        "CSeq: 35 INVITE\n"
        "From: sip:user@example.com;tag=11141343\n"
        "To: sip:user@example.edu;tag=2229\n"
        "Content-Length: <LEN>\n"
        "Content-Type: application/sdp\n"
        "Contact: <sip:user@host198.example.com>\n",
        SDP,
    ),
    "noreason": wire(
        """
SIP/2.0 100 \nVia: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: noreason.asndj203insdf99223ndf
CSeq: 35 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>
"""
    ),
    "unkscm": wire(
        """
OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=384
Max-Forwards: 3
Call-ID: unkscm.nasdfasser0q239nwsdfasdkl34
CSeq: 3923423 OPTIONS
Via: SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234
Content-Length: 0
"""
    ),
    "novelsc": wire(
        """
OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=384
Max-Forwards: 3
Call-ID: novelsc.asdfasser0q239nwsdfasdkl34
CSeq: 3923423 OPTIONS
Via: SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234
Content-Length: 0
"""
    ),
    "unksm2": wire(
        """
REGISTER sip:example.com SIP/2.0
To: isbn:2983792873
From: <http://www.example.com>;tag=3234233
Call-ID: unksch.3234233
CSeq: 234902 REGISTER
Max-Forwards: 70
Via: SIP/2.0/UDP 192.0.2.21:5060;branch=z9hG4bKkdjuw
Contact: <name:John_Smith>
l: 0
"""
    ),
    "bext01": wire(
        """
OPTIONS sip:user@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.net;tag=242etr
Max-Forwards: 6
Call-ID: bext01.0ha0isndaksdj
Require: nothingSupportsThis, nothingSupportsThisEither
Proxy-Require: noProxiesSupportThis, norDoAnyProxiesSupportThis
CSeq: 8 OPTIONS
Via: SIP/2.0/TLS fold-and-staple.example.com;branch=z9hG4bKkdjuw
Content-Length: 0
"""
    ),
    "cparam01": wire(
        """
REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/UDP saturn.example.com:5060;branch=z9hG4bKkdjuw
Max-Forwards: 70
From: sip:watson@example.com;tag=DkfVgjkrtMwaerKKpe
To: sip:watson@example.com
Call-ID: cparam01.70710@saturn.example.com
CSeq: 2 REGISTER
Contact: sip:+19725552222@gw1.example.net;unknownparam
l: 0
"""
    ),
    "regescrt": wire(
        """
REGISTER sip:example.com SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=8
Max-Forwards: 70
Call-ID: regescrt.k345asrl3fdbv@192.0.2.1
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw
M: <sip:user@example.com?Route=%3Csip:sip.example.com%3E>
L:0
"""
    ),
    "inv2543": wire(
        """
INVITE sip:UserB@example.com SIP/2.0
Via: SIP/2.0/UDP iftgw.example.com
From: <sip:+13035551111@ift.client.example.net;user=phone>
Record-Route: <sip:UserB@example.com;maddr=ss1.example.com>
To: sip:+16505552222@ss1.example.net;user=phone
Call-ID: inv2543.1717@ift.client.example.com
CSeq: 56 INVITE
Content-Type: application/sdp
""",
        SDP,
    ),
    # Syntactically fine; RFC 4475 §3.1.4 expects the application to refuse to answer to it.
    "bcast": wire(
        """
SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923;received=255.255.255.255
Via: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23
Call-ID: bcast.0384840201234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: 0
"""
    ),
    # Extra bytes after Content-Length are not a second message on a datagram.
    "dblreq": wire(
        """
REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=43251j3j324
Max-Forwards: 8
I: dblreq.0ha0isndaksdj99sdfafnl3lk233412
Contact: sip:j.user@host.example.com
CSeq: 8 REGISTER
Via: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492
Content-Length: 0
""",
        wire(INTMETH),
    ),
}

BADINV01 = """
INVITE sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=134161461246
Max-Forwards: 7
Call-ID: badinv01.0ha0isndaksdjasdf3234nas
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;;,;,,
Contact: "Joe" <sip:joe@example.org>;;;;
Content-Length: <LEN>
Content-Type: application/sdp
"""

OPTIONS_TEMPLATE = """
OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw
Accept: application/sdp
Call-ID: opt.0ha0isnda977644900765@192.0.2.1
CSeq: 8 OPTIONS
l: 0
"""


def options(old: str, new: str) -> bytes:
    assert old in OPTIONS_TEMPLATE
    return wire(OPTIONS_TEMPLATE.replace(old, new, 1))


INVALID = {
    "badinv01": wire(BADINV01, SDP),
    "clerr": wire(WSINV.replace("<LEN>", "9999"), SDP),
    "ncl": wire(WSINV.replace("<LEN>", "-999"), SDP),
    "scalar02": wire(
        """
REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bK342sdfoi3
To: <sip:user@example.com>
From: <sip:user@example.com>;tag=239232jh3
CSeq: 36893488147419103232 REGISTER
Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32
Max-Forwards: 300
Expires: 1000000000000000000000000000000000000000000000000000000000
Contact: <sip:user@host129.example.com>;expires=280297596632815
Content-Length: 18446744073709551617
"""
    ),
    "scalarlg": wire(
        """
SIP/2.0 503 Service Unavailable
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129
To: <sip:user@example.com>
From: <sip:other@example.net>;tag=2easdjfejw
CSeq: 9292394834772304023312 OPTIONS
Call-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r
Retry-After: 949302838503028349304023988
Warning: 1812 overture "In Progress"
Content-Length: 0
"""
    ),
    "quotbal": options("To: sip:user@example.com", 'To: "Mr. J. User <sip:j.user@example.com>'),
    "ltgtruri": options("OPTIONS sip:user@example.com", "OPTIONS <sip:user@example.com>"),
    "lwsruri": options("OPTIONS sip:user@example.com", "OPTIONS sip:user@example.com; lr"),
    "lwsstart": options("OPTIONS sip:user@example.com", "OPTIONS  sip:user@example.com"),
    "trws": options("SIP/2.0\n", "SIP/2.0  \n"),
    "escruri": options("OPTIONS sip:user@example.com", "OPTIONS sip:user@example.com?Route=%3Cs"),
    "regbadct": options("l: 0", "Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E"),
    "badaspec": options("To: sip:user@example.com", 'To: "Watson, Thomas" < sip:t.w@example.org >'),
    "baddn": options("From: sip:caller@example.org", "From: Bell, Alexander <sip:a.g@example.com>"),
    "badvers": options("SIP/2.0\n", "SIP/7.0\n"),
    "mismatch01": options("CSeq: 8 OPTIONS", "CSeq: 8 INVITE"),
    "mismatch02": wire(
        OPTIONS_TEMPLATE.replace("OPTIONS sip", "NEWMETHOD sip").replace(
            "8 OPTIONS", "8 foobarNEWMETHOD"
        )
    ),
    "bigcode": wire(
        VALID["bcast"]
        .decode()
        .replace("200 OK", "4294967301 better not break the receiver")
        .replace("\r\n", "\n")
    ),
    "multi01": options("Accept: application/sdp", "To: sip:other@example.net\nCall-ID: two@x"),
    "mcl01": options("l: 0", "Content-Length: 0\nContent-Length: 2"),
    "insuf": wire(
        """
INVITE sip:user@example.com SIP/2.0
CSeq: 193942 INVITE
Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf
Content-Type: application/sdp
l: <LEN>
""",
        SDP,
    ),
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_torture_valid_messages_parse(name: str) -> None:
    msg = parse_message(VALID[name])
    again = parse_message(serialize_message(msg))
    msg.headers.set("Content-Length", str(len(msg.body)))
    assert again == msg


@pytest.mark.parametrize("name", sorted(INVALID))
def test_torture_invalid_messages_are_refused(name: str) -> None:
    with pytest.raises(SipParseError):
        parse_message(INVALID[name])


def test_torture_wsinv_details() -> None:
    msg = parse_message(VALID["wsinv"])
    assert isinstance(msg, Request)
    h = msg.headers
    assert msg.body == SDP
    assert parse_cseq(h.get("CSeq") or "") == (9, "INVITE")
    assert h.get("Max-Forwards") == "0068"
    assert h.get("Subject") == ""
    assert h.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert h.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    frm = parse_name_addr(h.get("From") or "")
    assert (frm.display, frm.uri, frm.tag) == (
        'J Rosenberg \\"',
        "sip:jdrosen@example.com",
        "98asjd8",
    )
    to = parse_name_addr(h.get("To") or "")
    assert (to.display, to.uri, to.tag) == (
        None,
        "sip:vivekg@chair-dnrc.example.com",
        "1918181833n",
    )
    vias = [parse_via(v) for v in h.get_all("Via")]
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    contact = parse_name_addr(h.get("Contact") or "")
    assert contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}


def test_torture_intmeth_details() -> None:
    msg = parse_message(VALID["intmeth"])
    assert isinstance(msg, Request)
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    uri = parse_uri(msg.uri)
    assert uri.host == "example.com"
    assert uri.user is not None
    assert uri.user.endswith("(doesn't-it)")
    to = parse_name_addr(msg.headers.get("To") or "")
    assert to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    frm = parse_name_addr(msg.headers.get("From") or "")
    assert frm.display == "token1~` token2'+_ token3*%!.-"
    assert frm.tag == "_token~1'+`*%!-."


def test_torture_esc01_and_semiuri_uris() -> None:
    esc01 = parse_message(VALID["esc01"])
    assert isinstance(esc01, Request)
    assert parse_uri(esc01.uri).user == "sips%3Auser%40example.com"
    assert esc01.headers.get("Content-Type") == "application/sdp"
    contact = parse_uri(parse_name_addr(esc01.headers.get("Contact") or "").uri)
    assert contact.params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}
    semiuri = parse_message(VALID["semiuri"])
    assert isinstance(semiuri, Request)
    assert parse_uri(semiuri.uri).user == "user;par=u%40example.net"
    assert len(semiuri.headers.get_all("Accept")) == 6


def test_torture_misc_details() -> None:
    assert len(parse_message(VALID["longreq"]).headers.get_all("Via")) == 40
    transports = parse_message(VALID["transports"]).headers.get_all("Via")
    assert [parse_via(v).transport for v in transports] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert parse_message(VALID["mpart01"]).body.count(bytes(range(256))) == 1
    noreason = parse_message(VALID["noreason"])
    assert isinstance(noreason, Response)
    assert (noreason.status, noreason.reason) == (100, "")
    assert parse_message(VALID["dblreq"]).body == b""
    cparam = parse_name_addr(parse_message(VALID["cparam01"]).headers.get("Contact") or "")
    assert (cparam.uri, cparam.params) == (
        "sip:+19725552222@gw1.example.net",
        {"unknownparam": None},
    )
    bcast = parse_message(VALID["bcast"]).headers.get_all("Via")
    assert parse_via(bcast[0]).params["received"] == "255.255.255.255"


def test_a_parsed_value_is_shared_read_only_and_outlives_values_seen_once() -> None:
    """The memo hands one immutable value to every caller; an endpoint's To, asked for again
    and again, stays remembered while a stream of one-off From tags passes through."""
    kept = parse_name_addr("<sip:kept@uctest.local>")
    with pytest.raises(TypeError):
        kept.params["tag"] = "x"  # type: ignore[index]
    for i in range(3 * MEMO_SIZE):
        parse_name_addr(f"<sip:caller@uctest.local>;tag={i}")
        if i % 1000 == 999:
            assert parse_name_addr("<sip:kept@uctest.local>") is kept
