"""Domain names in presentation format: parsing relative/absolute names and comparing them.

Names are compared case-insensitively (RFC 4343), so lookups use a ``NameKey``: the name's
labels lower-cased, leftmost first. The ``DNSLabel`` keeps the original spelling for the wire.
"""

from __future__ import annotations

import re

from dnslib import DNSLabel

NameKey = tuple[bytes, ...]

# Host names plus the underscore labels of SRV owners (RFC 2782) and a leading wildcard label.
_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?|[A-Za-z0-9_]")
MAX_LABEL = 63
MAX_NAME_WIRE = 255


class BadName(ValueError):
    """A name that is not a valid domain name; the message says why."""


def name_key(name: DNSLabel) -> NameKey:
    return tuple(label.lower() for label in name.label)


def is_within(key: NameKey, origin: NameKey) -> bool:
    """True if ``key`` is ``origin`` or below it."""
    return len(key) >= len(origin) and key[len(key) - len(origin) :] == origin


def name_text(name: DNSLabel) -> str:
    """The name without its trailing dot, as events show it ("_sip._tcp.uctest.local")."""
    return str(name).rstrip(".") or "."


def parse_name(text: str, origin: DNSLabel | None = None) -> DNSLabel:
    """Parse ``text`` ("exp1", "@", "exp1.uctest.local.") relative to ``origin``.

    Raises ``BadName`` naming the problem. Without an origin, the name is taken as absolute.
    """
    if text == "@":
        if origin is None:
            raise BadName("'@' needs a zone origin")
        return origin
    if text == ".":
        return DNSLabel(())
    if not text or text.startswith(".") or ".." in text:
        raise BadName(f"bad name {text!r}: empty label")
    absolute = text.endswith(".")
    labels = text.rstrip(".").split(".")
    for index, label in enumerate(labels):
        if label == "*" and index == 0:
            continue
        if len(label) > MAX_LABEL:
            raise BadName(f"bad name {text!r}: label {label[:20]!r}... longer than 63")
        if not _LABEL.fullmatch(label):
            raise BadName(
                f"bad name {text!r}: label {label!r} may only hold letters, digits, '-' and '_'"
            )
    parts = tuple(label.encode("ascii") for label in labels)
    if not absolute and origin is not None:
        parts += origin.label
    if sum(len(part) + 1 for part in parts) + 1 > MAX_NAME_WIRE:
        raise BadName(f"bad name {text!r}: longer than 255 octets")
    return DNSLabel(parts)
