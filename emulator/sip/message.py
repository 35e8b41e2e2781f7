"""SIP messages (RFC 3261 §7, §20, §25): parsing, serialization and header-value grammar.

Sans-I/O: bytes in, objects out. Everything that reads untrusted input raises only
`SipParseError`, with a one-line message a log reader can act on.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, Final

from emulator.memo import Memo, Memoized

__all__ = [
    "DEFAULT_LIMITS",
    "REASON_PHRASES",
    "Headers",
    "Limits",
    "Message",
    "NameAddr",
    "Request",
    "Response",
    "SipParseError",
    "SipUri",
    "Via",
    "WarningValue",
    "content_length",
    "make_message",
    "new_branch",
    "new_call_id",
    "new_tag",
    "parse_cseq",
    "parse_header_section",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "parse_warning",
    "response_bytes",
    "response_to",
    "serialize_message",
]


class SipParseError(ValueError):
    """Untrusted input is not a SIP message (or header value) we can use."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_message_bytes: int = 65535
    max_header_bytes: int = 16384
    max_headers: int = 256


DEFAULT_LIMITS: Final = Limits()

# --- lexical pieces (RFC 3261 §25.1) --------------------------------------------------------

_SP_HT: Final = " \t"  # the only whitespace in SIP's LWS; str.strip() would also eat U+00A0 etc.
_TOKEN: Final = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN_RE: Final = re.compile(_TOKEN)
_QUOTED: Final = r'"(?:[^"\\]|\\.)*"'
_LWS: Final = re.compile(r"[ \t]*")
# A parameter value: token, host (including bracketed IPv6, or the bare IPv6 that Via
# "received" carries), or quoted-string.
_PARAM_VALUE_RE: Final = re.compile(rf"{_QUOTED}|[A-Za-z0-9\-.!%*_+`'~:\[\]]+", re.S)
# Parameters with neither whitespace nor quoted values: split without the general scanner.
_PLAIN_PARAMS_RE: Final = re.compile(rf"(?:;{_TOKEN}(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]]+)?)*")
_SCHEME_URI_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"\\]+")
_LABEL: Final = r"[A-Za-z0-9_](?:[A-Za-z0-9_\-]*[A-Za-z0-9_])?"
_HOSTNAME_RE: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_PORT_RE: Final = re.compile(r"[0-9]{1,5}")
_MAX_DIGITS: Final = 10  # guards int() against absurd digit strings (and Python's int-size limit)

# Parsed parameters are read-only, so one parsed value can be handed to every caller.
Params = Mapping[str, str | None]

# --- headers ---------------------------------------------------------------------------------

_COMPACT: Final = {
    "v": "Via", "f": "From", "t": "To", "i": "Call-ID", "m": "Contact", "l": "Content-Length",
    "c": "Content-Type", "e": "Content-Encoding", "k": "Supported", "s": "Subject",
    "o": "Event", "u": "Allow-Events", "r": "Refer-To", "b": "Referred-By",
    "x": "Session-Expires", "a": "Accept-Contact", "j": "Reject-Contact",
    "d": "Request-Disposition", "y": "Identity", "n": "Identity-Info",
}  # fmt: skip

_KNOWN: Final = [
    *_COMPACT.values(), "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Authentication-Info", "Authorization", "Call-Info", "Content-Disposition",
    "Content-Language", "CSeq", "Date", "Error-Info", "Expires", "Flow-Timer", "In-Reply-To",
    "Max-Forwards", "MIME-Version", "Min-Expires", "Min-SE", "Organization", "Path",
    "Priority", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "Record-Route",
    "Reply-To", "Require", "Retry-After", "Route", "Server", "Service-Route",
    "Subscription-State", "Timestamp", "Unsupported", "User-Agent", "Warning",
    "WWW-Authenticate", "RSeq", "RAck", "P-Asserted-Identity", "P-Preferred-Identity",
]  # fmt: skip

_CANONICAL: Final = {name.lower(): name for name in _KNOWN} | _COMPACT

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1); only these are split.
_LIST_HEADERS: Final = frozenset(
    name.lower()
    for name in (
        "Via", "Contact", "Route", "Record-Route", "Path", "Service-Route", "Allow",
        "Supported", "Require", "Proxy-Require", "Unsupported", "Accept", "Accept-Encoding",
        "Accept-Language", "Allow-Events", "Warning", "Alert-Info", "Call-Info", "Error-Info",
        "In-Reply-To", "Content-Encoding", "Content-Language", "Reply-To",
        "P-Asserted-Identity", "P-Preferred-Identity", "Accept-Contact", "Reject-Contact",
    )
)  # fmt: skip


