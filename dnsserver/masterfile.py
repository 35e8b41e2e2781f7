"""RFC 1035 §5 master files: ``$ORIGIN``, ``$TTL``, relative and blank owners, ( ) continuation.

dnslib's ZoneParser mistakes relative SRV targets for absolute ones and has no error positions,
so the file is scanned here and each record's RDATA goes through ``parse_rdata``.
"""

from __future__ import annotations

from pathlib import Path

from dnslib import DNSLabel

from dnsserver.names import BadName, parse_name
from dnsserver.rdata import (
    RECORD_TYPES,
    BadRecord,
    ParsedRecord,
    parse_rdata,
    parse_ttl,
    read_quoted,
)

MAX_FILE_BYTES = 16 * 1024 * 1024


def load_master_file(path: Path, origin: DNSLabel, default_ttl: int) -> list[ParsedRecord]:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise BadRecord(f"zone file {path} is larger than {MAX_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadRecord(f"cannot read zone file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise BadRecord(f"zone file {path} is not UTF-8 text") from None
    return parse_master(text, origin, default_ttl, source=str(path))


def _entries(text: str, source: str) -> list[tuple[int, bool, list[str]]]:
    """Logical lines as (line number, starts with a blank, tokens): comments dropped,
    parenthesised continuations joined, quoted strings kept whole (quotes removed)."""
    entries: list[tuple[int, bool, list[str]]] = []
    tokens: list[str] = []
    depth = 0
    start_line, blank_owner = 1, False
    line = 1
    i, n = 0, len(text)
    at_line_start = True
    while i <= n:
        char = text[i] if i < n else "\n"
        if at_line_start and depth == 0 and not tokens:
            start_line, blank_owner = line, char in " \t"
        at_line_start = False
        if char == "\n":
            if depth == 0 and tokens:
                entries.append((start_line, blank_owner, tokens))
                tokens = []
            line += 1
            at_line_start = True
            i += 1
        elif char in " \t\r":
            i += 1
        elif char == ";":
            while i < n and text[i] != "\n":
                i += 1
        elif char == "(":
            depth += 1
            i += 1
        elif char == ")":
            if depth == 0:
                raise BadRecord(f"{source}:{line}: ')' without '('")
            depth -= 1
            i += 1
        elif char == '"':
            try:
                token, i = read_quoted(text, i)
            except BadRecord as exc:
                raise BadRecord(f"{source}:{line}: {exc}") from None
            tokens.append(token)
        else:
            begin = i
            while i < n and text[i] not in ' \t\r\n;()"':
                i += 1
            tokens.append(text[begin:i])
    if depth:
        raise BadRecord(f"{source}:{line - 1}: '(' is never closed")
    return entries


def parse_master(
    text: str, origin: DNSLabel, default_ttl: int, *, source: str = "<zone>"
) -> list[ParsedRecord]:
    records: list[ParsedRecord] = []
    ttl = default_ttl
    owner: DNSLabel | None = None
    for line, blank_owner, tokens in _entries(text, source):
        try:
            head = tokens[0].upper()
            if head == "$ORIGIN":
                if len(tokens) != 2:
                    raise BadRecord("$ORIGIN takes one domain name")
                origin = parse_name(tokens[1], origin)
                continue
            if head == "$TTL":
                if len(tokens) != 2:
                    raise BadRecord("$TTL takes one TTL")
                ttl = parse_ttl(tokens[1])
                continue
            if head.startswith("$"):
                raise BadRecord(f"{tokens[0]} is not supported")
            if not blank_owner:
                owner = parse_name(tokens.pop(0), origin)
            if owner is None:
                raise BadRecord("the first record needs an owner name")
            record_ttl, rest = _ttl_and_class(tokens, ttl)
            if not rest:
                raise BadRecord("missing record type")
            rtype = rest[0].upper()
            if rtype not in RECORD_TYPES:
                raise BadRecord(f"unsupported record type {rest[0]!r}")
            records.append(
                ParsedRecord(owner, rtype, record_ttl, parse_rdata(rtype, rest[1:], origin))
            )
        except (BadRecord, BadName) as exc:
            raise BadRecord(f"{source}:{line}: {exc}") from None
    return records


def _ttl_and_class(tokens: list[str], default_ttl: int) -> tuple[int, list[str]]:
    """Strip the optional TTL and class, which RFC 1035 allows in either order."""
    ttl = default_ttl
    rest = list(tokens)
    for _ in range(2):
        if rest and rest[0][:1].isdigit():
            ttl = parse_ttl(rest.pop(0))
        elif rest and rest[0].upper() == "IN":
            rest.pop(0)
        elif rest and rest[0].upper() in ("CH", "HS", "CS"):
            raise BadRecord(f"class {rest[0]} is not supported; only IN")
    return ttl, rest
