"""Stream framing: messages and keep-alives cut out of TCP/TLS byte streams."""

from __future__ import annotations

import pytest

from emulator.sip.framing import KeepAlive, StreamFramer
from emulator.sip.message import (
    DEFAULT_LIMITS,
    Limits,
    Message,
    Request,
    Response,
    SipParseError,
    parse_message,
)


def request(cseq: int, body: bytes = b"") -> bytes:
    return (
        f"REGISTER sip:uctest.local SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.101:5060;branch=z9hG4bK{cseq}\r\n"
        f"From: <sip:1001@uctest.local>;tag=t\r\n"
        f"To: <sip:1001@uctest.local>\r\n"
        f"Call-ID: c@h\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


RESPONSE = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.101:5060;branch=z9hG4bK1\r\n"
    b"From: <sip:1001@uctest.local>;tag=t\r\n"
    b"To: <sip:1001@uctest.local>;tag=u\r\n"
    b"Call-ID: c@h\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"l: 4\r\n\r\n"
    b"\r\n\r\n"  # a body that looks like keep-alives must stay a body
)

STREAM = request(1) + b"\r\n\r\n" + RESPONSE + request(2, b"hello\r\n\r\nworld") + request(3)


PING_MIDDLE = len(request(1)) + 2


def expected_stream(ping_split: bool = False) -> list[Message | KeepAlive]:
    # A lone CRLF at the end of a read is reported as a PONG at once (the framer does not wait
    # to see whether a second one follows), so a PING cut in half reads as two PONGs.
    keepalives = [KeepAlive.PONG, KeepAlive.PONG] if ping_split else [KeepAlive.PING]
    return [
        parse_message(request(1)),
        *keepalives,
        parse_message(RESPONSE),
        parse_message(request(2, b"hello\r\n\r\nworld")),
        parse_message(request(3)),
    ]


def test_several_messages_in_one_feed() -> None:
    items = StreamFramer().feed(STREAM)
    assert items == expected_stream()
    response = items[2]
    assert isinstance(response, Response)
    assert response.body == b"\r\n\r\n"


def test_split_at_every_byte_boundary() -> None:
    for cut in range(1, len(STREAM)):
        framer = StreamFramer()
        items = framer.feed(STREAM[:cut]) + framer.feed(STREAM[cut:])
        assert items == expected_stream(ping_split=cut == PING_MIDDLE), f"cut at {cut}"


def test_one_byte_at_a_time() -> None:
    framer = StreamFramer()
    items = [item for i in range(len(STREAM)) for item in framer.feed(STREAM[i : i + 1])]
    assert items == expected_stream(ping_split=True)


def test_keepalives() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [KeepAlive.PING]
    assert framer.feed(b"\r\n") == [KeepAlive.PONG]
    assert framer.feed(b"\r\n\r\n\r\n\r\n") == [KeepAlive.PING, KeepAlive.PING]
    assert framer.feed(b"\r\n\r") == []  # may still become a PING
    assert framer.feed(b"\n") == [KeepAlive.PING]
    assert framer.feed(b"\r\n\r\n\r\n") == [KeepAlive.PING, KeepAlive.PONG]
    assert framer.feed(b"\r") == []
    assert framer.feed(b"\n" + request(7)) == [KeepAlive.PONG, parse_message(request(7))]


def test_partial_message_waits() -> None:
    framer = StreamFramer()
    data = request(1, b"0123456789")
    assert framer.feed(data[:-1]) == []
    [msg] = framer.feed(data[-1:])
    assert isinstance(msg, Request)
    assert msg.body == b"0123456789"


def test_missing_content_length_is_an_error_and_the_framer_stays_failed() -> None:
    framer = StreamFramer()
    data = request(1).replace(b"Content-Length: 0\r\n", b"")
    with pytest.raises(SipParseError, match="Content-Length is required"):
        framer.feed(data)
    with pytest.raises(SipParseError, match="Content-Length is required"):
        framer.feed(request(2))


def test_malformed_message_fails_the_stream() -> None:
    framer = StreamFramer()
    with pytest.raises(SipParseError, match="missing mandatory header Call-ID"):
        framer.feed(request(1).replace(b"Call-ID: c@h\r\n", b""))
    with pytest.raises(SipParseError):
        framer.feed(b"")


def test_header_section_over_the_limit_without_blank_line() -> None:
    framer = StreamFramer(Limits(max_header_bytes=1000))
    assert framer.feed(b"REGISTER sip:a SIP/2.0\r\nX: " + b"a" * 900) == []
    with pytest.raises(SipParseError, match="no end of headers within 1000 bytes"):
        framer.feed(b"a" * 200)


def test_header_section_at_the_limit_is_accepted() -> None:
    data = request(1)
    head_size = data.index(b"\r\n\r\n")
    [msg] = StreamFramer(Limits(max_header_bytes=head_size)).feed(data)
    assert isinstance(msg, Request)
    with pytest.raises(SipParseError, match="header section exceeds"):
        StreamFramer(Limits(max_header_bytes=head_size - 1)).feed(data)


def test_content_length_over_the_message_limit() -> None:
    framer = StreamFramer(Limits(max_message_bytes=1000))
    with pytest.raises(SipParseError, match="message exceeds 1000 bytes"):
        framer.feed(request(1).replace(b"Content-Length: 0", b"Content-Length: 900"))
    with pytest.raises(SipParseError, match="exceeds 65535"):
        StreamFramer().feed(request(1).replace(b"Content-Length: 0", b"Content-Length: 99999"))


class CountingBuffer(bytearray):
    """The framer's buffer, counting the bytes its searches for a blank line read.

    Counting work instead of timing it: the figures are the same on a loaded machine. Timings
    are in ``bench/sip/framing.py``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.scanned = 0

    def find(self, sub: bytes, start: int = 0) -> int:  # type: ignore[override]
        found = super().find(sub, start)
        self.scanned += (found + len(sub) if found >= 0 else len(self)) - start
        return found


def counting_framer(limits: Limits = DEFAULT_LIMITS) -> tuple[StreamFramer, CountingBuffer]:
    framer = StreamFramer(limits)
    buffer = framer._buf = CountingBuffer()
    return framer, buffer


def test_no_quadratic_rescanning() -> None:
    # 16 KiB of headers one byte at a time: rescanning the buffer each time would be ~10^8 steps.
    head = request(1).replace(b"Content-Length: 0", b"X-Pad: " + b"p" * 16000 + b"\r\nl: 0")
    framer, buffer = counting_framer(Limits(max_header_bytes=17000))
    items = [item for i in range(len(head)) for item in framer.feed(head[i : i + 1])]
    assert len(items) == 1
    assert isinstance(items[0], Request)
    assert items[0].headers.get("X-Pad") == "p" * 16000
    # Each byte fed looks at the few bytes a blank line could end in, not at the whole buffer.
    assert buffer.scanned <= 5 * len(head)


def test_many_messages_in_one_feed_is_linear() -> None:
    data = b"".join(request(i) for i in range(3000))
    framer, buffer = counting_framer()
    items = framer.feed(data)
    assert [item.headers.get("CSeq") for item in items if isinstance(item, Request)] == [
        f"{i} REGISTER" for i in range(3000)
    ]
    # Each header section is searched once.
    assert buffer.scanned <= len(data)