_NO_VALUES: Final[list[str]] = []  # never changed: get_all copies what it returns


def _canonical(name: str) -> str:
    return _CANONICAL.get(name.lower(), name)


def _key(name: str) -> str:
    """The lookup key of a header name: its canonical name, lower-cased."""
    known = _NAMES.get(name)
    return known[0] if known is not None else _canonical(name).lower()


def _known_spellings() -> dict[str, tuple[str, str]]:
    names: dict[str, tuple[str, str]] = {}
    for spelling in [*_CANONICAL, *_CANONICAL.values(), *(c.upper() for c in _COMPACT)]:
        canonical = _canonical(spelling)
        names[spelling] = (canonical.lower(), canonical)
    return names


# (lookup key, canonical name, value) of one header line. Of unknown length in its type only:
# compiled, a tuple[str, str, str] is unpacked into C fields and built anew each time it goes
# into a list or a dict, while a tuple of unknown length stays the one Python object.
HeaderEntry = tuple[str, ...]

# (lookup key, canonical name) of the usual spellings of known headers, so that the parser and
# lookups of a message skip the lower-casing and compact-form mapping for them.
_NAMES: Final = _known_spellings()
# Header lines by their exact text, as (lookup key, canonical name, value): an endpoint's
# REGISTERs repeat most of theirs (To, Contact, Expires, Max-Forwards, User-Agent...).
_LINES: Final[Memo[HeaderEntry]] = Memo()


def _split_list(value: str) -> list[str]:
    """Split on commas outside quoted strings and <...>; keeps empty items (callers decide)."""
    if "," not in value:
        return [value.strip(_SP_HT)]
    if '"' not in value and "<" not in value:
        return [item.strip(_SP_HT) for item in value.split(",")]
    items: list[str] = []
    start = 0
    in_quotes = in_angle = escaped = False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif in_quotes:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            items.append(value[start:i].strip(_SP_HT))
            start = i + 1
    items.append(value[start:].strip(_SP_HT))
    return items


def _index_of(entries: list[HeaderEntry]) -> dict[str, list[str]]:
    """Lookup key -> values, in order."""
    index: dict[str, list[str]] = {}
    for key, _, value in entries:
        found = index.get(key)
        if found is None:
            index[key] = [value]
        else:
            found.append(value)
    return index


class Headers:
    """Ordered, case-insensitive; compact forms (v, f, t, i, m, l, c, e, k, s, o, u, r, b, x,
    a, j, d, y, n) are expanded to their canonical long names when parsed or added, so
    get("v") == get("Via")."""

    __slots__ = ("_entries", "index")
    __hash__ = None  # type: ignore[assignment]  # mutable

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        # (lookup key, canonical name, value): the key is computed once, not on every lookup.
        self._entries: list[HeaderEntry] = []
        # Values by lookup key (the canonical name lower-cased: "via", "call-id", "cseq"), in
        # order, kept up to date by every change: the fast path for a reader that knows its
        # keys, as a received message is read a dozen times and changed never. Read only.
        self.index: dict[str, list[str]] = {}
        for name, value in items:
            self.add(name, value)

    @classmethod
    def _parsed(
        cls, entries: list[HeaderEntry], index: dict[str, list[str]] | None = None
    ) -> Headers:
        """Entries the parser already checked (token names, no CR or LF in values), and their
        index if the parser built it."""
        headers = cls()
        headers._entries = entries
        headers.index = _index_of(entries) if index is None else index
        return headers

    def get(self, name: str) -> str | None:
        values = self.index.get(_key(name))
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        key = _key(name)
        values = self.index.get(key, _NO_VALUES)
        if key not in _LIST_HEADERS:
            return list(values)
        return [item for value in values for item in _split_list(value) if item]

    def add(self, name: str, value: str) -> None:
        entry = self._checked(name, value)
        self._entries.append(entry)
        self.index.setdefault(entry[0], []).append(value)

    def set(self, name: str, value: str) -> None:
        self._set(self._checked(name, value))
        self.index = _index_of(self._entries)

    def _set(self, entry: HeaderEntry) -> None:
        key = entry[0]
        entries = self._entries
        for first, (k, _, _) in enumerate(entries):
            if k == key:
                rest = [e for e in entries[first + 1 :] if e[0] != key]
                entries[first:] = [entry, *rest]
                return
        entries.append(entry)

    def remove(self, name: str) -> None:
        key = _key(name)
        self._entries = [e for e in self._entries if e[0] != key]
        self.index.pop(key, None)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def items(self) -> list[tuple[str, str]]:
        return [(n, v) for _, n, v in self._entries]

    def copy(self) -> Headers:
        return Headers._parsed(list(self._entries))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items())

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._entries == other._entries

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"

    @staticmethod
    def _checked(name: str, value: str) -> HeaderEntry:
        # Programming errors, not untrusted input: a CR/LF here would inject header lines.
        if name not in _NAMES and not _TOKEN_RE.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}")
        if "\r" in value or "\n" in value:
            raise ValueError(f"header {name} value contains CR or LF")
        known = _NAMES.get(name)
        if known is not None:
            return known[0], known[1], value
        canonical = _canonical(name)
        return canonical.lower(), canonical, value


