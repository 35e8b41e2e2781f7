"""RDATA in RFC 1035 master-file presentation format, parsed into dnslib record data.

dnslib's own ``fromZone`` parsers ignore the origin for SRV targets and accept malformed
addresses, so each supported type is parsed here, with a message that says what was expected.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from dnslib import AAAA, CNAME, NAPTR, NS, PTR, QTYPE, RD, SOA, SRV, TXT, A, DNSLabel

from dnsserver.names import BadName, parse_name

RECORD_TYPES = ("A", "AAAA", "SRV", "CNAME", "NS", "TXT", "PTR", "NAPTR", "SOA")
MAX_TTL = 2**31 - 1
_TIME = re.compile(r"(\d+)([smhdwSMHDW]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True, slots=True)
class ParsedRecord:
    """One record after parsing: absolute owner name, type, effective TTL, dnslib RDATA."""

    name: DNSLabel
    rtype: str
    ttl: int
    rdata: RD


class BadRecord(ValueError):
    """Record text that cannot be parsed; the message names the problem."""


def read_quoted(text: str, i: int) -> tuple[str, int]:
    """The "quoted string" opening at ``text[i]``: its content with \\-escapes resolved, and
    the index just past the closing quote. A string never spans lines."""
    chunk: list[str] = []
    i, n = i + 1, len(text)
    while i < n and text[i] != '"':
        if text[i] == "\\" and i + 1 < n:
            i += 1
        if text[i] == "\n":
            break
        chunk.append(text[i])
        i += 1
    if i >= n or text[i] != '"':
        raise BadRecord("unterminated quoted string")
    return "".join(chunk), i + 1


def tokenize(text: str) -> list[str]:
    """Split presentation text on blanks, keeping "quoted strings" (with \\" escapes) whole.

    Quotes are removed; an empty quoted string stays an empty token.
    """
    tokens: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char.isspace():
            i += 1
        elif char == '"':
            token, i = read_quoted(text, i)
            tokens.append(token)
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] != '"':
                i += 1
            tokens.append(text[start:i])
    return tokens


def parse_ttl(text: str) -> int:
    """A TTL in seconds, allowing BIND units ("1h30m")."""
    parts = _TIME.findall(text)
    if not text or "".join(number + unit for number, unit in parts) != text:
        raise BadRecord(f"bad TTL {text!r}")
    ttl = sum(int(number) * _UNIT[unit.lower()] for number, unit in parts)
    if ttl > MAX_TTL:
        raise BadRecord(f"TTL {text!r} is above 2**31-1")
    return ttl


def _u16(text: str, what: str) -> int:
    if not text.isdigit() or int(text) > 0xFFFF:
        raise BadRecord(f"{what} must be a number 0-65535, not {text!r}")
    return int(text)


def _u32(text: str, what: str) -> int:
    try:
        value = parse_ttl(text)
    except BadRecord:
        raise BadRecord(f"{what} must be a number, not {text!r}") from None
    return value


def _a(tokens: list[str], origin: DNSLabel) -> RD:
    if len(tokens) != 1:
        raise BadRecord("A data must be one IPv4 address")
    try:
        return A(str(ipaddress.IPv4Address(tokens[0])))
    except ValueError:
        raise BadRecord(f"A data must be an IPv4 address, not {tokens[0]!r}") from None


def _aaaa(tokens: list[str], origin: DNSLabel) -> RD:
    if len(tokens) != 1:
        raise BadRecord("AAAA data must be one IPv6 address")
    try:
        return AAAA(tuple(ipaddress.IPv6Address(tokens[0]).packed))
    except ValueError:
        raise BadRecord(f"AAAA data must be an IPv6 address, not {tokens[0]!r}") from None


def _srv(tokens: list[str], origin: DNSLabel) -> RD:
    if len(tokens) != 4:
        raise BadRecord("SRV data must be 'priority weight port target'")
    priority, weight, port = (
        _u16(tokens[i], f"SRV {field}") for i, field in enumerate(("priority", "weight", "port"))
    )
    return SRV(priority, weight, port, parse_name(tokens[3], origin))


def _single_name(rtype: str, cls: Callable[[DNSLabel], RD]) -> Callable[[list[str], DNSLabel], RD]:
    def parse(tokens: list[str], origin: DNSLabel) -> RD:
        if len(tokens) != 1:
            raise BadRecord(f"{rtype} data must be one domain name")
        return cls(parse_name(tokens[0], origin))

    return parse


def _txt(tokens: list[str], origin: DNSLabel) -> RD:
    if not tokens:
        raise BadRecord("TXT data must be one or more strings")
    data = [token.encode() for token in tokens]
    if any(len(item) > 255 for item in data):
        raise BadRecord("TXT strings must be at most 255 bytes each")
    return TXT(data)


def _naptr(tokens: list[str], origin: DNSLabel) -> RD:
    if len(tokens) != 6:
        raise BadRecord(
            'NAPTR data must be \'order preference "flags" "service" "regexp" replacement\''
        )
    order = _u16(tokens[0], "NAPTR order")
    preference = _u16(tokens[1], "NAPTR preference")
    strings = [token.encode() for token in tokens[2:5]]
    if any(len(item) > 255 for item in strings):
        raise BadRecord("NAPTR strings must be at most 255 bytes each")
    return NAPTR(order, preference, *strings, parse_name(tokens[5], origin))


def _soa(tokens: list[str], origin: DNSLabel) -> RD:
    if len(tokens) != 7:
        raise BadRecord("SOA data must be 'mname rname serial refresh retry expire minimum'")
    fields = ("serial", "refresh", "retry", "expire", "minimum")
    times = [_u32(token, f"SOA {field}") for token, field in zip(tokens[2:], fields, strict=True)]
    if any(value > 0xFFFFFFFF for value in times):
        raise BadRecord("SOA numbers must fit in 32 bits")
    return SOA(parse_name(tokens[0], origin), parse_name(tokens[1], origin), times)


_PARSERS: dict[str, Callable[[list[str], DNSLabel], RD]] = {
    "A": _a,
    "AAAA": _aaaa,
    "SRV": _srv,
    "CNAME": _single_name("CNAME", CNAME),
    "NS": _single_name("NS", NS),
    "PTR": _single_name("PTR", PTR),
    "TXT": _txt,
    "NAPTR": _naptr,
    "SOA": _soa,
}


def parse_rdata(rtype: str, data: str | list[str], origin: DNSLabel) -> RD:
    """Parse RDATA text (or its tokens) of type ``rtype``; relative names use ``origin``."""
    parser = _PARSERS.get(rtype.upper())
    if parser is None:
        raise BadRecord(f"unsupported record type {rtype!r}; use one of {', '.join(RECORD_TYPES)}")
    tokens = tokenize(data) if isinstance(data, str) else data
    try:
        return parser(tokens, origin)
    except BadName as exc:
        raise BadRecord(f"{rtype} data: {exc}") from None


def rtype_code(rtype: str) -> int:
    return int(getattr(QTYPE, rtype.upper()))


def rdata_text(rdata: RD) -> str:
    """Presentation text of record data, as events and status views show it."""
    return str(rdata.toZone())
