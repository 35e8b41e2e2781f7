"""Zone data: RRsets keyed by (owner name, type), each with its own answer-order state.

Round robin is per RRset, like the Windows DNS server of the seed: every answer that carries a
rotating RRset starts one record further along, so consecutive clients get different peers first.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from dnslib import QTYPE, RD, RR, SOA, DNSLabel

from dnsserver.config import RotationMode, ZoneConfig, check_records
from dnsserver.names import NameKey, is_within, name_key
from dnsserver.rdata import ParsedRecord, rtype_code

ADDRESS_TYPES = (QTYPE.A, QTYPE.AAAA)


@dataclass(slots=True)
class RRset:
    name: DNSLabel
    rtype: int
    ttl: int
    rdatas: list[RD]
    mode: RotationMode = "fixed"
    offset: int = 0

    @property
    def varies(self) -> bool:
        """True if two answers in a row may list the records in a different order."""
        return self.mode != "fixed" and len(self.rdatas) > 1

    def ordered(self, rng: random.Random, *, advance: bool) -> list[RD]:
        """The records in answer order; ``advance`` moves a rotating RRset on by one."""
        if self.mode == "random":
            shuffled = list(self.rdatas)
            rng.shuffle(shuffled)
            return shuffled
        if self.mode == "fixed" or not self.rdatas:
            return list(self.rdatas)
        start = self.offset % len(self.rdatas)
        if advance:
            self.offset = start + 1
        return self.rdatas[start:] + self.rdatas[:start]

    def records(self, owner: DNSLabel, rng: random.Random, *, advance: bool) -> list[RR]:
        return [
            RR(owner, self.rtype, ttl=self.ttl, rdata=rdata)
            for rdata in self.ordered(rng, advance=advance)
        ]


@dataclass(slots=True)
class Zone:
    origin: DNSLabel
    default_ttl: int
    rotation: dict[NameKey, RotationMode] = field(default_factory=dict)
    rrsets: dict[tuple[NameKey, int], RRset] = field(default_factory=dict)
    # Every owner name and each of its ancestors down to the origin: names below the origin
    # with no records of their own (empty non-terminals) exist, so they get NODATA.
    nodes: set[NameKey] = field(default_factory=set)

    @classmethod
    def from_config(cls, config: ZoneConfig) -> Zone:
        zone = cls(config.origin_label, config.ttl, config.rotation_keys())
        zone.replace_all(config.parsed_records())
        return zone

    @property
    def key(self) -> NameKey:
        return name_key(self.origin)

    def contains(self, key: NameKey) -> bool:
        return is_within(key, self.key)

    def get(self, key: NameKey, rtype: int) -> RRset | None:
        return self.rrsets.get((key, rtype))

    def at(self, key: NameKey) -> list[RRset]:
        return [rrset for (owner, _), rrset in self.rrsets.items() if owner == key]

    def exists(self, key: NameKey) -> bool:
        return key in self.nodes

    @property
    def soa(self) -> RRset:
        return self.rrsets[(self.key, QTYPE.SOA)]

    def negative_soa(self) -> RR:
        """The SOA for NXDOMAIN/NODATA answers, with TTL min(SOA TTL, minimum) (RFC 2308 §3)."""
        soa = self.soa
        data: SOA = soa.rdatas[0]
        return RR(self.origin, QTYPE.SOA, ttl=min(soa.ttl, data.times[4]), rdata=data)

    def records(self) -> list[ParsedRecord]:
        return [
            ParsedRecord(rrset.name, QTYPE.get(rrset.rtype), rrset.ttl, rdata)
            for rrset in self.rrsets.values()
            for rdata in rrset.rdatas
        ]

    def replace_all(self, records: list[ParsedRecord]) -> None:
        """Swap in a new set of records, checked by the same rules as the configuration.

        Rotation offsets of RRsets that survive are kept, so a change elsewhere in the zone
        does not reset round robin.
        """
        check_records(self.origin, records)
        if not any(r.rtype == "SOA" and name_key(r.name) == self.key for r in records):
            raise ValueError(f"zone {self.origin} would have no SOA record")
        rrsets: dict[tuple[NameKey, int], RRset] = {}
        for record in records:
            key = (name_key(record.name), rtype_code(record.rtype))
            rrset = rrsets.get(key)
            if rrset is None:
                rrsets[key] = RRset(record.name, key[1], record.ttl, [record.rdata])
            elif record.rdata not in rrset.rdatas:
                rrset.rdatas.append(record.rdata)
                # One TTL per RRset (RFC 2181 §5.2): the shortest one wins.
                rrset.ttl = min(rrset.ttl, record.ttl)
        for (owner, rtype), rrset in rrsets.items():
            rrset.mode = self.rotation.get(
                owner, "rotate" if rtype in ADDRESS_TYPES and len(rrset.rdatas) > 1 else "fixed"
            )
            old = self.rrsets.get((owner, rtype))
            if old is not None:
                rrset.offset = old.offset
        self.rrsets = rrsets
        self.nodes = set()
        for owner, _ in rrsets:
            for depth in range(len(self.key), len(owner) + 1):
                self.nodes.add(owner[len(owner) - depth :])