# --- messages --------------------------------------------------------------------------------


@dataclass(slots=True)
class Request:
    method: str
    uri: str
    headers: Headers
    body: bytes = b""


@dataclass(slots=True)
class Response:
    status: int
    reason: str
    headers: Headers
    body: bytes = b""


Message = Request | Response

# (lookup key, name) pairs.
_MANDATORY: Final = tuple((n.lower(), n) for n in ("Via", "From", "To", "Call-ID", "CSeq"))
_MANDATORY_KEYS: Final = frozenset(key for key, _ in _MANDATORY)
# RFC 4475 §3.1.4 (multi01, mcl01): more than one of these means the message is ambiguous.
_SINGLE_VALUED: Final = tuple(
    (n.lower(), n) for n in ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length")
)
_BLANK_LINE_RE: Final = re.compile(rb"\r?\n\r?\n")
_STATUS_LINE_RE: Final = re.compile(r"(?i:SIP/2\.0) ([0-9]{3})(?: (.*))?", re.S)


def parse_message(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Parse one whole message: a datagram, or one message framed by StreamFramer."""
    if len(data) > limits.max_message_bytes:
        raise SipParseError(f"message of {len(data)} bytes exceeds {limits.max_message_bytes}")
    blank = _blank_line(data)
    if blank is None:
        raise SipParseError("no blank line ends the header section")
    start_line, headers = parse_header_section(data[: blank[0]], limits)
    rest = data[blank[1] :]
    length = content_length(headers, limits)
    if length is not None and length > len(rest):
        raise SipParseError(f"Content-Length {length} exceeds the {len(rest)} body bytes present")
    return make_message(start_line, headers, rest if length is None else rest[:length])


def _blank_line(data: bytes) -> tuple[int, int] | None:
    """Where the first blank line (CRLF or bare LF endings) is: the span of what
    _BLANK_LINE_RE finds first, found by a plain search when the lines end with CRLF (the
    pattern search costs a match attempt at every byte)."""
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        before = data[: end + 2]
        if b"\n\n" not in before and b"\n\r\n" not in before:
            return end, end + 4
    found = _BLANK_LINE_RE.search(data)
    return None if found is None else found.span()


def parse_header_section(head: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[str, Headers]:
    """Split the start line and header fields (no blank line), unfolding continuations."""
    if len(head) > limits.max_header_bytes:
        raise SipParseError(f"header section exceeds {limits.max_header_bytes} bytes")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"header section is not UTF-8 (byte {exc.start})") from None
    lines = text.split("\r\n")
    start_line = lines[0]
    if "\n" in start_line or "\r" in start_line:
        return _parse_lines(text, limits)
    # The usual case, every line ending with CRLF and none folded; anything else (a fold, a
    # bare LF or CR) takes the general path.
    young = _LINES.young
    entries: list[HeaderEntry] = []
    try:
        for i in range(1, len(lines)):
            entry = young.get(lines[i])
            entries.append(entry if entry is not None else _fresh_entry(lines[i]))
    except _Unusual:
        return _parse_lines(text, limits)
    if len(entries) > limits.max_headers:
        raise SipParseError(f"more than {limits.max_headers} headers")
    index = {entry[0]: [entry[2]] for entry in entries}
    if len(index) < len(entries):  # a header that appears more than once
        index = _index_of(entries)
    return start_line, Headers._parsed(entries, index)


class _Unusual(Exception):
    """A header line that only the general parse reads right (folded, bare CR or LF)."""


def _fresh_entry(line: str) -> HeaderEntry:
    """The entry of a header line not in the young generation of the line memo."""
    entry = _LINES.old.get(line)
    if entry is not None:
        return _LINES.fill(line, entry)
    if line[:1] in (" ", "\t") or "\n" in line or "\r" in line:
        raise _Unusual
    entry = _header_entry(line)
    if entry[0] not in _PER_REQUEST:
        _LINES.fill(line, entry)
    return entry


# Headers whose lines a client makes anew for each request (a Via branch, a CSeq number, a
# From tag outside a dialog): remembering them would only push out the lines that recur.
_PER_REQUEST: Final = frozenset(("via", "cseq", "from"))


def _parse_lines(text: str, limits: Limits) -> tuple[str, Headers]:
    """parse_header_section for any line ending (CRLF, bare LF) and folded lines."""
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if any("\r" in line for line in lines):
        raise SipParseError("stray CR in the header section")
    entries: list[HeaderEntry] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if not entries:
                raise SipParseError("continuation line before the first header")
            # RFC 3261 §7.3.1: a fold is equivalent to a single space.
            key, canonical, value = entries[-1]
            folded = line.strip(_SP_HT)
            entries[-1] = (key, canonical, f"{value} {folded}" if value else folded)
            continue
        entries.append(_header_entry(line))
        if len(entries) > limits.max_headers:
            raise SipParseError(f"more than {limits.max_headers} headers")
    return lines[0], Headers._parsed(entries)


def _header_entry(line: str) -> HeaderEntry:
    """(lookup key, canonical name, value) of one unfolded header line."""
    name, colon, value = line.partition(":")
    known = _NAMES.get(name)
    if known is None:
        name = name.rstrip(_SP_HT)
        known = _NAMES.get(name)
        if known is None and colon and _TOKEN_RE.fullmatch(name):
            canonical = _canonical(name)
            known = canonical.lower(), canonical
    if not colon or known is None:
        raise SipParseError(f"malformed header line {line[:40]!r}")
    return known[0], known[1], value.strip(_SP_HT)


def content_length(headers: Headers, limits: Limits = DEFAULT_LIMITS) -> int | None:
    """The declared body length, None when absent; SipParseError when unusable."""
    values = headers.index.get("content-length")
    if not values:
        return None
    if len(values) > 1:
        raise SipParseError("more than one Content-Length")
    length = _SMALL_INTS.get(values[0])
    if length is None:
        length = _small_int(values[0], "Content-Length")
    if length > limits.max_message_bytes:
        raise SipParseError(f"Content-Length {values[0]} exceeds {limits.max_message_bytes}")
    return length


def make_message(start_line: str, headers: Headers, body: bytes) -> Message:
    """Build a Request or Response from parsed parts, validating what every consumer needs."""
    msg: Message
    if start_line[:4].upper() == "SIP/":
        msg = Response(*_parse_status_line(start_line), headers, body)
    else:
        msg = Request(*_parse_request_line(start_line), headers, body)
    _check_headers(msg)
    return msg


def _read_status_line(line: str) -> tuple[int, str]:
    status = _STATUS_LINE_RE.fullmatch(line)
    if status is None:
        raise SipParseError(f"malformed status line {line[:60]!r}")
    code = int(status.group(1))
    if not 100 <= code <= 699:
        raise SipParseError(f"status code {code} out of range")
    return code, status.group(2) or ""


_parse_status_line: Final = Memoized(_read_status_line)


def _read_request_line(line: str) -> tuple[str, str]:
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError(f"malformed request line {line[:60]!r}")
    method, uri, version = parts
    if version.upper() != "SIP/2.0":
        raise SipParseError(f"unsupported SIP version {version[:20]!r}")
    if not _TOKEN_RE.fullmatch(method):
        raise SipParseError(f"invalid method {method[:20]!r}")
    if not _SCHEME_URI_RE.fullmatch(uri):
        raise SipParseError(f"invalid Request-URI {uri[:60]!r}")
    if _is_sip_uri(uri) and parse_uri(uri).headers:
        raise SipParseError("Request-URI must not contain headers")
    return method, uri


_parse_request_line: Final = Memoized(_read_request_line)


def _check_headers(msg: Message) -> None:
    headers = msg.headers
    index = headers.index
    if not index.keys() >= _MANDATORY_KEYS:
        for key, name in _MANDATORY:
            if key not in index:
                raise SipParseError(f"missing mandatory header {name}")
    if len(index) < len(headers._entries):  # some header appears more than once
        for key, name in _SINGLE_VALUED:  # none of them is a list header: a value is an entry
            if len(index.get(key, _NO_VALUES)) > 1:
                raise SipParseError(f"more than one {name} header")
    parse_name_addr(index["from"][0])
    parse_name_addr(index["to"][0])
    # Every item, empty ones included: "Via: a;;,;,," is malformed (RFC 4475 badinv01).
    for via_line in index["via"]:
        if "," in via_line:
            for via in _split_list(via_line):
                parse_via(via)
        else:
            parse_via(via_line)
    contacts = index.get("contact")
    if contacts is not None:
        if len(contacts) > 1 or "," in contacts[0]:
            contacts = headers.get_all("Contact")
        for contact in contacts:
            if contact != "*":
                parse_name_addr(contact)
    _, cseq_method = parse_cseq(index["cseq"][0])
    if isinstance(msg, Request) and cseq_method != msg.method:
        raise SipParseError(f"CSeq method {cseq_method} does not match {msg.method}")
    max_forwards = index.get("max-forwards")
    if (
        max_forwards
        and max_forwards[0] not in _SMALL_INTS
        and _small_int(max_forwards[0], "Max-Forwards") > 255
    ):
        raise SipParseError(f"Max-Forwards {max_forwards[0]} exceeds 255")


# Max-Forwards 70, Content-Length 0: the usual values, read without _small_int.
_SMALL_INTS: Final = {str(n): n for n in range(256)}


def _small_int(text: str, what: str) -> int:
    text = text.strip(_SP_HT)
    if not text.isascii() or not text.isdigit() or len(text) > _MAX_DIGITS:
        raise SipParseError(f"invalid {what} {text[:20]!r}")
    return int(text)


def serialize_message(msg: Message) -> bytes:
    """Wire form; Content-Length always equals len(body), at its old place or last."""
    if isinstance(msg, Request):
        start = f"{msg.method} {msg.uri} SIP/2.0"
    else:
        start = f"SIP/2.0 {msg.status} {msg.reason}"
    # Headers.set("Content-Length", ...) on a copy, without the copy: the first one takes the
    # new value in place, later ones go; none, and it goes last.
    length = f"Content-Length: {len(msg.body)}"
    lines = [start]
    seen = False
    for key, name, value in msg.headers._entries:
        if key != "content-length":
            lines.append(f"{name}: {value}")
        elif not seen:
            lines.append(length)
            seen = True
    if not seen:
        lines.append(length)
    lines += ("", "")
    return "\r\n".join(lines).encode("utf-8") + msg.body


# --- header value grammar --------------------------------------------------------------------


def _unquote(quoted: str) -> str:
    return re.sub(r"\\(.)", r"\1", quoted[1:-1], flags=re.S)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_NO_PARAMS: Final[Params] = MappingProxyType({})


def _parse_params(text: str, pos: int, what: str) -> Params:
    """`*( SEMI token [EQUAL value] )` from pos to the end; names lower-cased, values verbatim
    (a quoted value keeps its quotes, so it is written back exactly)."""
    if pos == len(text):
        return _NO_PARAMS
    if not _PLAIN_PARAMS_RE.fullmatch(text, pos):
        return _scan_params(text, pos, what)
    # The usual shape (";tag=1234", ";branch=z9hG4bK..;rport"): no spaces, no quoted values.
    params: dict[str, str | None] = {}
    for item in text[pos + 1 :].split(";"):
        name, eq, value = item.partition("=")
        params[name.lower()] = value if eq else None
    return MappingProxyType(params)


def _scan_params(text: str, pos: int, what: str) -> Params:
    """_parse_params for any shape: linear white space around each part, quoted values."""
    params: dict[str, str | None] = {}
    while True:
        pos = _LWS.match(text, pos).end()  # type: ignore[union-attr]
        if pos == len(text):
            return MappingProxyType(params)
        if text[pos] != ";":
            raise SipParseError(f"unexpected {text[pos : pos + 20]!r} in {what}")
        pos = _LWS.match(text, pos + 1).end()  # type: ignore[union-attr]
        name = _TOKEN_RE.match(text, pos)
        if name is None:
            raise SipParseError(f"empty or invalid parameter in {what}")
        pos = _LWS.match(text, name.end()).end()  # type: ignore[union-attr]
        value: str | None = None
        if text.startswith("=", pos):
            pos = _LWS.match(text, pos + 1).end()  # type: ignore[union-attr]
            found = _PARAM_VALUE_RE.match(text, pos)
            if found is None:
                raise SipParseError(f"parameter {name.group()} has no valid value in {what}")
            value, pos = found.group(), found.end()
        params[name.group().lower()] = value


def _format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _check_host(host: str, what: str) -> str:
    if not _valid_host(host):
        kind = "IPv6 address" if ":" in host else "host"
        raise SipParseError(f"invalid {kind} {host[:50]!r} in {what}")
    return host


def _is_valid_host(host: str) -> bool:
    # Remembered: the hosts of a lab's messages are few, and the hostname pattern is slow.
    if ":" not in host:
        return _HOSTNAME_RE.fullmatch(host) is not None
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


_valid_host: Final = Memoized(_is_valid_host)


def _split_hostport(text: str, what: str) -> tuple[str, int | None]:
    if text.startswith("["):
        host, bracket, port_part = text[1:].partition("]")
        if not bracket or ":" not in host or (port_part and not port_part.startswith(":")):
            raise SipParseError(f"invalid IPv6 reference in {what}")
        port_text = port_part[1:] if port_part else None
    else:
        host, colon, port_text = text.partition(":")
        if not colon:
            port_text = None
    return _check_host(host, what), None if port_text is None else _port(port_text, what)


def _port(text: str, what: str) -> int:
    if not _PORT_RE.fullmatch(text) or int(text) > 65535:
        raise SipParseError(f"invalid port {text[:10]!r} in {what}")
    return int(text)


def _format_hostport(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


class _Value:
    """A parsed header value: compared and shown by its fields, never changed once made (the
    memo hands one value to every caller; ``Final`` lets mypy hold code to that, and params
    are read-only mappings). Plain classes, not frozen dataclasses or named tuples: mypyc
    compiles these to C structs, made and read without a Python call."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]]

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # params are a mapping

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={v!r}" for n, v in zip(self._fields, self._values(), strict=True))
        return f"{type(self).__name__}({shown})"


class SipUri(_Value):
    """sip:/sips: URI (RFC 3261 §19.1). `user` holds the whole userinfo (with any password)."""

    __slots__ = ("headers", "host", "params", "port", "scheme", "user")
    _fields = ("scheme", "user", "host", "port", "params", "headers")

    def __init__(
        self,
        scheme: str,
        user: str | None,
        host: str,
        port: int | None,
        params: Params,
        headers: str = "",
    ) -> None:
        self.scheme: Final = scheme
        self.user: Final = user
        self.host: Final = host
        self.port: Final = port
        self.params: Final = params
        self.headers: Final = headers

    def __str__(self) -> str:
        userinfo = "" if self.user is None else f"{self.user}@"
        hdrs = f"?{self.headers}" if self.headers else ""
        hostport = _format_hostport(self.host, self.port)
        return f"{self.scheme}:{userinfo}{hostport}{_format_params(self.params)}{hdrs}"


def _read_uri(text: str) -> SipUri:
    scheme, colon, rest = text.partition(":")
    if not colon or scheme.lower() not in ("sip", "sips"):
        raise SipParseError(f"not a sip: or sips: URI: {text[:60]!r}")
    if not _SCHEME_URI_RE.fullmatch(text):
        raise SipParseError(f"invalid characters in URI {text[:60]!r}")
    # '@' cannot appear unescaped after the userinfo, while ';' and '?' can appear inside it.
    user, at, hostpart = rest.rpartition("@")
    if at and not user:
        raise SipParseError(f"empty userinfo in URI {text[:60]!r}")
    hostpart, _, headers = hostpart.partition("?")
    hostport, *raw_params = hostpart.split(";")
    host, port = _split_hostport(hostport, "URI")
    params: dict[str, str | None] = {}
    for raw in raw_params:
        name, eq, value = raw.partition("=")
        if not name or (eq and not value):
            raise SipParseError(f"empty URI parameter in {text[:60]!r}")
        params[name.lower()] = value if eq else None
    return SipUri(
        scheme.lower(), user if at else None, host, port, MappingProxyType(params), headers
    )


parse_uri: Final = Memoized(_read_uri)


class NameAddr(_Value):
    """From/To/Contact/Route value; `display` is unquoted, `params` are header parameters."""

    __slots__ = ("display", "params", "uri")
    _fields = ("display", "uri", "params")

    def __init__(self, display: str | None, uri: str, params: Params) -> None:
        self.display: Final = display
        self.uri: Final = uri
        self.params: Final = params

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        display = "" if self.display is None else _quote(self.display) + " "
        return f"{display}<{self.uri}>{_format_params(self.params)}"


_DISPLAY_RE: Final = re.compile(
    rf"[ \t]*(?:({_QUOTED})|({_TOKEN}(?:[ \t]+{_TOKEN})*))?[ \t]*<", re.S
)
_ADDR_SPEC_END_RE: Final = re.compile(r"[^\s;]*")


def parse_name_addr(text: str) -> NameAddr:
    # A tag is made for one request or one dialog (RFC 3261 §19.3): a tagged value is not
    # worth remembering, and would push out the ones that recur (an endpoint's To, Contact).
    if "tag=" in text:
        return _read_name_addr(text)
    return _remembered_name_addr(text)


def _read_name_addr(text: str) -> NameAddr:
    if text[:1] == "<":
        # The usual shape, "<uri>;params" with no display name: what the general match below
        # finds for it, without the match.
        close = text.find(">")
        if close > 0:
            uri = text[1:close]
            _check_uri(uri)
            return NameAddr(None, uri, _parse_params(text, close + 1, "name-addr"))
    return _parse_name_addr(text)


_remembered_name_addr: Final = Memoized(_read_name_addr)


def _parse_name_addr(text: str) -> NameAddr:
    """parse_name_addr for every shape: display names, bare addr-specs, white space."""
    head = _DISPLAY_RE.match(text)
    if head is not None:
        quoted, tokens = head.groups()
        display = _unquote(quoted) if quoted is not None else tokens
        close = text.find(">", head.end())
        if close < 0:
            raise SipParseError(f"unterminated <URI> in {text[:60]!r}")
        uri, pos = text[head.end() : close], close + 1
    else:
        if text.lstrip(" \t").startswith('"'):
            raise SipParseError(f"bad quoted display name in {text[:60]!r}")
        display = None
        start = _LWS.match(text).end()  # type: ignore[union-attr]
        end = _ADDR_SPEC_END_RE.match(text, start).end()  # type: ignore[union-attr]
        uri, pos = text[start:end], end
        if "," in uri or "?" in uri:
            raise SipParseError(f"URI with ',' or '?' must be in <> in {text[:60]!r}")
    _check_uri(uri)
    return NameAddr(display, uri, _parse_params(text, pos, "name-addr"))


def _verify_uri(uri: str) -> bool:
    """True, or SipParseError; remembered, as a URI recurs in every message of an endpoint."""
    if not _SCHEME_URI_RE.fullmatch(uri):
        raise SipParseError(f"invalid URI {uri[:60]!r}")
    if _is_sip_uri(uri):
        parse_uri(uri)
    return True


_check_uri: Final = Memoized(_verify_uri)


def _is_sip_uri(uri: str) -> bool:
    return uri.partition(":")[0].lower() in ("sip", "sips")


class Via(_Value):
    __slots__ = ("host", "params", "port", "transport")
    _fields = ("transport", "host", "port", "params")

    def __init__(self, transport: str, host: str, port: int | None, params: Params) -> None:
        self.transport: Final = transport
        self.host: Final = host
        self.port: Final = port
        self.params: Final = params

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> str:
        return _format_hostport(self.host, self.port)

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {self.sent_by}{_format_params(self.params)}"


_VIA_RE: Final = re.compile(
    rf"[ \t]*({_TOKEN})[ \t]*/[ \t]*({_TOKEN})[ \t]*/[ \t]*({_TOKEN})[ \t]+"
    r"(\[[0-9A-Fa-f:.]*\]|[A-Za-z0-9_.\-]+)(?:[ \t]*:[ \t]*([0-9]+))?"
)


# Each request has a branch of its own, so whole Via texts do not repeat from one request to
# the next, but one request's is read up to three times (checked, its transaction's key, the
# response's Via): the last few dozen are kept (a read of twenty REGISTERs is parsed before the
# first is answered). Their "SIP/2.0/TCP host:port" before the first ';' does repeat: that part
# is remembered.
def _read_via(text: str) -> Via:
    """One via-parm (a single comma-separated item of a Via header)."""
    semi = text.find(";")
    if semi > 0:
        sent = _sent_by(text[:semi])
        if sent is not None:
            return Via(sent[0], sent[1], sent[2], _parse_params(text, semi, "Via"))
    return _parse_via(text)


parse_via: Final = Memoized(_read_via, size=64)


def _read_sent_by(text: str) -> tuple[str, str, int | None] | None:
    """The transport, host and port of a Via's text before its parameters, or None when that
    is not exactly a sent-protocol and sent-by (the general parse then says what is wrong)."""
    try:
        via = _parse_via(text)
    except SipParseError:
        return None
    return (via.transport, via.host, via.port) if not via.params else None


_sent_by: Final = Memoized(_read_sent_by)


def _parse_via(text: str) -> Via:
    found = _VIA_RE.match(text)
    if found is None:
        raise SipParseError(f"malformed Via {text[:60]!r}")
    protocol, version, transport, host, port = found.groups()
    if protocol.upper() != "SIP" or version != "2.0":
        raise SipParseError(f"Via protocol {protocol}/{version} is not SIP/2.0")
    if host.startswith("["):
        host = host[1:-1]
    return Via(
        transport.upper(),
        _check_host(host, "Via"),
        None if port is None else _port(port, "Via"),
        _parse_params(text, found.end(), "Via"),
    )


_CSEQ_RE: Final = re.compile(rf"[ \t]*([0-9]{{1,10}})[ \t]+({_TOKEN})[ \t]*")


def _read_cseq(text: str) -> tuple[int, str]:
    found = _CSEQ_RE.fullmatch(text)
    if found is None or int(found.group(1)) > 2**31 - 1:
        raise SipParseError(f"invalid CSeq {text[:40]!r}")
    return int(found.group(1)), found.group(2)


parse_cseq: Final = Memoized(_read_cseq)


@dataclass(frozen=True, slots=True)
class WarningValue:
    code: int
    agent: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.agent} {_quote(self.text)}"


