"""The sans-I/O answering core: query bytes in, response bytes out, plus what happened.

Authoritative only (AA set, RA clear, never recursive). Untrusted bytes never raise out of
``Authority.answer``: a packet whose header can be read and that is not a response gets an
answer (FORMERR if it cannot be parsed); anything shorter than a header is dropped.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from dnslib import EDNS0, OPCODE, QTYPE, RCODE, RR, DNSHeader, DNSLabel, DNSQuestion, DNSRecord

from dnsserver.config import ZoneConfig
from dnsserver.faults import Fault
from dnsserver.names import NameKey, name_key, name_text
from dnsserver.rdata import rdata_text
from dnsserver.zone import ADDRESS_TYPES, RRset, Zone

Transport = Literal["udp", "tcp"]

HEADER = struct.Struct("!HHHHHH")
QR, AA, TC, RD, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0010
CLASS_IN, CLASS_ANY = 1, 255
MAX_NAME_OCTETS = 255  # RFC 1035 §2.3.4
UDP_MINIMUM = 512  # RFC 1035 §4.2.1; also the floor for an EDNS payload size (RFC 6891 §6.2.5)
OUR_UDP_PAYLOAD = 1232  # what we advertise: the DNS Flag Day 2020 size, safe from fragmentation
MAX_CNAME_CHAIN = 8
TRANSFER_TYPES = (QTYPE.AXFR, QTYPE.IXFR)
ADDITIONAL_FOR = {QTYPE.SRV: "target", QTYPE.NS: "label"}
CACHE_LIMIT = 4096
MAX_VARIANTS = 64  # rotation states kept per query (product of the rotating RRsets' sizes)


@dataclass(frozen=True, slots=True)
class QueryInfo:
    """What one query came to, for the ``dns.query`` event and the counters."""

    client: str
    transport: Transport
    name: str
    qtype: str
    rcode: str
    answers: list[str] = field(default_factory=list)
    truncated: bool = False
    dropped: bool = False  # a fault swallowed the query: no response at all
    delay: float = 0.0  # a fault asks the shell to hold the response this long

    def event_fields(self) -> dict[str, object]:
        fields: dict[str, object] = {
            "client": self.client,
            "transport": self.transport,
            "name": self.name,
            "qtype": self.qtype,
            "rcode": self.rcode,
            "answers": self.answers,
        }
        if self.truncated:
            fields["truncated"] = True
        if self.delay:
            fields["delay"] = self.delay
        return fields


# RFC 2136 UPDATE: (message, client, transport) -> response; see dnsserver.update.
UpdateHook = Callable[[bytes, str, Transport], tuple[bytes | None, QueryInfo]]


@dataclass(slots=True)
class _Answer:
    """A response being assembled."""

    rcode: int = RCODE.NOERROR
    answer: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    # False once a shuffled RRset is used: the next answer cannot be predicted.
    cacheable: bool = True
    # Rotating RRsets used, with the offset each had and whether this answer advanced it: a
    # kept answer is only valid while every one of them is at that offset again.
    rotating: list[tuple[RRset, int, bool]] = field(default_factory=list)


def _new_cell(_info: QueryInfo) -> list[int]:
    return [0]


class CachedAnswer:
    """A kept response: the bytes after the 2-byte ID, and what it was.

    ``cell`` is a one-element counter the shell bumps on every hit (see ``Authority.cell_for``),
    so counting a cached answer costs one integer add. A response that carries rotating RRsets
    is kept once per rotation state, in ``variants`` of an entry whose ``rotating`` names the
    RRsets: a hit then advances them exactly as answering afresh would.
    """

    __slots__ = ("advance", "cell", "info", "rotating", "tail", "variants")

    def __init__(
        self,
        tail: bytes,
        info: QueryInfo,
        cell: list[int],
        rotating: tuple[RRset, ...] | None = None,
        advance: tuple[bool, ...] = (),
    ) -> None:
        self.tail = tail
        self.info = info
        self.cell = cell
        self.rotating = rotating
        self.advance = advance
        self.variants: dict[tuple[int, ...], CachedAnswer] = {}


def _client_text(client: tuple[str, int]) -> str:
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _wire_length(name: DNSLabel) -> int:
    return sum(len(label) + 1 for label in name.label) + 1


def _header_only(query_id: int, flags: int, rcode: int) -> bytes:
    """A response with no sections: for queries too broken to echo their question."""
    opcode = flags & 0x7800
    return HEADER.pack(query_id, QR | opcode | (flags & RD) | rcode, 0, 0, 0, 0)


class Authority:
    def __init__(self, zones: list[ZoneConfig], *, rng: random.Random | None = None) -> None:
        self.zones = [Zone.from_config(config) for config in zones]
        self.rng = rng or random.Random()
        self.fault = Fault()
        # Keyed on the query bytes after the ID (so RD, EDNS and letter case stay apart).
        self.caches: dict[Transport, dict[bytes, CachedAnswer]] = {"udp": {}, "tcp": {}}
        # How a kept answer gets its hit counter; the shell replaces this to share counters.
        self.cell_for: Callable[[QueryInfo], list[int]] = _new_cell
        self.changes = 0  # calls of zones_changed(): zone changes and faults
        self.update_handler: UpdateHook | None = None  # without one, UPDATE gets NOTIMP

    # -- zones ---------------------------------------------------------------------------

    def zone_for(self, key: NameKey) -> Zone | None:
        """The zone with the longest origin that holds ``key``."""
        best: Zone | None = None
        for zone in self.zones:
            if zone.contains(key) and (best is None or len(zone.key) > len(best.key)):
                best = zone
        return best

    def zone_named(self, origin: str) -> Zone:
        key = tuple(label.lower().encode() for label in origin.rstrip(".").split(".") if label)
        for zone in self.zones:
            if zone.key == key:
                return zone
        known = ", ".join(name_text(zone.origin) for zone in self.zones)
        raise KeyError(f"no zone {origin!r}; zones: {known}")

    def zones_changed(self) -> None:
        """Call after any change to zone data: cached answers may now be wrong."""
        self.changes += 1
        for cache in self.caches.values():
            cache.clear()

    def cached(self, transport: Transport, tail: bytes) -> CachedAnswer | None:
        """The kept answer to a query whose bytes after the ID are ``tail``, if any.

        For a rotating answer this is the variant for the RRsets' current offsets, and the
        RRsets move on as a fresh answer would move them. Never used while a fault is set.
        """
        entry = self.caches[transport].get(tail)
        if entry is None or self.fault.active:
            return None
        rotating = entry.rotating
        if rotating is None:
            return entry
        state = tuple([rrset.offset % len(rrset.rdatas) for rrset in rotating])
        variant = entry.variants.get(state)
        if variant is not None:
            for rrset, start, advance in zip(rotating, state, entry.advance, strict=True):
                if advance:
                    rrset.offset = start + 1
        return variant

    def _keep(
        self,
        transport: Transport,
        tail: bytes,
        wire: bytes,
        info: QueryInfo,
        rotating: list[tuple[RRset, int, bool]],
    ) -> None:
        cache = self.caches[transport]
        if len(cache) >= CACHE_LIMIT:
            cache.clear()
        kept = CachedAnswer(wire[2:], info, self.cell_for(info))
        if not rotating:
            cache[tail] = kept
            return
        rrsets = tuple(rrset for rrset, _, _ in rotating)
        entry = cache.get(tail)
        if entry is None or entry.rotating != rrsets:
            entry = CachedAnswer(b"", info, kept.cell, rrsets, tuple(a for _, _, a in rotating))
            cache[tail] = entry
        if len(entry.variants) < MAX_VARIANTS:
            entry.variants[tuple(start for _, start, _ in rotating)] = kept

    # -- answering -----------------------------------------------------------------------

    def answer(
        self, query: bytes, client: tuple[str, int], transport: Transport
    ) -> tuple[bytes | None, QueryInfo | None]:
        """Answer one query. ``None`` bytes mean send nothing."""
        if len(query) < HEADER.size:
            return None, None
        query_id, flags = struct.unpack_from("!HH", query)
        if flags & QR:  # never answer a response: two servers could ping-pong forever
            return None, None
        who = _client_text(client)
        if (flags >> 11) & 0xF == OPCODE.UPDATE and self.update_handler is not None:
            return self.update_handler(query, who, transport)  # changes zones: never cached
        cached = self.cached(transport, query[2:])
        if cached is not None:
            return query[:2] + cached.tail, replace(cached.info, client=who)
        rotating: list[tuple[RRset, int, bool]] = []
        try:
            wire, info, cacheable = self._answer(query, query_id, flags, who, transport, rotating)
        except Exception:  # a bug must cost one query, never the server
            wire = _header_only(query_id, flags, RCODE.SERVFAIL)
            info, cacheable = QueryInfo(who, transport, "", "", "SERVFAIL"), False
        if cacheable and wire is not None and not self.fault.active:
            self._keep(transport, query[2:], wire, info, rotating)
        return wire, info

    def _answer(
        self,
        query: bytes,
        query_id: int,
        flags: int,
        who: str,
        transport: Transport,
        rotating: list[tuple[RRset, int, bool]],
    ) -> tuple[bytes | None, QueryInfo, bool]:
        opcode = (flags >> 11) & 0xF
        try:
            request = DNSRecord.parse(query)
        except Exception:  # dnslib raises many kinds on garbage
            request = None
        if opcode != OPCODE.QUERY:
            info = QueryInfo(who, transport, "", OPCODE.get(opcode), "NOTIMP")
            return _header_only(query_id, flags, RCODE.NOTIMP), info, True
        if (
            request is None
            or len(request.questions) != 1
            or _wire_length(request.questions[0].qname) > MAX_NAME_OCTETS
        ):
            # dnslib parses a name over 255 octets (RFC 1035 §2.3.4) but cannot pack it back.
            return (
                _header_only(query_id, flags, RCODE.FORMERR),
                QueryInfo(who, transport, "", "", "FORMERR"),
                True,
            )
        question = request.questions[0]
        name, qtype = name_text(question.qname), QTYPE.get(question.qtype)
        options = [rr for rr in request.ar if rr.rtype == QTYPE.OPT]
        if len(options) > 1:  # RFC 6891 §6.1.1
            return (
                _header_only(query_id, flags, RCODE.FORMERR),
                QueryInfo(who, transport, name, qtype, "FORMERR"),
                True,
            )
        opt = options[0] if options else None

        fault = self.fault.applies(name_key(question.qname))
        if fault is not None and fault.mode == "down":
            return None, QueryInfo(who, transport, name, qtype, "NONE", dropped=True), False

        if opt is not None and opt.edns_ver != 0:  # RFC 6891 §6.1.3: BADVERS = 16
            built = _Answer()
            return self._finish(
                query_id,
                flags,
                question,
                built,
                opt,
                transport,
                who,
                rcode_name="BADVERS",
                ext_rcode=1,
            )
        if fault is not None and fault.mode == "servfail":
            built = _Answer(rcode=RCODE.SERVFAIL, cacheable=False)
        else:
            built = self._resolve(question)
            rotating.extend(built.rotating)
        wire, info, cacheable = self._finish(query_id, flags, question, built, opt, transport, who)
        if fault is not None and fault.mode == "delay":
            info = replace(info, delay=fault.delay)
        return wire, info, cacheable

    def _resolve(self, question: DNSQuestion) -> _Answer:
        built = _Answer()
        qtype = question.qtype
        if question.qclass not in (CLASS_IN, CLASS_ANY) or qtype in TRANSFER_TYPES:
            built.rcode = RCODE.REFUSED
            return built
        owner: DNSLabel = question.qname
        zone = self.zone_for(name_key(owner))
        if zone is None:
            built.rcode = RCODE.REFUSED
            return built
        seen: set[NameKey] = set()
        for _ in range(MAX_CNAME_CHAIN):
            key = name_key(owner)
            seen.add(key)
            found = zone.at(key) if qtype == QTYPE.ANY else _listed(zone.get(key, qtype))
            if found:
                for rrset in found:
                    self._add(built, built.answer, rrset, owner, advance=True)
                break
            cname = zone.get(key, QTYPE.CNAME)
            if cname is None:
                if not zone.exists(key):
                    built.rcode = RCODE.NXDOMAIN
                built.authority.append(zone.negative_soa())
                break
            self._add(built, built.answer, cname, owner, advance=True)
            owner = cname.rdatas[0].label
            target_key = name_key(owner)
            next_zone = self.zone_for(target_key)
            if next_zone is None or target_key in seen:  # out of our data, or a loop
                break
            zone = next_zone
        self._add_additional(built)
        return built

    def _add(
        self, built: _Answer, section: list[RR], rrset: RRset, owner: DNSLabel, *, advance: bool
    ) -> None:
        if rrset.mode == "random" and rrset.varies:
            built.cacheable = False
        elif rrset.varies:
            built.rotating.append((rrset, rrset.offset % len(rrset.rdatas), advance))
        section.extend(rrset.records(owner, self.rng, advance=advance))

    def _add_additional(self, built: _Answer) -> None:
        """A/AAAA of in-zone SRV targets and NS names, so a client needs no second query."""
        present = {(name_key(rr.rname), rr.rtype) for rr in built.answer}
        for rr in list(built.answer):
            attribute = ADDITIONAL_FOR.get(rr.rtype)
            if attribute is None:
                continue
            target: DNSLabel = getattr(rr.rdata, attribute)
            key = name_key(target)
            zone = self.zone_for(key)
            if zone is None:
                continue
            for rtype in ADDRESS_TYPES:
                rrset = zone.get(key, rtype)
                if rrset is not None and (key, rtype) not in present:
                    present.add((key, rtype))
                    self._add(built, built.additional, rrset, rrset.name, advance=False)

    def _finish(
        self,
        query_id: int,
        flags: int,
        question: DNSQuestion,
        built: _Answer,
        opt: RR | None,
        transport: Transport,
        who: str,
        *,
        rcode_name: str | None = None,
        ext_rcode: int = 0,
    ) -> tuple[bytes, QueryInfo, bool]:
        authoritative = AA if built.rcode in (RCODE.NOERROR, RCODE.NXDOMAIN) else 0
        bits = QR | authoritative | (flags & (RD | CD)) | built.rcode
        reply = DNSRecord(DNSHeader(id=query_id, bitmap=bits), q=question)
        reply.rr, reply.auth = built.answer, built.authority
        reply.ar = list(built.additional)
        if opt is not None:
            reply.ar.append(EDNS0(udp_len=OUR_UDP_PAYLOAD, ext_rcode=ext_rcode))
        limit = 65535
        if transport == "udp":
            limit = max(UDP_MINIMUM, opt.edns_len) if opt is not None else UDP_MINIMUM
        wire, truncated = _fit(reply, limit)
        info = QueryInfo(
            who,
            transport,
            name_text(question.qname),
            QTYPE.get(question.qtype),
            rcode_name or RCODE.get(built.rcode),
            [rdata_text(rr.rdata) for rr in reply.rr],
            truncated=truncated,
        )
        return wire, info, built.cacheable


def _listed(rrset: RRset | None) -> list[RRset]:
    return [] if rrset is None else [rrset]


def _fit(reply: DNSRecord, limit: int) -> tuple[bytes, bool]:
    """Pack ``reply`` into ``limit`` bytes: first drop additional data (no TC needed,
    RFC 2181 §9), then keep only the question and set TC so the client retries over TCP."""
    wire = bytes(reply.pack())
    if len(wire) <= limit:
        return wire, False
    reply.ar = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
    wire = bytes(reply.pack())
    if len(wire) <= limit:
        return wire, False
    reply.rr, reply.auth = [], []
    reply.header.tc = 1
    return bytes(reply.pack()), True
