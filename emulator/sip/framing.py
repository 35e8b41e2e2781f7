"""Message framing on stream transports (TCP/TLS), RFC 3261 §18.3, with RFC 5626 keep-alives."""

from __future__ import annotations

import enum
from typing import Final

from emulator.sip.message import (
    DEFAULT_LIMITS,
    Headers,
    Limits,
    Message,
    SipParseError,
    content_length,
    make_message,
    parse_header_section,
)

__all__ = ["KeepAlive", "StreamFramer"]

_CRLF: Final = b"\r\n"
_END_OF_HEADERS: Final = b"\r\n\r\n"


class KeepAlive(enum.Enum):
    PING = "ping"  # double CRLF (RFC 5626 §3.5.1); the receiver answers with a single CRLF
    PONG = "pong"  # single CRLF


class StreamFramer:
    """Cuts a byte stream into messages and keep-alives.

    After a SipParseError the stream cannot be resynchronised, so the framer stays failed and
    the caller closes the connection; items framed earlier in the failing feed are dropped
    with it (the peer has to retry them on a new connection anyway).
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._buf = bytearray()
        self._scan_from = 0  # where the search for the blank line resumes
        # Start line, headers, header section size and body size of the message at the front of
        # the buffer, parsed once and kept while its body arrives.
        self._pending: tuple[str, Headers, int, int] | None = None
        self._error: str | None = None

    def feed(self, data: bytes) -> list[Message | KeepAlive]:
        if self._error is not None:
            raise SipParseError(self._error)
        self._buf += data
        try:
            return self._drain()
        except SipParseError as exc:
            self._error = str(exc)
            self._buf.clear()
            raise

    def _drain(self) -> list[Message | KeepAlive]:
        out: list[Message | KeepAlive] = []
        buf = self._buf
        pos = 0  # consumed prefix; compacted once at the end so many messages stay O(n)
        while pos < len(buf):
            if self._pending is None and buf.startswith(_CRLF, pos):
                if buf.startswith(_END_OF_HEADERS, pos):
                    out.append(KeepAlive.PING)
                    pos += 4
                elif len(buf) - pos == 3 and buf[pos + 2] == 0x0D:
                    break  # could be the start of a PING
                else:
                    out.append(KeepAlive.PONG)
                    pos += 2
                continue
            item = self._next_message(pos)
            if item is None:
                break
            message, pos = item
            out.append(message)
        del buf[:pos]
        self._scan_from = max(0, self._scan_from - pos)
        return out

    def _next_message(self, pos: int) -> tuple[Message, int] | None:
        buf, limits = self._buf, self._limits
        pending = self._pending
        if pending is None:
            end = buf.find(_END_OF_HEADERS, max(pos, self._scan_from - 3))
            if end < 0:
                self._scan_from = len(buf)
                if len(buf) - pos - 3 > limits.max_header_bytes:
                    raise SipParseError(f"no end of headers within {limits.max_header_bytes} bytes")
                return None
            start_line, headers = parse_header_section(bytes(buf[pos:end]), limits)
            length = content_length(headers, limits)
            if length is None:
                raise SipParseError("Content-Length is required on a stream transport")
            body_start = end + len(_END_OF_HEADERS)
            if body_start - pos + length > limits.max_message_bytes:
                raise SipParseError(f"message exceeds {limits.max_message_bytes} bytes")
            stop = body_start + length
            if len(buf) < stop:
                self._pending = (start_line, headers, body_start - pos, length)
                return None
        else:
            start_line, headers, head_size, length = pending
            body_start = pos + head_size
            stop = body_start + length
            if len(buf) < stop:
                return None
            self._pending = None
        self._scan_from = stop
        body = bytes(buf[body_start:stop]) if length else b""
        return make_message(start_line, headers, body), stop