_WARNING_RE: Final = re.compile(rf"[ \t]*([0-9]{{3}})[ \t]+([^\s\"]+)[ \t]+({_QUOTED})[ \t]*", re.S)


def parse_warning(text: str) -> WarningValue:
    found = _WARNING_RE.fullmatch(text)
    if found is None:
        raise SipParseError(f"invalid Warning {text[:60]!r}")
    return WarningValue(int(found.group(1)), found.group(2), _unquote(found.group(3)))


# --- building messages -----------------------------------------------------------------------

REASON_PHRASES: Final[dict[int, str]] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 305: "Use Proxy",
    380: "Alternative Service", 400: "Bad Request", 401: "Unauthorized",
    402: "Payment Required", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout",
    410: "Gone", 413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    421: "Extension Required", 423: "Interval Too Brief", 430: "Flow Failed",
    439: "First Hop Lacks Outbound Support", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
    604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}  # fmt: skip

BRANCH_MAGIC_COOKIE: Final = "z9hG4bK"


def new_branch() -> str:
    return BRANCH_MAGIC_COOKIE + secrets.token_hex(10)


def new_tag() -> str:
    return secrets.token_hex(6)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(12)}@{host}"


_COPIED: Final = frozenset(("via", "from", "to", "call-id", "cseq"))


