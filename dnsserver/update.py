"""RFC 2136 dynamic UPDATE, sans-I/O: UPDATE bytes in, response bytes out, zone changed.

dnspython parses the message and does all of TSIG (RFC 8945); this module holds the RFC 2136
rules: the zone section (§3.1), prerequisites (§3.2), the update prescan (§3.4.1) and the
update itself (§3.4.2), applied to a copy of the zone's records and committed all at once
through ``ZoneEditor.commit`` — the same path as the control ops — so every applied UPDATE
clears the answer cache and emits one ``dns.change`` event.

Authentication is per zone (``ZoneConfig.allow_update`` and ``ZoneConfig.tsig``).
"""

from __future__ import annotations

import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.update
from dnslib import RD, RDMAP, SOA, DNSBuffer, DNSLabel

from dnsserver.authority import Authority, QueryInfo, Transport
from dnsserver.config import TsigAlgorithm, ZoneConfig
from dnsserver.control import ZoneEditor
from dnsserver.names import BadName, NameKey, name_key, parse_name
from dnsserver.rdata import RECORD_TYPES, ParsedRecord, rdata_text
from dnsserver.zone import Zone
from emulator.component import ControlError
from emulator.events import EventSink

HEADER_FLAGS = struct.Struct("!HH")
QR, OPCODE_MASK, RD_FLAG = 0x8000, 0x7800, 0x0100
ARCOUNT_OFFSET = 10
SERIAL_MODULUS = 2**32

TSIG_ALGORITHMS: dict[TsigAlgorithm, dns.name.Name] = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-md5": dns.tsig.HMAC_MD5,
}
# What a zone cannot hold: meta types (§3.4.1.3). ANY is allowed only with class ANY (delete).
_NEVER_IN_UPDATES = (
    dns.rdatatype.AXFR,
    dns.rdatatype.IXFR,
    dns.rdatatype.MAILA,
    dns.rdatatype.MAILB,
)


class UpdateRefused(Exception):
    """Stop processing and answer with ``rcode`` (the zone is left as it was)."""

    def __init__(self, rcode: dns.rcode.Rcode, reason: str = "") -> None:
        super().__init__(reason or dns.rcode.to_text(rcode))
        self.rcode = rcode


@dataclass(frozen=True, slots=True)
class ZonePolicy:
    allow_update: bool
    key: dns.tsig.Key | None


def policy_for(config: ZoneConfig) -> ZonePolicy:
    key = None
    if config.tsig is not None:
        key = dns.tsig.Key(
            dns.name.from_text(config.tsig.name),
            config.tsig.secret,
            TSIG_ALGORITHMS[config.tsig.algorithm],
        )
    return ZonePolicy(config.allow_update, key)


# Records being edited, RRset by RRset in zone order: (owner, type) -> [(name, ttl, rdata)].
Working = dict[tuple[NameKey, str], list[ParsedRecord]]


def _header_only(query: bytes, rcode: int) -> bytes:
    """A response with no sections, for an UPDATE too broken to echo its zone section."""
    query_id, flags = HEADER_FLAGS.unpack_from(query)
    return struct.pack(
        "!HHHHHH", query_id, QR | (flags & (OPCODE_MASK | RD_FLAG)) | rcode, 0, 0, 0, 0
    )


def _describe(records: list[ParsedRecord]) -> list[str]:
    # The control ops' record format, so events of both kinds read alike.
    return [f"{r.name} {r.ttl} IN {r.rtype} {rdata_text(r.rdata)}" for r in records]


def _serial_newer(new: int, old: int) -> bool:
    """RFC 1982 serial number arithmetic: is ``new`` after ``old``?"""
    return new != old and (new - old) % SERIAL_MODULUS < SERIAL_MODULUS // 2


