"""STUN Binding answers (RFC 5389), the UDP keep-alive of SIP outbound (RFC 5626 §4.4.2, §8).

A client on a UDP flow sends a Binding request now and then; the answer carries the address
and port its packets came from (XOR-MAPPED-ADDRESS), so it learns that the flow, and any NAT
binding along it, still stands. Only the Binding method is answered; anything else is dropped.
"""

from __future__ import annotations

import ipaddress
import struct

MAGIC_COOKIE = 0x2112A442
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
XOR_MAPPED_ADDRESS = 0x0020
HEADER = struct.Struct("!HHI12s")


def is_stun(data: bytes) -> bool:
    """A STUN message (first two bits zero, the magic cookie), never a SIP message."""
    return len(data) >= HEADER.size and data[0] < 0x40 and data[4:8] == b"\x21\x12\xa4\x42"


def binding_response(request: bytes, source: tuple[str, int]) -> bytes | None:
    """The Binding success response for ``request`` from ``source``; None if not a Binding
    request (or malformed)."""
    if not is_stun(request):
        return None
    kind, length, _, transaction = HEADER.unpack_from(request)
    if kind != BINDING_REQUEST or length % 4 or HEADER.size + length != len(request):
        return None
    host, port = source
    address = ipaddress.ip_address(host)
    mask = MAGIC_COOKIE.to_bytes(4, "big") + (transaction if address.version == 6 else b"")
    packed = bytes(a ^ b for a, b in zip(address.packed, mask, strict=False))
    family = 0x01 if address.version == 4 else 0x02
    value = struct.pack("!BBH", 0, family, port ^ (MAGIC_COOKIE >> 16)) + packed
    attribute = struct.pack("!HH", XOR_MAPPED_ADDRESS, len(value)) + value
    return HEADER.pack(BINDING_SUCCESS, len(attribute), MAGIC_COOKIE, transaction) + attribute


def binding_request(transaction: bytes) -> bytes:
    """A Binding request with no attributes (a client's keep-alive; used by tests)."""
    return HEADER.pack(BINDING_REQUEST, 0, MAGIC_COOKIE, transaction)


def mapped_address(response: bytes) -> tuple[str, int] | None:
    """The XOR-MAPPED-ADDRESS of a Binding success response; None if there is none."""
    if not is_stun(response):
        return None
    kind, length, _, transaction = HEADER.unpack_from(response)
    pos, end = HEADER.size, min(len(response), HEADER.size + length)
    while kind == BINDING_SUCCESS and pos + 4 <= end:
        attr, size = struct.unpack_from("!HH", response, pos)
        value = response[pos + 4 : pos + 4 + size]
        if attr == XOR_MAPPED_ADDRESS and size in (8, 20):
            port = struct.unpack_from("!H", value, 2)[0] ^ (MAGIC_COOKIE >> 16)
            mask = MAGIC_COOKIE.to_bytes(4, "big") + transaction
            raw = bytes(a ^ b for a, b in zip(value[4:], mask, strict=False))
            return str(ipaddress.ip_address(raw)), port
        pos += 4 + (size + 3) // 4 * 4
    return None
