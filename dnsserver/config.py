"""Validated configuration of the DNS server: zones, their records, rotation, where to listen.

Every record is parsed when the model is validated, so a bad record fails at the edge with a
message naming it, not when the first query arrives.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Literal

from dnslib import DNSLabel
from pydantic import BaseModel, Field, IPvAnyAddress, field_validator, model_validator

from dnsserver.masterfile import load_master_file
from dnsserver.names import BadName, NameKey, is_within, name_key, parse_name
from dnsserver.rdata import MAX_TTL, BadRecord, ParsedRecord, parse_rdata

RecordType = Literal["A", "AAAA", "SRV", "CNAME", "NS", "TXT", "PTR", "NAPTR", "SOA"]
RotationMode = Literal["rotate", "fixed", "random"]

# Any origin will do for a syntax check of relative names; the zone re-parses with its own.
_PLACEHOLDER_ORIGIN = DNSLabel("origin.invalid.")


class RecordConfig(BaseModel):
    """One resource record; ``name`` and names in ``data`` are relative to the zone origin."""

    name: str
    type: RecordType
    ttl: int | None = Field(default=None, ge=0, le=MAX_TTL)
    data: str

    @field_validator("type", mode="before")
    @classmethod
    def _upper_type(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        try:
            parse_name(value, _PLACEHOLDER_ORIGIN)
        except BadName as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _check_data(self) -> RecordConfig:
        try:
            parse_rdata(self.type, self.data, _PLACEHOLDER_ORIGIN)
        except BadRecord as exc:
            raise ValueError(f"{self.name} {self.type}: {exc}") from None
        return self

    def parse(self, origin: DNSLabel, default_ttl: int) -> ParsedRecord:
        return ParsedRecord(
            parse_name(self.name, origin),
            self.type,
            default_ttl if self.ttl is None else self.ttl,
            parse_rdata(self.type, self.data, origin),
        )


TsigAlgorithm = Literal["hmac-sha256", "hmac-sha512", "hmac-sha1", "hmac-md5"]


class TsigKeyConfig(BaseModel):
    """A TSIG key (RFC 8945) that must sign RFC 2136 UPDATEs to a zone; ``nsupdate -y`` syntax
    is ``ALGORITHM:NAME:SECRET`` with these three fields."""

    name: str
    algorithm: TsigAlgorithm = "hmac-sha256"
    secret: str  # base64, as BIND's tsig-keygen prints it

    @field_validator("name")
    @classmethod
    def _check_key_name(cls, value: str) -> str:
        try:
            parse_name(value if value.endswith(".") else value + ".")
        except BadName as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, value: str) -> str:
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the TSIG secret must be base64 (e.g. from tsig-keygen)") from None
        if not decoded:
            raise ValueError("the TSIG secret must not be empty")
        return value


class ZoneConfig(BaseModel):
    """One authoritative zone. Without an SOA (or NS) record, one is synthesized."""

    origin: str
    ttl: int = Field(default=60, ge=0, le=MAX_TTL)
    file: Path | None = None
    records: list[RecordConfig] = []
    rotation: dict[str, RotationMode] = {}
    # RFC 2136 dynamic UPDATE (nsupdate): off answers REFUSED; with a key, only UPDATEs
    # signed with it are applied (the lab's zones are test zones, so open by default).
    allow_update: bool = True
    tsig: TsigKeyConfig | None = None

    @field_validator("origin")
    @classmethod
    def _check_origin(cls, value: str) -> str:
        if value in ("@", "."):
            raise ValueError("the origin must be a domain name such as 'uctest.local'")
        try:
            parse_name(value if value.endswith(".") else value + ".")
        except BadName as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def origin_label(self) -> DNSLabel:
        return parse_name(self.origin if self.origin.endswith(".") else self.origin + ".")

    @model_validator(mode="after")
    def _check_zone(self) -> ZoneConfig:
        origin = self.origin_label
        records = self.parsed_records()
        check_records(origin, records)
        for owner in self.rotation:
            try:
                parse_name(owner, origin)
            except BadName as exc:
                raise ValueError(f"rotation: {exc}") from None
        types = {record.rtype for record in records if name_key(record.name) == name_key(origin)}
        apex = str(origin)
        if "SOA" not in types:
            self.records.append(
                RecordConfig(
                    name="@",
                    type="SOA",
                    data=f"ns1.{apex} hostmaster.{apex} 1 3600 600 86400 {self.ttl}",
                )
            )
        if "NS" not in types:
            self.records.append(RecordConfig(name="@", type="NS", data=f"ns1.{apex}"))
        return self

    def parsed_records(self) -> list[ParsedRecord]:
        """All records of the zone (file first, then inline), parsed against the origin."""
        origin = self.origin_label
        parsed: list[ParsedRecord] = []
        if self.file is not None:
            parsed.extend(load_master_file(self.file, origin, self.ttl))
        for index, record in enumerate(self.records):
            try:
                parsed.append(record.parse(origin, self.ttl))
            except (BadName, BadRecord) as exc:
                raise ValueError(f"records[{index}]: {exc}") from None
        return parsed

    def rotation_keys(self) -> dict[NameKey, RotationMode]:
        origin = self.origin_label
        return {name_key(parse_name(owner, origin)): mode for owner, mode in self.rotation.items()}


def check_records(origin: DNSLabel, records: list[ParsedRecord]) -> None:
    """Zone-wide rules: owners inside the zone, one SOA at the apex, CNAME stands alone."""
    origin_key = name_key(origin)
    types_at: dict[NameKey, set[str]] = {}
    soa_count = 0
    for record in records:
        key = name_key(record.name)
        if not is_within(key, origin_key):
            raise ValueError(f"{record.name} is outside the zone {origin}")
        if record.rtype == "CNAME" and key == origin_key:
            raise ValueError(f"CNAME at the zone origin {origin}: the origin holds SOA and NS")
        if record.rtype == "SOA":
            if key != origin_key:
                raise ValueError(f"SOA record at {record.name}: only the origin {origin} has one")
            soa_count += 1
        types_at.setdefault(key, set()).add(record.rtype)
    if soa_count > 1:
        raise ValueError(f"zone {origin} has {soa_count} SOA records; it may have one")
    for key, types in types_at.items():
        if "CNAME" in types and len(types) > 1:
            owner = ".".join(label.decode() for label in key) + "."
            raise ValueError(f"{owner} has a CNAME and other records; a CNAME must stand alone")


class DnsServerConfig(BaseModel):
    """One authoritative DNS server process: where it listens and the zones it serves."""

    name: str = "dns"
    address: IPvAnyAddress
    port: int = Field(default=1053, ge=0, le=65535)
    zones: list[ZoneConfig]
    # ``dns.query`` events: "auto" (every query while they are few, sampled under load, counts
    # in ``stats`` events: the component's rate governor, emulator/eventrate.py), one per query
    # ("all"), one per ``event_sample`` queries ("sample"), or none ("off", for benchmarks). The
    # counters behind ``status`` and /metrics are always kept.
    events: Literal["auto", "all", "sample", "off"] = "auto"
    event_sample: int = Field(default=100, ge=1)
    # "ADDRESS:PORT" of a Prometheus /metrics HTTP listener; None: no listener.
    metrics: str | None = None

    @field_validator("metrics")
    @classmethod
    def _check_metrics(cls, value: str | None) -> str | None:
        if value is not None:
            host, sep, port = value.rpartition(":")
            if not sep or not host or not port.isdigit() or int(port) > 65535:
                raise ValueError(f"expected ADDRESS:PORT such as 127.0.0.10:9153, got {value!r}")
        return value

    @model_validator(mode="after")
    def _unique_zones(self) -> DnsServerConfig:
        seen: set[NameKey] = set()
        for zone in self.zones:
            key = name_key(zone.origin_label)
            if key in seen:
                raise ValueError(f"zone {zone.origin} is configured more than once")
            seen.add(key)
        return self