def response_to(
    request: Request, status: int, reason: str | None = None, *, tag: str | None = None
) -> Response:
    """RFC 3261 §8.2.6.2: a response carrying the request's Via, From, To, Call-ID, CSeq;
    ``tag`` is the To tag to add (default: a random one), for a core with its own randomness."""
    return Response(
        status,
        REASON_PHRASES.get(status, "Unknown") if reason is None else reason,
        Headers._parsed(_reply_entries(request, status, tag or new_tag())),
    )


def response_bytes(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    tag: str,
    headers: Iterable[tuple[str, str]] = (),
    top_via: str | None = None,
) -> bytes:
    """``serialize_message`` of ``response_to(request, status, reason, tag=tag)`` with
    ``headers`` added and, if given, ``top_via`` in place of the first via-parm, without the
    Response in between: what a server that only answers needs, and a registrar's hot path.
    The added values must not hold CR or LF (a server's own, or values of a parsed message)."""
    if reason is None:
        reason = REASON_PHRASES.get(status, "Unknown")
    entries = request.headers._entries
    if top_via is None and len(request.headers.index.get("to", ())) <= 1:
        tagged = _tagged_to(request, status, tag)  # the usual case, in one pass
    else:
        entries, tagged = _restamped(_reply_entries(request, status, tag), top_via), None
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [
        (f"To: {tagged}" if tagged is not None and key == "to" else f"{name}: {value}")
        for key, name, value in entries
        if key in _COPIED
    ]
    lines += [f"{_canonical(name)}: {value}" for name, value in headers]
    lines += ("Content-Length: 0", "", "")
    return "\r\n".join(lines).encode("utf-8")


