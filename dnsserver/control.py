"""Control ops that change a running server: zone records and faults.

Each change emits ``dns.change`` (or ``fault.applied``) so the lab can line it up with the
queries that follow. Record text uses the same presentation format as the configuration.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from dnsserver.authority import Authority
from dnsserver.config import RecordConfig
from dnsserver.faults import FaultSpec
from dnsserver.names import BadName, NameKey, is_within, name_key, name_text, parse_name
from dnsserver.rdata import MAX_TTL, RECORD_TYPES, BadRecord, ParsedRecord, rdata_text
from dnsserver.zone import Zone
from emulator.component import ComponentContext, ControlError
from emulator.events import EventSink
from emulator.validation import describe


def _zone(authority: Authority, args: dict[str, Any]) -> Zone:
    origin = args.get("zone")
    if origin is None:
        if len(authority.zones) != 1:
            raise ControlError("this server has several zones: say which with 'zone'")
        return authority.zones[0]
    if not isinstance(origin, str):
        raise ControlError("'zone' must be a zone origin such as 'uctest.local'")
    try:
        return authority.zone_named(origin)
    except KeyError as exc:
        raise ControlError(exc.args[0]) from None


def _owner(zone: Zone, args: dict[str, Any]) -> NameKey | None:
    """The owner named by ``args['name']``, relative to the zone (None when absent)."""
    name = args.get("name")
    if name is None:
        return None
    if not isinstance(name, str):
        raise ControlError("'name' must be a string")
    try:
        return name_key(parse_name(name, zone.origin))
    except BadName as exc:
        raise ControlError(str(exc)) from None


def _rtype(args: dict[str, Any]) -> str | None:
    rtype = args.get("type")
    if rtype is None:
        return None
    if not isinstance(rtype, str) or rtype.upper() not in RECORD_TYPES:
        raise ControlError(f"bad record type {rtype!r}")
    return rtype.upper()


def _matches(record: ParsedRecord, owner: NameKey | None, rtype: str | None) -> bool:
    return (owner is None or name_key(record.name) == owner) and (
        rtype is None or record.rtype == rtype
    )


def _describe(records: list[ParsedRecord]) -> list[str]:
    return [f"{r.name} {r.ttl} IN {r.rtype} {rdata_text(r.rdata)}" for r in records]


class ZoneEditor:
    """The record-changing ops, each applied to one zone atomically (all or nothing)."""

    def __init__(self, events: EventSink, authority: Authority) -> None:
        self.events = events
        self.authority = authority

    def commit(self, op: str, zone: Zone, records: list[ParsedRecord], /, **fields: Any) -> None:
        """The one path by which zone data changes (control ops and RFC 2136 UPDATE alike):
        swap the records in, drop cached answers, emit ``dns.change``."""
        try:
            zone.replace_all(records)
        except ValueError as exc:
            raise ControlError(f"{op} refused: {exc}") from None
        self.authority.zones_changed()
        self.events.emit("dns.change", op=op, zone=name_text(zone.origin), **fields)

    def _parse_new(self, zone: Zone, args: dict[str, Any]) -> list[ParsedRecord]:
        raw = args.get("records")
        if not isinstance(raw, list) or not raw:
            raise ControlError("'records' must be a non-empty list of {name, type, ttl, data}")
        parsed: list[ParsedRecord] = []
        for index, item in enumerate(raw):
            try:
                parsed.append(
                    RecordConfig.model_validate(item).parse(zone.origin, zone.default_ttl)
                )
            except ValidationError as exc:
                # One line naming the record, not pydantic's multi-line dump with its URL.
                raise ControlError(describe(exc, f"records[{index}]")) from None
            except (BadName, BadRecord) as exc:
                raise ControlError(f"records[{index}]: {exc}") from None
        return parsed

    def add(self, args: dict[str, Any]) -> dict[str, Any]:
        zone = _zone(self.authority, args)
        new = self._parse_new(zone, args)
        self.commit("add", zone, zone.records() + new, records=_describe(new))
        return {"added": len(new)}

    def remove(self, args: dict[str, Any]) -> dict[str, Any]:
        zone = _zone(self.authority, args)
        owner, rtype = _owner(zone, args), _rtype(args)
        if owner is None:
            raise ControlError("'remove' needs 'name' (and optionally 'type' and 'data')")
        data = args.get("data")
        gone: list[ParsedRecord] = []
        kept: list[ParsedRecord] = []
        for record in zone.records():
            hit = _matches(record, owner, rtype) and (
                data is None or rdata_text(record.rdata) == self._canonical(zone, record, data)
            )
            (gone if hit else kept).append(record)
        if not gone:
            raise ControlError("no record matches")
        self.commit("remove", zone, kept, records=_describe(gone))
        return {"removed": len(gone)}

    @staticmethod
    def _canonical(zone: Zone, record: ParsedRecord, data: Any) -> str:
        """``data`` as the server would print it, so "exp1" matches "exp1.uctest.local."."""
        if not isinstance(data, str):
            raise ControlError("'data' must be a string")
        try:
            item = RecordConfig(name="@", type=record.rtype, data=data)  # type: ignore[arg-type]
            return rdata_text(item.parse(zone.origin, 0).rdata)
        except ValueError:
            return data

    def replace(self, args: dict[str, Any]) -> dict[str, Any]:
        """Swap the RRsets named by the new records' (name, type) for the new records."""
        zone = _zone(self.authority, args)
        new = self._parse_new(zone, args)
        replaced = {(name_key(r.name), r.rtype) for r in new}
        kept = [r for r in zone.records() if (name_key(r.name), r.rtype) not in replaced]
        self.commit("replace", zone, kept + new, records=_describe(new))
        return {"records": len(new)}

    def set_ttl(self, args: dict[str, Any]) -> dict[str, Any]:
        zone = _zone(self.authority, args)
        ttl = args.get("ttl")
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 <= ttl <= MAX_TTL:
            raise ControlError("'ttl' must be an integer 0..2**31-1")
        owner, rtype = _owner(zone, args), _rtype(args)
        records = zone.records()
        changed = 0
        for index, record in enumerate(records):
            if _matches(record, owner, rtype):
                records[index] = ParsedRecord(record.name, record.rtype, ttl, record.rdata)
                changed += 1
        if not changed:
            raise ControlError("no record matches")
        self.commit("set_ttl", zone, records, name=args.get("name"), type=rtype, ttl=ttl)
        return {"changed": changed}


