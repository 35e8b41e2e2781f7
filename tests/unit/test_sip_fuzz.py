"""Property tests: untrusted bytes never raise anything but SipParseError, and well-formed
messages survive serialize -> parse unchanged."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.sip import message
from emulator.sip.framing import StreamFramer
from emulator.sip.message import (
    Headers,
    Limits,
    Message,
    Request,
    Response,
    SipParseError,
    parse_cseq,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    parse_warning,
    response_bytes,
    response_to,
    serialize_message,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SEEDS = [
    b"REGISTER sip:uctest.local SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.101:5060;branch=z9hG4bK776;rport,\r\n"
    b" SIP/2.0/UDP [2001:db8::1]:5062;branch=z9hG4bK2;received=2001:db8::9\r\n"
    b"Max-Forwards: 70\r\n"
    b'f: "Room \\"1001\\"" <sip:1001@uctest.local>;tag=19283\r\n'
    b"t: sip:1001@uctest.local\r\n"
    b"i: a84b4c76e66710@127.0.0.101\r\n"
    b"CSeq: 314159 REGISTER\r\n"
    b'm: <sip:1001@127.0.0.101:5060;transport=tcp>;expires=3600;+sip.instance="<urn:x>"\r\n'
    b"l: 0\r\n\r\n",
    b"SIP/2.0 503 Service Unavailable\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.101:5060;branch=z9hG4bK776;rport=5060\r\n"
    b"To: <sip:1001@uctest.local>;tag=abc\r\n"
    b"From: <sip:1001@uctest.local>;tag=19283\r\n"
    b"Call-ID: a84b4c76e66710@127.0.0.101\r\n"
    b"CSeq: 314159 REGISTER\r\n"
    b'Warning: 382 10.48.53.127 "System in Maintenance Mode"\r\n'
    b"Content-Length: 5\r\n\r\nhello",
    b"\r\n\r\n\r\n",
]


def never_raises_other(parse: Callable[..., object], *args: object) -> None:
    try:
        parse(*args)
    except SipParseError as exc:
        message = str(exc)
        assert message
        assert "\n" not in message


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "truncate", "duplicate"]))
        chunk = draw(
            st.one_of(
                st.binary(max_size=4),
                st.sampled_from([b"\r\n", b"\n", b" ", b"\t", b":", b";", b",", b'"', b"<", b">",
                                 b"@", b"[", b"]", b"=", b"\\", b"%", b"\x00", b"\xff", b"9" * 30]),
            )
        )  # fmt: skip
        if op == "insert":
            data[pos:pos] = chunk
        elif op == "delete":
            del data[pos : pos + len(chunk) + 1]
        elif op == "replace":
            data[pos : pos + len(chunk)] = chunk
        elif op == "truncate":
            del data[pos:]
        else:
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 60))]
    return bytes(data)


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_parse_or_sip_parse_error(data: bytes) -> None:
    never_raises_other(parse_message, data)


@FUZZ
@given(mutated())
def test_mutated_messages_parse_or_sip_parse_error(data: bytes) -> None:
    never_raises_other(parse_message, data)
    never_raises_other(parse_message, data, Limits(200, 150, 4))


@FUZZ
@given(st.lists(st.one_of(mutated(), st.binary(max_size=40)), max_size=4), st.data())
def test_stream_framer_feed_never_raises_other(chunks: list[bytes], data: st.DataObject) -> None:
    framer = StreamFramer(data.draw(st.sampled_from([Limits(), Limits(300, 200, 5)])))
    stream = b"".join(chunks)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    try:
        for piece in pieces:
            framer.feed(piece)
    except SipParseError:
        pass


HEADER_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=80)


@FUZZ
@given(HEADER_TEXT)
def test_header_value_parsers_only_raise_sip_parse_error(text: str) -> None:
    for parse in (parse_uri, parse_name_addr, parse_via, parse_cseq, parse_warning):
        never_raises_other(parse, text)


# --- round trip ----------------------------------------------------------------------------

# Plain alphabets rather than st.from_regex: ten times faster to draw.
ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
TOKEN = st.text(ALNUM + "-.!%*_+`'~", min_size=1, max_size=12)
LABEL = st.builds(
    "{}{}".format, st.text(ALNUM, min_size=1, max_size=8), st.sampled_from(["", "-x"])
)
HOST = st.one_of(
    st.lists(LABEL, min_size=1, max_size=3).map(".".join),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
)
PORT = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
USER = st.text(ALNUM + "-_.!~*'()&=+$,;?/%", min_size=1, max_size=12)
SIP_URI = st.builds(
    lambda scheme, user, host, port, params: f"{scheme}:{user}{host}{port}{params}",
    st.sampled_from(["sip", "sips"]),
    st.one_of(st.just(""), USER.map(lambda u: f"{u}@")),
    HOST,
    PORT,
    st.lists(TOKEN, max_size=3).map(lambda ps: "".join(f";{p}" for p in ps)),
)
QUOTED = st.text(st.characters(codec="utf-8", exclude_characters='\r\n"\\'), max_size=10)
HEADER_PARAMS = st.lists(
    st.tuples(TOKEN, st.one_of(st.none(), TOKEN, QUOTED.map('"{}"'.format))), max_size=3
).map(lambda ps: "".join(f";{k}" if v is None else f";{k}={v}" for k, v in ps))
DISPLAY = st.one_of(
    st.just(""),
    st.lists(TOKEN, min_size=1, max_size=3).map(lambda ws: " ".join(ws) + " "),
    QUOTED.map('"{}" '.format),
)
NAME_ADDR = st.builds(lambda d, u, p: f"{d}<{u}>{p}", DISPLAY, SIP_URI, HEADER_PARAMS)
VIA = st.builds(
    "SIP/2.0/{} {}{};branch=z9hG4bK{}".format,
    st.sampled_from(["UDP", "TCP", "TLS", "SCTP"]),
    HOST,
    PORT,
    TOKEN,
)
# Extra headers must not be ones the parser validates or counts.
RESERVED = {"via", "v", "from", "f", "to", "t", "call-id", "i", "cseq", "contact", "m",
            "content-length", "l", "max-forwards"}  # fmt: skip
EXTRA_NAME = TOKEN.filter(lambda name: name.lower() not in RESERVED)
VALUE = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=40).filter(
    lambda v: v == v.strip(" \t")
)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    method = draw(st.one_of(st.sampled_from(["REGISTER", "OPTIONS", "INVITE"]), TOKEN))
    headers = Headers()
    for via in draw(st.lists(VIA, min_size=1, max_size=3)):
        headers.add(draw(st.sampled_from(["Via", "v"])), via)
    headers.add("From", draw(NAME_ADDR))
    headers.add("To", draw(NAME_ADDR))
    headers.add("Call-ID", draw(TOKEN) + "@" + draw(HOST))
    headers.add("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}")
    for contact in draw(st.lists(NAME_ADDR, max_size=2)):
        headers.add("m", contact)
    for name, value in draw(st.lists(st.tuples(EXTRA_NAME, VALUE), max_size=5)):
        headers.add(name, value)
    body = draw(st.binary(max_size=100))
    headers.set("Content-Length", str(len(body)))
    if draw(st.booleans()):
        return Request(method, draw(SIP_URI), headers, body)
    reason = draw(st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=20))
    return Response(draw(st.integers(100, 699)), reason, headers, body)


@FUZZ
@given(messages())
def test_parse_serialize_round_trip(msg: Message) -> None:
    data = serialize_message(msg)
    assert parse_message(data) == msg
    assert serialize_message(parse_message(data)) == data
    items = StreamFramer().feed(data + data)
    assert items == [msg, msg]


@FUZZ
@given(NAME_ADDR)
def test_name_addr_str_round_trip(text: str) -> None:
    addr = parse_name_addr(text)
    assert parse_name_addr(str(addr)) == addr


@FUZZ
@given(SIP_URI)
def test_uri_str_round_trip(text: str) -> None:
    uri = parse_uri(text)
    assert parse_uri(str(uri)) == uri


@FUZZ
@given(VIA)
def test_via_str_round_trip(text: str) -> None:
    via = parse_via(text)
    assert parse_via(str(via)) == via
    assert isinstance(via.branch, str)


def test_seeds_are_valid() -> None:
    assert isinstance(parse_message(SEEDS[0]), Request)
    assert isinstance(parse_message(SEEDS[1]), Response)


_PARAM_CHARS = st.text(alphabet="abcXYZ019-.!%*_+`'~:[]", min_size=1, max_size=8)


@FUZZ
@given(
    st.lists(st.tuples(_PARAM_CHARS, st.one_of(st.none(), _PARAM_CHARS)), max_size=5),
    st.text(alphabet=' ;=\t"ab', max_size=6),
)
def test_plain_parameters_split_as_the_general_scanner_reads_them(
    params: list[tuple[str, str | None]], tail: str
) -> None:
    """The fast split of plain parameters gives what the general scanner gives, and anything
    it does not take (spaces, quotes, empty parts) goes to the scanner."""
    text = "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params) + tail
    try:
        expected: object = dict(message._scan_params(text, 0, "test"))
    except SipParseError:
        expected = SipParseError
    try:
        got: object = dict(message._parse_params(text, 0, "test"))
    except SipParseError:
        got = SipParseError
    assert got == expected


# --- fast paths against the general ones -----------------------------------------------------

TWEAKS = [" ", "\t", ";", ";;", "<", ">", "=", '"', ",", "x y"]


def tweaks(text: str) -> list[str]:
    """``text``, and ``text`` with each of TWEAKS put in at the places where a fast path is
    tempted: the ends, and next to each '<', '>', ';' and ':'."""
    marks = {0, len(text)}
    for i, c in enumerate(text):
        if c in "<>;:":
            marks |= {i, i + 1}
    return [text, *(text[:at] + tweak + text[at:] for at in sorted(marks) for tweak in TWEAKS)]


def outcome(parse: Callable[[str], object], text: str) -> object:
    try:
        return parse(text)
    except SipParseError:
        return SipParseError


@FUZZ
@given(NAME_ADDR)
def test_name_addr_fast_path_reads_as_the_general_parse(text: str) -> None:
    for variant in tweaks(text):
        assert outcome(parse_name_addr, variant) == outcome(message._parse_name_addr, variant)


@FUZZ
@given(VIA)
def test_via_fast_path_reads_as_the_general_parse(text: str) -> None:
    for variant in tweaks(text):
        assert outcome(parse_via, variant) == outcome(message._parse_via, variant)


HEADER_LINE = st.one_of(
    st.builds("{}: {}".format, st.sampled_from(["Via", "v", "To", "Max-Forwards"]), VIA),
    st.builds("{}:{}".format, EXTRA_NAME, VALUE),
    st.builds("{} :  {}".format, TOKEN, VALUE),
    st.sampled_from(
        [" folded", "\tfolded", "no colon", "bad name: x", ": empty", "a\nb: c", "", "a\rb: c"]
    ),
)


@FUZZ
@given(st.lists(HEADER_LINE, max_size=8), st.integers(1, 10))
def test_header_section_fast_path_reads_as_the_general_parse(
    lines: list[str], max_headers: int
) -> None:
    """The one-pass read of a CRLF header section (remembered lines, the index built as it
    goes) gives what the general line-by-line read gives, twice in a row (the second time from
    the line memo), or the same error."""
    text = "\r\n".join(["OPTIONS sip:x SIP/2.0", *lines])
    limits = Limits(max_headers=max_headers)

    def general(head: str) -> object:
        start, headers = message._parse_lines(head, limits)
        return start, headers.items(), headers.index

    def fast(head: str) -> object:
        start, headers = message.parse_header_section(head.encode(), limits)
        return start, headers.items(), headers.index

    expected = outcome(general, text)
    assert outcome(fast, text) == expected
    assert outcome(fast, text) == expected


@FUZZ
@given(
    messages().filter(lambda m: isinstance(m, Request)),
    st.sampled_from([100, 180, 200, 401, 503]),
    st.one_of(st.none(), st.just("Custom Reason")),
    st.lists(st.tuples(EXTRA_NAME, VALUE), max_size=3),
    st.one_of(st.none(), VIA),
)
def test_response_bytes_is_the_serialized_response_to(
    request: Request,
    status: int,
    reason: str | None,
    extra: list[tuple[str, str]],
    top_via: str | None,
) -> None:
    """A registrar's one-step response is the response the general builder makes (with the
    first via-parm replaced, when asked), byte for byte."""
    got = response_bytes(request, status, reason, tag="t1", headers=extra, top_via=top_via)
    response = response_to(request, status, reason, tag="t1")
    for name, value in extra:
        response.headers.add(name, value)
    response.headers.add("Content-Length", "0")
    if top_via is None:
        assert got == serialize_message(response)
        return
    parsed = parse_message(got)
    vias = request.headers.get_all("Via")
    assert parsed.headers.get_all("Via") == [top_via, *vias[1:]]
    response.headers.remove("Via")
    parsed.headers.remove("Via")
    assert parsed == response


@FUZZ
@given(st.binary(max_size=40).map(lambda b: bytes(b"a\r\n:"[x % 4] for x in b)))
def test_blank_line_search_finds_what_the_pattern_finds(data: bytes) -> None:
    found = message._BLANK_LINE_RE.search(data)
    assert message._blank_line(data) == (None if found is None else found.span())