def _tagged_to(request: Request, status: int, tag: str) -> str | None:
    """The To of a response with our tag added, or None when the request's To is kept."""
    to = request.headers.index.get("to")
    if not to or status <= 100:
        return None
    value = to[0]
    if "tag" in value and parse_name_addr(value).tag is not None:
        return None
    return f"{value};tag={tag}"


def _reply_entries(request: Request, status: int, tag: str) -> list[HeaderEntry]:
    # The request's entries were checked when it was parsed or built: copied as they are.
    tagged = _tagged_to(request, status, tag)
    entries = request.headers._entries
    if tagged is None:
        return [e for e in entries if e[0] in _COPIED]
    to = ("to", "To", tagged)
    copied = [to if e[0] == "to" else e for e in entries if e[0] in _COPIED]
    if len(request.headers.index["to"]) > 1:  # Headers.set semantics for a request built so
        first = copied.index(to)
        copied[first + 1 :] = [e for e in copied[first + 1 :] if e[0] != "to"]
    return copied


def _restamped(entries: list[HeaderEntry], top_via: str | None) -> list[HeaderEntry]:
    """``entries`` with ``top_via`` (if any) for the first via-parm; the other via-parms of the
    first Via line follow it as Via entries of their own."""
    if top_via is None:
        return entries
    first = next(i for i, e in enumerate(entries) if e[0] == "via")
    rest = [("via", "Via", v) for v in _split_list(entries[first][2])[1:] if v]
    return [*entries[:first], ("via", "Via", top_via), *rest, *entries[first + 1 :]]