class UpdateHandler:
    """Answers UPDATE messages for the zones of one ``Authority``.

    Called by ``Authority.answer`` for opcode 5, before (and never into) its answer cache.
    """

    def __init__(
        self,
        authority: Authority,
        editor: ZoneEditor,
        zones: list[ZoneConfig],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.authority = authority
        self.editor = editor
        self.policies = {name_key(config.origin_label): policy_for(config) for config in zones}
        self.clock = clock

    def __call__(
        self, query: bytes, who: str, transport: Transport
    ) -> tuple[bytes | None, QueryInfo]:
        try:
            return self._handle(query, who, transport)
        except Exception:  # a bug must cost one UPDATE, never the server
            return _header_only(query, dns.rcode.SERVFAIL), QueryInfo(
                who, transport, "", "UPDATE", "SERVFAIL"
            )

    def _handle(
        self, query: bytes, who: str, transport: Transport
    ) -> tuple[bytes | None, QueryInfo]:
        def info(
            zone_name: str, rcode: int, *, dropped: bool = False, delay: float = 0.0
        ) -> QueryInfo:
            return QueryInfo(
                who,
                transport,
                zone_name,
                "UPDATE",
                dns.rcode.to_text(rcode),
                dropped=dropped,
                delay=delay,
            )

        # First pass without TSIG checks: the zone section says which key should have signed.
        try:
            request = dns.message.from_wire(query, keyring=False)
        except Exception:  # dnspython raises several kinds on malformed input
            return _header_only(query, dns.rcode.FORMERR), info("", dns.rcode.FORMERR)
        if not isinstance(request, dns.update.UpdateMessage) or len(request.zone) != 1:
            return _header_only(query, dns.rcode.FORMERR), info("", dns.rcode.FORMERR)
        zone_rrset = request.zone[0]
        zone_name = zone_rrset.name.to_text(omit_final_dot=True)
        zone = self._zone(zone_rrset)
        if zone is None:  # §3.1.1: not a zone we are authoritative for
            return self._reply(request, dns.rcode.NOTAUTH), info(zone_name, dns.rcode.NOTAUTH)
        policy = self.policies.get(zone.key, ZonePolicy(True, None))

        if request.had_tsig:
            verified = self._verify(query, request, policy.key)
            if isinstance(verified, bytes):
                return verified, info(zone_name, dns.rcode.NOTAUTH)
            request = verified
        if not policy.allow_update or (policy.key is not None and not request.had_tsig):
            return self._reply(request, dns.rcode.REFUSED), info(zone_name, dns.rcode.REFUSED)

        fault = self.authority.fault.applies(zone.key)
        if fault is not None and fault.mode == "down":
            return None, info(zone_name, dns.rcode.NOERROR, dropped=True)
        if fault is not None and fault.mode == "servfail":
            return self._reply(request, dns.rcode.SERVFAIL), info(zone_name, dns.rcode.SERVFAIL)
        delay = fault.delay if fault is not None and fault.mode == "delay" else 0.0

        try:
            self._check_prerequisites(zone, request.prerequisite)
            self._apply(zone, request.update, who)
            rcode = dns.rcode.NOERROR
        except UpdateRefused as refused:
            rcode = refused.rcode
        return self._reply(request, rcode), info(zone_name, rcode, delay=delay)

    # -- zone and authentication --------------------------------------------------------

    def _zone(self, zone_rrset: dns.rrset.RRset) -> Zone | None:
        if zone_rrset.rdclass != dns.rdataclass.IN:
            return None
        key = tuple(label.lower() for label in zone_rrset.name.labels[:-1])
        return next((zone for zone in self.authority.zones if zone.key == key), None)

    def _verify(
        self, query: bytes, request: dns.message.Message, key: dns.tsig.Key | None
    ) -> dns.message.Message | bytes:
        """The request with its TSIG verified, or the RFC 8945 §5.2 error response."""
        if key is None or request.keyname != key.name or request.keyalgorithm != key.algorithm:
            return self._tsig_error(request, dns.rcode.BADKEY)
        try:
            return dns.message.from_wire(query, keyring=key)
        except dns.tsig.BadTime:
            return self._tsig_error(request, dns.rcode.BADTIME, key)
        except (dns.tsig.BadKey, dns.tsig.BadAlgorithm):
            return self._tsig_error(request, dns.rcode.BADKEY)
        except (dns.tsig.BadSignature, dns.exception.DNSException):
            return self._tsig_error(request, dns.rcode.BADSIG)

    def _tsig_error(
        self, request: dns.message.Message, error: int, key: dns.tsig.Key | None = None
    ) -> bytes:
        """NOTAUTH with the TSIG error. BADTIME is signed and carries our clock (§5.2.3);
        BADKEY and BADSIG cannot be signed, so their TSIG RR has an empty MAC (§5.3.2)."""
        response = dns.message.make_response(request)
        response.set_rcode(dns.rcode.NOTAUTH)
        if key is not None:
            now = int(self.clock())
            response.use_tsig(
                key, tsig_error=error, other_data=struct.pack("!HI", now >> 32, now & 0xFFFFFFFF)
            )
            response.request_mac = request.mac
            return response.to_wire()
        assert request.tsig is not None
        assert request.keyname is not None
        tsig = request.tsig[0].replace(mac=b"", error=error, other=b"")
        rdata = tsig.to_wire()
        assert rdata is not None
        wire = bytearray(response.to_wire())
        wire += request.keyname.to_wire() or b""
        wire += struct.pack("!HHIH", dns.rdatatype.TSIG, dns.rdataclass.ANY, 0, len(rdata))
        wire += rdata
        (arcount,) = struct.unpack_from("!H", wire, ARCOUNT_OFFSET)
        struct.pack_into("!H", wire, ARCOUNT_OFFSET, arcount + 1)
        return bytes(wire)

    @staticmethod
    def _reply(request: dns.message.Message, rcode: int) -> bytes:
        # make_response copies the zone section and, for a verified request, signs the reply.
        response = dns.message.make_response(request)
        response.set_rcode(rcode)
        return response.to_wire()

    # -- RFC 2136 §3.2: prerequisites ----------------------------------------------------

    def _owner(self, zone: Zone, name: dns.name.Name) -> tuple[DNSLabel, NameKey]:
        """The owner as our zone spells it; NOTZONE outside the zone (or in a subzone)."""
        try:
            owner = parse_name(name.to_text())
        except BadName:
            # A name the configuration could not hold either (spaces, escapes): refuse it
            # rather than store something no status view or zone file could show.
            raise UpdateRefused(dns.rcode.REFUSED, f"unsupported name {name}") from None
        key = name_key(owner)
        if self.authority.zone_for(key) is not zone:
            raise UpdateRefused(dns.rcode.NOTZONE)
        return owner, key

    def _check_prerequisites(self, zone: Zone, prerequisites: list[dns.rrset.RRset]) -> None:
        expected: dict[tuple[NameKey, int], list[RD]] = {}
        for rrset in prerequisites:
            _owner, key = self._owner(zone, rrset.name)
            if rrset.ttl != 0:
                raise UpdateRefused(dns.rcode.FORMERR)
            rdtype = int(rrset.rdtype)
            if rrset.deleting == dns.rdataclass.ANY:  # §2.4.1 / §2.4.4: "exists"
                if rdtype == dns.rdatatype.ANY:
                    if not zone.at(key):
                        raise UpdateRefused(dns.rcode.NXDOMAIN)
                elif zone.get(key, rdtype) is None:
                    raise UpdateRefused(dns.rcode.NXRRSET)
            elif rrset.deleting == dns.rdataclass.NONE:  # §2.4.3 / §2.4.5: "does not exist"
                if rdtype == dns.rdatatype.ANY:
                    if zone.at(key):
                        raise UpdateRefused(dns.rcode.YXDOMAIN)
                elif zone.get(key, rdtype) is not None:
                    raise UpdateRefused(dns.rcode.YXRRSET)
            else:  # §2.4.2: this exact RRset exists (value-dependent)
                if dns.rdatatype.is_metatype(rdtype):
                    raise UpdateRefused(dns.rcode.FORMERR)
                bucket = expected.setdefault((key, rdtype), [])
                for rdata in rrset:
                    converted = _to_dnslib(rdata)
                    if converted is None:  # a type we never hold cannot match
                        raise UpdateRefused(dns.rcode.NXRRSET)
                    if converted not in bucket:
                        bucket.append(converted)
        for (key, rdtype), rdatas in expected.items():
            held = zone.get(key, rdtype)
            if held is None or not _same_set(held.rdatas, rdatas):
                raise UpdateRefused(dns.rcode.NXRRSET)

    # -- RFC 2136 §3.4: the update section -----------------------------------------------

    def _apply(self, zone: Zone, updates: list[dns.rrset.RRset], who: str) -> None:
        parsed = [self._prescan(zone, rrset) for rrset in updates]
        before = zone.records()
        working: Working = {}
        for record in before:
            working.setdefault((name_key(record.name), record.rtype), []).append(record)
        soa_set = False
        for rrset, (owner, key, records) in zip(updates, parsed, strict=True):
            rtype = dns.rdatatype.to_text(rrset.rdtype)
            if rrset.deleting is None:
                soa_set |= _add(zone, working, owner, key, rtype, records)
            elif rrset.deleting == dns.rdataclass.ANY:
                _delete_rrsets(zone, working, key, rtype)
            else:
                _delete_records(zone, working, key, rtype, records)
        after = [record for rrset_records in working.values() for record in rrset_records]
        added = Counter(_describe(after)) - Counter(_describe(before))
        removed = Counter(_describe(before)) - Counter(_describe(after))
        if not added and not removed:
            return  # nothing changed (e.g. the records were there already): no event
        if not soa_set:  # §3.7: a changed zone gets a new serial, unless the UPDATE set one
            _bump_serial(zone, working)
            after = [record for rrset_records in working.values() for record in rrset_records]
        serial: int = working[(zone.key, "SOA")][0].rdata.times[0]
        try:
            self.editor.commit(
                "update",
                zone,
                after,
                client=who,
                added=sorted(added.elements()),
                removed=sorted(removed.elements()),
                serial=serial,
            )
        except ControlError as exc:  # a zone rule (e.g. a name outside the zone): no change
            raise UpdateRefused(dns.rcode.REFUSED, str(exc)) from None

    def _prescan(
        self, zone: Zone, rrset: dns.rrset.RRset
    ) -> tuple[DNSLabel, NameKey, list[ParsedRecord]]:
        """§3.4.1: check every update RR before any is applied (all or nothing)."""
        owner, key = self._owner(zone, rrset.name)
        rdtype = int(rrset.rdtype)
        rtype = dns.rdatatype.to_text(rdtype)
        if rdtype in _NEVER_IN_UPDATES or (
            rrset.deleting != dns.rdataclass.ANY and dns.rdatatype.is_metatype(rdtype)
        ):
            raise UpdateRefused(dns.rcode.FORMERR)
        if rrset.deleting == dns.rdataclass.ANY:
            return owner, key, []  # dnspython already refused RDATA here (FORMERR)
        if rrset.deleting == dns.rdataclass.NONE and rrset.ttl != 0:
            raise UpdateRefused(dns.rcode.FORMERR)
        records: list[ParsedRecord] = []
        for rdata in rrset:
            converted = _to_dnslib(rdata)
            if converted is None:
                if rrset.deleting is None:  # we serve only RECORD_TYPES; cannot store it
                    raise UpdateRefused(dns.rcode.REFUSED, f"unsupported type {rtype}")
                continue  # deleting a type we never hold: nothing to do
            records.append(ParsedRecord(owner, rtype, rrset.ttl, converted))
        return owner, key, records


def _to_dnslib(rdata: dns.rdata.Rdata) -> RD | None:
    """dnspython RDATA as dnslib RDATA, through the wire form; None for types we do not hold."""
    rtype = dns.rdatatype.to_text(rdata.rdtype)
    if rtype not in RECORD_TYPES:
        return None
    wire = rdata.to_wire()
    assert wire is not None
    return RDMAP[rtype].parse(DNSBuffer(wire), len(wire))


def _same_set(held: list[RD], wanted: list[RD]) -> bool:
    # dnslib RDATA compares by value (names case-insensitively) but does not hash.
    return all(rd in wanted for rd in held) and all(rd in held for rd in wanted)


def _add(
    zone: Zone,
    working: Working,
    owner: DNSLabel,
    key: NameKey,
    rtype: str,
    records: list[ParsedRecord],
) -> bool:
    """§3.4.2.2; returns True if it replaced the SOA."""
    at_name = {t for (k, t), rrs in working.items() if k == key and rrs}
    # A CNAME stands alone: such adds are silently ignored, as the RFC says.
    if (rtype == "CNAME" and at_name - {"CNAME"}) or (rtype != "CNAME" and "CNAME" in at_name):
        return False
    current = working.setdefault((key, rtype), [])
    soa_set = False
    for record in records:
        if rtype == "SOA":
            if key != zone.key or not current:
                continue  # an SOA anywhere but the apex is never added
            old: SOA = current[0].rdata
            new: SOA = record.rdata
            if _serial_newer(new.times[0], old.times[0]) or new.times[0] == old.times[0]:
                current[:] = [record]
                soa_set = True
            continue
        if rtype == "CNAME":
            current[:] = [record]  # one CNAME per name: the new one replaces the old
            continue
        # One TTL per RRset (RFC 2181 §5.2): the added record's TTL becomes the RRset's, as
        # BIND does, so an UPDATE can both add a record and change the TTL.
        kept = [r for r in current if r.rdata != record.rdata]
        current[:] = [ParsedRecord(r.name, r.rtype, record.ttl, r.rdata) for r in kept]
        current.append(record)
    return soa_set


def _delete_rrsets(zone: Zone, working: Working, key: NameKey, rtype: str) -> None:
    """§3.4.2.3: delete one RRset, or every RRset at a name; the apex keeps SOA and NS."""
    protected = {"SOA", "NS"} if key == zone.key else set()
    for (owner, held_type), records in working.items():
        if owner == key and (rtype in ("ANY", held_type)) and held_type not in protected:
            records.clear()


def _delete_records(
    zone: Zone, working: Working, key: NameKey, rtype: str, records: list[ParsedRecord]
) -> None:
    """§3.4.2.4: delete single RRs; never the SOA, never the apex's last NS."""
    if rtype == "SOA":
        return
    current = working.get((key, rtype))
    if not current:
        return
    for record in records:
        remaining = [r for r in current if r.rdata != record.rdata]
        if rtype == "NS" and key == zone.key and not remaining:
            continue
        current[:] = remaining


def _bump_serial(zone: Zone, working: Working) -> None:
    soa_records = working[(zone.key, "SOA")]
    record = soa_records[0]
    old: SOA = record.rdata
    times = list(old.times)
    times[0] = (times[0] + 1) % SERIAL_MODULUS
    soa_records[0] = ParsedRecord(
        record.name, record.rtype, record.ttl, SOA(old.mname, old.rname, times)
    )


def attach_updates(authority: Authority, events: EventSink, zones: list[ZoneConfig]) -> None:
    """Let ``authority`` apply RFC 2136 UPDATEs to its zones, reporting to ``events``."""
    authority.update_handler = UpdateHandler(authority, ZoneEditor(events, authority), zones)