def _fault_scope(authority: Authority, args: dict[str, Any]) -> NameKey | None:
    """The name a fault covers: absolute when it ends with a dot or already lies in a served
    zone ("exp1.uctest.local"), else relative to the zone like every other op's ("exp1")."""
    name = args.get("name")
    if name is None:
        return None
    if not isinstance(name, str):
        raise ControlError("'name' must be a string")
    try:
        as_written = name_key(parse_name(name if name.endswith(".") else name + "."))
    except BadName as exc:
        raise ControlError(str(exc)) from None
    if name.endswith(".") or any(is_within(as_written, zone.key) for zone in authority.zones):
        return as_written
    return _owner(_zone(authority, args), args)


def set_fault(events: EventSink, authority: Authority, args: dict[str, Any]) -> dict[str, Any]:
    mode = args.get("mode")
    if mode not in ("none", "down", "servfail", "delay"):
        raise ControlError("'mode' must be one of none, down, servfail, delay")
    scope = _fault_scope(authority, args)
    delay = args.get("delay", 0.0)
    if not isinstance(delay, int | float) or isinstance(delay, bool):
        raise ControlError("'delay' must be a number of seconds")
    authority.fault.set(FaultSpec(mode, scope, float(delay) if mode == "delay" else 0.0))
    authority.zones_changed()
    described = authority.fault.describe()
    events.emit("fault.applied", fault="dns." + mode, **described)
    return described


def register_control_ops(ctx: ComponentContext, authority: Authority) -> None:
    editor = ZoneEditor(ctx, authority)
    ctx.on_command("add", editor.add)
    ctx.on_command("remove", editor.remove)
    ctx.on_command("replace", editor.replace)
    ctx.on_command("set_ttl", editor.set_ttl)
    ctx.on_command("fault", lambda args: set_fault(ctx, authority, args))
