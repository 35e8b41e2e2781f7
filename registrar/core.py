"""The registrar, sans-I/O: SIP requests in, SIP responses out, bindings and timers as data.

Driven like aioquic's connection: the shell calls ``receive`` for each message, sends what
``pop_outgoing`` returns, and wakes ``handle_timer`` at ``next_timer``. Behaviour follows
RFC 3261 §10.3 and an Expressway peer: only its SIP domains, expiry clamped to
[min_expires, max_expires], and a maintenance mode that keeps bindings but answers every
REGISTER with 503 and ``Warning: 382``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from emulator.deadlines import Deadlines
from emulator.eventrate import RateGovernor, Tally
from emulator.events import EventSink
from emulator.kinds import Kind
from emulator.sip.message import (
    Request,
    Response,
    SipParseError,
    parse_cseq,
    parse_name_addr,
    parse_uri,
    response_to,
    serialize_message,
)
from emulator.sip.transaction import ServerTransaction, TimerConfig, TxState, server_key
from emulator.sip.transport import Flow
from registrar.bindings import Binding, BindingStore, ContactKey
from registrar.config import RegistrarConfig

ALLOW = "REGISTER, OPTIONS"
MAINTENANCE_TEXT = "System in Maintenance Mode"


class Reject(Exception):
    """A REGISTER that fails a §10.3 check; carries the response to send."""

    def __init__(self, status: int, reason: str | None = None, **headers: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.headers = headers


@dataclass(frozen=True, slots=True)
class _Change:
    key: ContactKey
    contact: str
    expires: int


class RegistrarCore:
    def __init__(
        self,
        config: RegistrarConfig,
        events: EventSink,
        *,
        timers: TimerConfig | None = None,
        governor: RateGovernor | None = None,
    ) -> None:
        self.config = config
        self.maintenance = config.maintenance
        self.bindings = BindingStore()
        self._events = events
        self._timers = timers or TimerConfig()
        self._domains = frozenset(config.domains)
        self._outgoing: list[tuple[Flow, bytes]] = []
        self._transactions: dict[tuple[str, str, str], tuple[ServerTransaction, Flow]] = {}
        self._tx_deadlines: Deadlines[tuple[str, str, str]] = Deadlines()
        # HIGH kinds counted here, so that their fields are only built for the events that go
        # out (``events`` must then be the emitter that ``governor`` belongs to).
        self._answered: Tally | None = None
        self._refreshed: Tally | None = None
        if governor is not None:
            self._answered = governor.tally(Kind.REGISTER_ANSWERED)
            self._refreshed = governor.tally(Kind.BINDING_REFRESHED)

    # -- the sans-I/O verbs ------------------------------------------------------------

    def receive(self, message: Request | Response, flow: Flow, now: float) -> None:
        if isinstance(message, Response) or message.method == "ACK":
            return  # a registrar sends no requests, and non-INVITE transactions have no ACK
        if flow.reliable:
            # Over TCP/TLS nothing is retransmitted, so no server transaction state is kept.
            self._outgoing.append((flow, serialize_message(self._answer(message, flow, now))))
            return
        key = server_key(message)
        if key is not None and key in self._transactions:
            tx, tx_flow = self._transactions[key]
            tx.receive_request(message, now)
            self._flush(key, tx, tx_flow)
            return
        tx = ServerTransaction(message, reliable=False, now=now, timers=self._timers, key=key)
        tx.respond(self._answer(message, flow, now), now)
        if key is None:
            self._outgoing.extend((flow, data) for data in tx.pop_outgoing())
            return
        self._transactions[key] = (tx, flow)
        self._flush(key, tx, flow)

    def pop_outgoing(self) -> list[tuple[Flow, bytes]]:
        out, self._outgoing = self._outgoing, []
        return out

    def next_timer(self) -> float | None:
        times = [t for t in (self.bindings.next_expiry(), self._tx_deadlines.next()) if t]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        for binding in self.bindings.expire(now):
            self._events.emit(
                Kind.BINDING_EXPIRED,
                aor=binding.aor,
                contact=binding.contact,
                registrations=len(self.bindings),
            )
        for key in self._tx_deadlines.pop_due(now):
            entry = self._transactions.get(key)
            if entry is not None:
                entry[0].handle_timer(now)
                self._flush(key, *entry)

    # -- control ------------------------------------------------------------------------

    def set_maintenance(self, on: bool) -> None:
        if on != self.maintenance:
            self.maintenance = on
            self._events.emit(Kind.MAINTENANCE, on=on, registrations=len(self.bindings))

    def status(self, now: float) -> dict[str, object]:
        return {
            "maintenance": self.maintenance,
            "registrations": len(self.bindings),
            "bindings": [
                {
                    "aor": b.aor,
                    "contact": b.contact,
                    "expires": b.remaining(now),
                    "source": b.source,
                }
                for b in self.bindings.all()
            ],
        }

    # -- internals ----------------------------------------------------------------------

    def _flush(self, key: tuple[str, str, str], tx: ServerTransaction, flow: Flow) -> None:
        self._outgoing.extend((flow, data) for data in tx.pop_outgoing())
        when = tx.next_timer()
        if tx.state is TxState.TERMINATED or when is None:
            self._transactions.pop(key, None)
            self._tx_deadlines.cancel(key)
        else:
            self._tx_deadlines.set(key, when)

    def _answer(self, request: Request, flow: Flow, now: float) -> Response:
        if request.method == "OPTIONS":
            response = response_to(request, 200)
            response.headers.add("Allow", ALLOW)
            response.headers.add("Accept", "application/sdp")
            return response
        if request.method != "REGISTER":
            response = response_to(request, 405)
            response.headers.add("Allow", ALLOW)
            return response
        source = f"{flow.transport} {flow.remote[0]}:{flow.remote[1]}"
        try:
            response = self._register(request, source, now)
        except Reject as reject:
            response = response_to(request, reject.status, reject.reason)
            for name, value in reject.headers.items():
                response.headers.add(name.replace("_", "-"), value)
        sample = 1 if self._answered is None else self._answered.admit()
        if sample:
            self._events.emit(
                Kind.REGISTER_ANSWERED,
                aor=_aor_or_raw(request),
                code=response.status,
                reason=response.reason,
                source=source,
                contact=response.headers.get("Contact") if response.status == 200 else None,
                registrations=len(self.bindings),
                **_sampled(sample),
            )
        return response

    def _register(self, request: Request, source: str, now: float) -> Response:
        if self.maintenance:
            # Expressway keeps serving the bindings it has but takes no registration, not even
            # a refresh, so endpoints move to another peer at their next refresh.
            raise Reject(
                503,
                Warning=f'382 {self.config.address} "{MAINTENANCE_TEXT}"',
            )
        try:
            request_uri = parse_uri(request.uri)
            to = parse_name_addr(request.headers.get("To") or "")
            aor_uri = parse_uri(to.uri)
            call_id = request.headers.get("Call-ID") or ""
            cseq, _ = parse_cseq(request.headers.get("CSeq") or "")
        except SipParseError as exc:
            raise Reject(400, f"Bad Request ({exc})") from None
        if request_uri.host.lower() not in self._domains:
            raise Reject(403, "Domain Not Served")
        if aor_uri.host.lower() not in self._domains or not aor_uri.user:
            raise Reject(404)
        required = request.headers.get_all("Require")
        if required:
            raise Reject(420, Unsupported=", ".join(required))
        aor = f"{aor_uri.user}@{aor_uri.host.lower()}"
        changes = self._contact_changes(request, aor, call_id, cseq)
        for change in changes:
            if change.expires == 0:
                removed = self.bindings.remove(aor, change.key)
                if removed is not None:
                    self._events.emit(
                        Kind.BINDING_REMOVED,
                        aor=aor,
                        contact=removed.contact,
                        registrations=len(self.bindings),
                    )
            else:
                existed = self.bindings.get(aor, change.key) is not None
                self.bindings.put(
                    Binding(
                        aor, change.contact, change.key, now + change.expires, call_id, cseq, source
                    )
                )
                sample = 1
                if existed and self._refreshed is not None:
                    sample = self._refreshed.admit()
                if sample:
                    self._events.emit(
                        Kind.BINDING_REFRESHED if existed else Kind.BINDING_ADDED,
                        aor=aor,
                        contact=change.contact,
                        expires=change.expires,
                        source=source,
                        registrations=len(self.bindings),
                        **_sampled(sample),
                    )
        response = response_to(request, 200)
        for binding in self.bindings.for_aor(aor):
            response.headers.add("Contact", f"<{binding.contact}>;expires={binding.remaining(now)}")
        response.headers.add("Date", _http_date(int(time.time())))
        return response

    def _contact_changes(
        self, request: Request, aor: str, call_id: str, cseq: int
    ) -> list[_Change]:
        """Check every Contact before touching a binding: a REGISTER applies whole or not at all."""
        contacts = request.headers.get_all("Contact")
        expires_header = request.headers.get("Expires")
        default = self.config.default_expires
        if expires_header is not None:
            default = _parse_expires(expires_header)
        if any(c.strip() == "*" for c in contacts):
            if len(contacts) != 1 or expires_header is None or default != 0:
                raise Reject(400, "Bad Request (Contact * needs Expires: 0 and no other contact)")
            self._check_order(self.bindings.for_aor(aor), call_id, cseq)
            return [_Change(b.key, b.contact, 0) for b in self.bindings.for_aor(aor)]
        changes: list[_Change] = []
        for value in contacts:
            try:
                contact = parse_name_addr(value)
                uri = parse_uri(contact.uri)
            except SipParseError as exc:
                raise Reject(400, f"Bad Request (Contact: {exc})") from None
            expires = default
            if "expires" in contact.params:
                expires = _parse_expires(contact.params["expires"] or "")
            if 0 < expires < self.config.min_expires:
                raise Reject(423, Min_Expires=str(self.config.min_expires))
            key: ContactKey = (
                uri.scheme,
                uri.user,
                uri.host.lower(),
                uri.port,
                (uri.params.get("transport") or "").lower() or None,
            )
            existing = self.bindings.get(aor, key)
            if existing is not None:
                self._check_order([existing], call_id, cseq)
            changes.append(_Change(key, contact.uri, min(expires, self.config.max_expires)))
        return changes

    @staticmethod
    def _check_order(bindings: list[Binding], call_id: str, cseq: int) -> None:
        # §10.3 step 7: a REGISTER older than the one that made the binding must not undo it.
        for binding in bindings:
            if binding.call_id == call_id and cseq <= binding.cseq:
                raise Reject(500, "Server Internal Error (out-of-order REGISTER)")


def _parse_expires(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise Reject(400, f"Bad Request (Expires {text.strip()!r} is not a number)") from None
    if value < 0:
        raise Reject(400, "Bad Request (negative Expires)")
    return min(value, 2**32 - 1)


def _sampled(sample: int) -> dict[str, Any]:
    """The ``sample`` field of an event that stands for ``sample`` happenings (eventrate.py)."""
    return {"sample": sample} if sample > 1 else {}


_date_cache: tuple[int, str] = (0, "")


def _http_date(second: int) -> str:
    # formatdate costs a few microseconds; one REGISTER after another asks for the same second.
    global _date_cache
    if _date_cache[0] != second:
        _date_cache = (second, formatdate(second, usegmt=True))
    return _date_cache[1]


def _aor_or_raw(request: Request) -> str:
    raw = request.headers.get("To") or ""
    try:
        uri = parse_uri(parse_name_addr(raw).uri)
    except SipParseError:
        return raw
    return f"{uri.user}@{uri.host.lower()}" if uri.user else uri.host.lower()
