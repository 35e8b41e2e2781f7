"""The registrar, sans-I/O: SIP requests in, SIP responses out, bindings and timers as data.

Driven like aioquic's connection: the shell calls ``receive`` for each message and
``flow_closed`` when a connection ends, sends what ``pop_outgoing`` returns, tells the cluster
about the AORs ``pop_changed`` returns, and wakes ``handle_timer`` at ``next_timer``. The wall
clock (for ``Date``) and all randomness (tags, nonces, ``variable`` expiries) come from the
shell, so every rule runs under a fake clock.

Behaviour follows RFC 3261 §10.3 and an Expressway peer: only its SIP domains, expiry by the
``maximum`` or ``variable`` refresh strategy, a maintenance mode that keeps bindings but answers
every REGISTER with 503 and ``Warning: 382``, digest authentication with source lockout, a
capacity in AORs, and RFC 5626 outbound (one binding per flow, ended when the flow closes).
Every response carries Via ``received``/``rport`` (RFC 3261 §18.2.1, RFC 3581) and goes where
§18.2.2 and RFC 3581 §4 say.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from email.utils import formatdate
from typing import Any, Final

from emulator.eventrate import RateGovernor, Tally
from emulator.events import EventSink
from emulator.kinds import Kind
from emulator.memo import Memoized
from emulator.sip.message import (
    REASON_PHRASES,
    Params,
    Request,
    Response,
    SipParseError,
    Via,
    parse_cseq,
    parse_name_addr,
    parse_uri,
    parse_via,
    response_bytes,
)
from emulator.sip.transaction import AnsweredRequests, TimerConfig, server_key
from emulator.sip.transport import Flow
from registrar.auth import DigestVerifier, Verdict
from registrar.bindings import Binding, BindingKey, BindingStore, ContactKey
from registrar.config import RegistrarConfig

ALLOW: Final = "REGISTER, OPTIONS"
SUPPORTED: Final = "outbound"
_OPTIONS_HEADERS: Final = [
    ("Allow", ALLOW),
    ("Accept", "application/sdp"),
    ("Supported", SUPPORTED),
]
_ALLOW_HEADERS: Final = [("Allow", ALLOW)]
_METHOD_LABELS: Final = frozenset(("REGISTER", "OPTIONS"))
_TAGS_PER_DRAW: Final = 64
MAINTENANCE_TEXT: Final = "System in Maintenance Mode"
# Option tags a REGISTER may Require of us.
UNDERSTOOD: Final = frozenset({"outbound"})
DEFAULT_SIP_PORT: Final = 5060


class Reject(Exception):
    """A REGISTER refused; carries the response to send."""

    def __init__(
        self, status: int, reason: str | None = None, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.headers = headers or []


class _Change:
    """What one Contact of a REGISTER does to the AOR's bindings (expires 0: removes)."""

    def __init__(
        self,
        key: BindingKey,
        contact: str,
        expires: int,
        instance: str | None = None,
        reg_id: int | None = None,
    ) -> None:
        self.key = key
        self.contact = contact
        self.expires = expires
        self.instance = instance
        self.reg_id = reg_id


class RegistrarCore:
    def __init__(
        self,
        config: RegistrarConfig,
        events: EventSink,
        *,
        wall_clock: Callable[[], float],
        rng: random.Random,
        timers: TimerConfig | None = None,
        governor: RateGovernor | None = None,
    ) -> None:
        self.config = config
        self.maintenance = config.maintenance
        self.bindings = BindingStore()
        # Plain counters, read by the metrics collector at scrape time.
        self.answered: Counter[tuple[str, int]] = Counter()  # (method, status)
        self.counts: Counter[str] = Counter()
        self._events = events
        self._wall_clock = wall_clock
        self._rng = rng
        self._tags: list[str] = []  # drawn, not yet used
        self._domains = frozenset(config.domains)
        self._auth = (
            DigestVerifier(config.auth, config.realm, rng) if config.auth is not None else None
        )
        self._full = False
        self._date: tuple[int, str] = (0, "")  # the Date header of the current second
        self._outgoing: list[tuple[Flow, bytes]] = []
        # AORs whose bindings changed since the shell last asked (an ordered set).
        self._changed: dict[str, None] = {}
        self._answered_udp: AnsweredRequests[Flow] = AnsweredRequests(timers or TimerConfig())
        # HIGH kinds counted here, so that their fields are only built for the events that go
        # out (``events`` must then be the emitter that ``governor`` belongs to).
        self._answered: Tally | None = None
        self._refreshed: Tally | None = None
        if governor is not None:
            self._answered = governor.tally(Kind.REGISTER_ANSWERED)
            self._refreshed = governor.tally(Kind.BINDING_REFRESHED)

    # -- the sans-I/O verbs ------------------------------------------------------------

    def receive(self, message: Request | Response, flow: Flow, now: float) -> None:
        if type(message) is not Request or message.method == "ACK":
            return  # a registrar sends no requests, and non-INVITE transactions have no ACK
        if _reliable(flow):
            # Over TCP/TLS nothing is retransmitted, so no server transaction state is kept.
            self._outgoing.append(self._answer(message, flow, now))
            return
        key = server_key(message)
        if key is not None:
            answered = self._answered_udp.get(key)
            if answered is not None:  # a retransmission: the same answer again
                self._outgoing.append(answered)
                return
        answer = self._answer(message, flow, now)
        if key is not None:
            self._answered_udp.add(key, answer[0], answer[1], now)
        self._outgoing.append(answer)

    def flow_closed(self, flow: Flow, now: float) -> None:
        """A connection ended: its outbound bindings end with it (RFC 5626 §6)."""
        for binding in self.bindings.on_flow(flow):
            self.bindings.remove(binding.aor, binding.key)
            self._changed[binding.aor] = None
            self.counts["removed"] += 1
            self._events.emit(
                Kind.BINDING_REMOVED,
                aor=binding.aor,
                contact=binding.contact,
                reason="flow closed",
                flow=str(flow),
                registrations=len(self.bindings),
            )
        self._check_capacity()

    def pop_outgoing(self) -> list[tuple[Flow, bytes]]:
        out, self._outgoing = self._outgoing, []
        return out

    def pop_changed(self) -> list[str]:
        """The AORs whose bindings were added, refreshed or removed since the last call."""
        if not self._changed:
            return []
        changed, self._changed = list(self._changed), {}
        return changed

    def restore(self, binding: Binding, now: float, source: str) -> bool:
        """Put back a binding held before a restart (learned from the cluster), unless the
        client has registered it since; returns whether it was put back."""
        if not self.bindings.restore(binding):
            return False
        self._changed[binding.aor] = None
        self._events.emit(
            Kind.BINDING_RESTORED,
            aor=binding.aor,
            contact=binding.contact,
            expires=binding.remaining(now),
            source=source,
            registrations=len(self.bindings),
        )
        return True

    def next_timer(self) -> float | None:
        times = [self.bindings.next_expiry(), self._answered_udp.next_timer()]
        if self._auth is not None:
            times.append(self._auth.next_timer())
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def handle_timer(self, now: float) -> None:
        for binding in self.bindings.expire(now):
            self.counts["expired"] += 1
            self._changed[binding.aor] = None
            self._events.emit(
                Kind.BINDING_EXPIRED,
                aor=binding.aor,
                contact=binding.contact,
                registrations=len(self.bindings),
            )
        self._check_capacity()
        if self._auth is not None:
            for source in self._auth.unlock_due(now):
                self._events.emit(Kind.AUTH_LOCKOUT, source=source, on=False)
        self._answered_udp.handle_timer(now)

    # -- control ------------------------------------------------------------------------

    def set_maintenance(self, on: bool) -> None:
        if on != self.maintenance:
            self.maintenance = on
            self._events.emit(Kind.MAINTENANCE, on=on, registrations=len(self.bindings))

    def status(self, now: float) -> dict[str, object]:
        return {
            "maintenance": self.maintenance,
            "registrations": len(self.bindings),
            "aors": self.bindings.aors,
            "capacity": self.config.capacity,
            "refresh": self.config.refresh,
            "auth": self._auth is not None,
            "bindings": [b.to_dict(now) for b in self.bindings.all()],
        }

    # -- internals ----------------------------------------------------------------------

    @staticmethod
    def _admit(tally: Tally | None) -> int:
        """A HIGH happening counted: 0 for no event, else the happenings its event stands for
        (every one gets an event when the core has no governor)."""
        return 1 if tally is None else tally.admit()

    def _tag(self) -> str:
        """A To tag: 48 random bits, drawn 64 tags at a time (one call of the random source
        instead of one per response)."""
        tags = self._tags
        if not tags:
            text = f"{self._rng.getrandbits(48 * _TAGS_PER_DRAW):0{12 * _TAGS_PER_DRAW}x}"
            tags = self._tags = [text[i : i + 12] for i in range(0, len(text), 12)]
        return tags.pop()

    def _answer(self, request: Request, flow: Flow, now: float) -> tuple[Flow, bytes]:
        """The response to ``request`` on the wire, and where it goes."""
        method = request.method
        reason: str | None = None
        if method == "REGISTER":
            status, reason, headers = self._answer_register(request, flow, now)
        elif method == "OPTIONS":
            status, headers = 200, _OPTIONS_HEADERS
        else:
            status, headers = 405, _ALLOW_HEADERS
        # Methods are the sender's to choose: two labels plus "other" keep the metric small.
        self.answered[method if method in _METHOD_LABELS else "other", status] += 1
        top_via, reply_flow = _reply_via(request, flow)
        data = response_bytes(
            request, status, reason, tag=self._tag(), headers=headers, top_via=top_via
        )
        return reply_flow, data

    def _answer_register(
        self, request: Request, flow: Flow, now: float
    ) -> tuple[int, str | None, list[tuple[str, str]]]:
        try:
            status, reason, headers = 200, None, self._register(request, flow, now)
        except Reject as reject:
            status, reason, headers = reject.status, reject.reason, reject.headers
        sample = self._admit(self._answered)
        if sample:
            contacts = [v for n, v in headers if n == "Contact"] if status == 200 else []
            self._events.emit(
                Kind.REGISTER_ANSWERED,
                aor=_aor_or_raw(request),
                code=status,
                reason=REASON_PHRASES.get(status, "Unknown") if reason is None else reason,
                source=f"{flow.transport} {flow.remote[0]}:{flow.remote[1]}",
                contact=", ".join(contacts) if contacts else None,
                registrations=len(self.bindings),
                **_sampled(sample),
            )
        return status, reason, headers

    def _register(self, request: Request, flow: Flow, now: float) -> list[tuple[str, str]]:
        """The headers of the 200 that ``request`` gets (bindings applied), or Reject."""
        if self.maintenance:
            # Expressway keeps serving the bindings it has but takes no registration, not even
            # a refresh, so endpoints move to another peer at their next refresh.
            raise Reject(503, headers=[("Warning", self._warning(382, MAINTENANCE_TEXT))])
        index = request.headers.index
        try:
            request_uri = parse_uri(request.uri)
            to = parse_name_addr(_first(index, "to"))
            aor_uri = parse_uri(to.uri)
            call_id = _first(index, "call-id")
            cseq = parse_cseq(_first(index, "cseq"))[0]
        except SipParseError as exc:
            raise Reject(400, f"Bad Request ({exc})") from None
        domains = self._domains
        if request_uri.host not in domains and request_uri.host.lower() not in domains:
            raise Reject(403, "Domain Not Served")
        host = aor_uri.host if aor_uri.host in domains else aor_uri.host.lower()
        if host not in domains or not aor_uri.user:
            raise Reject(404)
        aor = f"{aor_uri.user}@{host}"
        if self._auth is not None:
            self._authenticate(request, aor_uri.user, aor, flow, now)
        if "require" in index:
            unsupported = [t for t in _tags(request, "Require") if t.lower() not in UNDERSTOOD]
            if unsupported:
                raise Reject(420, headers=[("Unsupported", ", ".join(unsupported))])
        changes = self._contact_changes(request, aor, call_id, cseq, flow)
        capacity = self.config.capacity
        if (
            capacity is not None
            and self.bindings.aors >= capacity
            and not self.bindings.has_aor(aor)
            and any(change.expires for change in changes)
        ):
            self.counts["capacity_refused"] += 1
            raise Reject(
                503,
                "Registration Capacity Reached",
                [("Warning", self._warning(399, f"Capacity of {capacity} AORs reached"))],
            )
        outbound = False
        for change in changes:
            outbound = outbound or change.reg_id is not None
            self._apply(aor, change, call_id, cseq, flow, now)
        if capacity is not None:
            self._check_capacity()
        headers = [("Contact", _contact_value(b, now)) for b in self.bindings.for_aor(aor)]
        if outbound:
            headers.append(("Require", "outbound"))
            headers.append(("Flow-Timer", str(self.config.flow_timer)))
        headers.append(("Date", self._http_date()))
        return headers

    def _apply(
        self, aor: str, change: _Change, call_id: str, cseq: int, flow: Flow, now: float
    ) -> None:
        if change.expires == 0:
            removed = self.bindings.remove(aor, change.key)
            if removed is not None:
                self.counts["removed"] += 1
                self._changed[aor] = None
                self._events.emit(
                    Kind.BINDING_REMOVED,
                    aor=aor,
                    contact=removed.contact,
                    reason="unregistered",
                    registrations=len(self.bindings),
                )
            return
        self._changed[aor] = None
        old = self.bindings.get(aor, change.key)
        if old is not None:
            self.bindings.refresh(old, change.contact, now + change.expires, call_id, cseq, flow)
            self.counts["refreshed"] += 1
            sample = self._admit(self._refreshed)
            if sample:
                self._binding_event(Kind.BINDING_REFRESHED, old, change, sample)
            return
        binding = Binding(
            aor,
            change.contact,
            change.key,
            now + change.expires,
            call_id,
            cseq,
            flow,
            change.instance,
            change.reg_id,
        )
        self.bindings.put(binding)
        self.counts["added"] += 1
        self._binding_event(Kind.BINDING_ADDED, binding, change, 1)

    def _binding_event(self, kind: str, binding: Binding, change: _Change, sample: int) -> None:
        self._events.emit(
            kind,
            aor=binding.aor,
            contact=change.contact,
            expires=change.expires,
            source=binding.source,
            flow=str(binding.flow),
            registrations=len(self.bindings),
            **({"reg_id": change.reg_id, "instance": change.instance} if change.reg_id else {}),
            **_sampled(sample),
        )

    def _authenticate(self, request: Request, user: str, aor: str, flow: Flow, now: float) -> None:
        assert self._auth is not None
        auth, source = self._auth, flow.remote[0]
        if auth.locked(source):
            self.counts["locked_out"] += 1
            raise Reject(403, "Forbidden (too many failed attempts)")
        outcome = auth.check(request, now)
        if outcome.verdict is Verdict.OK and outcome.user == user:
            return
        if outcome.verdict is Verdict.MISSING:
            raise Reject(401, headers=[("WWW-Authenticate", c) for c in auth.challenges(now)])
        if outcome.verdict is Verdict.STALE:
            challenges = auth.challenges(now, stale=True)
            raise Reject(401, headers=[("WWW-Authenticate", c) for c in challenges])
        other_user = outcome.verdict is Verdict.OK
        reason = f"user {outcome.user} may not register {aor}" if other_user else outcome.reason
        self.counts["auth_failed"] += 1
        self._events.emit(
            Kind.AUTH_FAILED, aor=aor, source=source, user=outcome.user, reason=reason
        )
        if auth.failed(source, now):
            self.counts["lockouts"] += 1
            self._events.emit(
                Kind.AUTH_LOCKOUT,
                source=source,
                on=True,
                failures=auth.config.lockout_failures,
                seconds=auth.config.lockout_time,
            )
        if other_user:
            raise Reject(403, "Forbidden (not your address-of-record)")
        raise Reject(401, headers=[("WWW-Authenticate", c) for c in auth.challenges(now)])

    def _check_capacity(self) -> None:
        capacity = self.config.capacity
        if capacity is None:
            return
        full = self.bindings.aors >= capacity
        if full != self._full:
            self._full = full
            self._events.emit(
                Kind.CAPACITY, on=full, registrations=self.bindings.aors, capacity=capacity
            )

    def _http_date(self) -> str:
        # formatdate costs a few microseconds; one REGISTER after another asks for the same second.
        second = int(self._wall_clock())
        if self._date[0] != second:
            self._date = (second, formatdate(second, usegmt=True))
        return self._date[1]

    def _warning(self, code: int, text: str) -> str:
        return f'{code} {self.config.address} "{text}"'

    def _granted(self, requested: int) -> int:
        """Expressway's refresh strategies, for a request that passed the 423 check."""
        ceiling = min(requested, self.config.max_expires)
        if self.config.refresh == "variable":
            return self._rng.randint(min(max(self.config.min_expires, 1), ceiling), ceiling)
        return ceiling

    def _contact_changes(
        self, request: Request, aor: str, call_id: str, cseq: int, flow: Flow
    ) -> list[_Change]:
        """Check every Contact before touching a binding: a REGISTER applies whole or not at all."""
        contacts = request.headers.get_all("Contact")
        index = request.headers.index
        expires_header = index["expires"][0] if "expires" in index else None
        default = self.config.default_expires
        if expires_header is not None:
            default = _parse_expires(expires_header)
        if "*" in contacts:
            if len(contacts) != 1 or expires_header is None or default != 0:
                raise Reject(400, "Bad Request (Contact * needs Expires: 0 and no other contact)")
            self._check_order(self.bindings.for_aor(aor), call_id, cseq)
            return [_Change(b.key, b.contact, 0) for b in self.bindings.for_aor(aor)]
        outbound = "supported" in index and "outbound" in (
            t.lower() for t in _tags(request, "Supported")
        )
        changes: list[_Change] = []
        for value in contacts:
            try:
                contact = parse_name_addr(value)
                contact_key = _contact_key(contact.uri)
            except SipParseError as exc:
                raise Reject(400, f"Bad Request (Contact: {exc})") from None
            params = contact.params
            expires = default
            if "expires" in params:
                expires = _parse_expires(params["expires"] or "")
            if 0 < expires < self.config.min_expires:
                raise Reject(423, headers=[("Min-Expires", str(self.config.min_expires))])
            granted = self._granted(expires) if expires else 0
            reg_id = _reg_id(params) if outbound else None
            if reg_id is not None:
                instance = params.get("+sip.instance")
                if not instance:
                    raise Reject(400, "Bad Request (reg-id without +sip.instance)")
                if len(request.headers.get_all("Via")) > 1:
                    # RFC 5626 §6: an edge proxy in between would need Path with ;ob.
                    raise Reject(439)
                key: BindingKey = (instance, reg_id)
                change = _Change(key, contact.uri, granted, instance, reg_id)
            else:
                key = contact_key
                change = _Change(key, contact.uri, granted)
            existing = self.bindings.get(aor, key)
            if existing is not None and existing.call_id == call_id:
                self._check_order([existing], call_id, cseq)
            changes.append(change)
        if sum(1 for c in changes if c.reg_id is not None) > 1:
            raise Reject(400, "Bad Request (more than one Contact with reg-id)")
        return changes

    @staticmethod
    def _check_order(bindings: list[Binding], call_id: str, cseq: int) -> None:
        # §10.3 step 7: a REGISTER older than the one that made the binding must not undo it.
        for binding in bindings:
            if binding.call_id == call_id and cseq <= binding.cseq:
                raise Reject(500, "Server Internal Error (out-of-order REGISTER)")


def _reply_via(request: Request, flow: Flow) -> tuple[str | None, Flow]:
    """The top Via of the response if it must differ from the request's, and where the
    response goes.

    RFC 3261 §18.2.1: ``received`` when the sent-by host is not the source address; RFC 3581
    §4: ``rport`` filled in (and ``received`` always) when the client asked with a bare
    ``rport``. Over TCP/TLS the response goes back on the connection (§18.2.2); over UDP to
    the source address, at the source port if ``rport`` was asked for, else at the sent-by
    port (default 5060)."""
    vias = request.headers.index.get("via")
    if not vias:
        return None, flow
    first = vias[0]
    try:
        top = parse_via(first if "," not in first else request.headers.get_all("Via")[0])
    except SipParseError:
        return None, flow
    host, port = flow.remote
    params = top.params
    wants_rport = "rport" in params and params["rport"] is None
    stamped = None
    if wants_rport or (top.host != host and top.host.lower() != host.lower()):
        stamp = dict(params)
        if wants_rport:
            stamp["rport"] = str(port)
        stamp["received"] = host
        if stamp != params:
            stamped = str(Via(top.transport, top.host, top.port, stamp))
    if _reliable(flow) or wants_rport:
        return stamped, flow
    return stamped, Flow(flow.transport, flow.local, (host, top.port or DEFAULT_SIP_PORT))


def _read_contact_key(uri: str) -> ContactKey:
    """The binding key of a contact URI (SipParseError if it is no sip:/sips: URI)."""
    parsed = parse_uri(uri)
    transport = parsed.params.get("transport")
    return (
        parsed.scheme,
        parsed.user,
        parsed.host.lower(),
        parsed.port,
        transport.lower() if transport else None,
    )


_contact_key: Final = Memoized(_read_contact_key)


def _contact_value(binding: Binding, now: float) -> str:
    value = f"<{binding.contact}>;expires={binding.remaining(now)}"
    if binding.reg_id is not None:
        value += f";+sip.instance={binding.instance};reg-id={binding.reg_id}"
    return value


def _tags(request: Request, header: str) -> list[str]:
    return [t.strip() for t in request.headers.get_all(header) if t.strip()]


def _reliable(flow: Flow) -> bool:
    """``flow.reliable`` (TCP or TLS), compiled here: Flow is not, and its property is a
    Python call on every request."""
    return flow.transport != "udp"


def _first(index: dict[str, list[str]], key: str) -> str:
    values = index.get(key)
    return values[0] if values else ""


def _reg_id(params: Params) -> int | None:
    if "reg-id" not in params:
        return None
    text = (params["reg-id"] or "").strip()
    if not text.isdigit() or not 1 <= int(text) <= 2**31 - 1:
        raise Reject(400, f"Bad Request (reg-id {text[:20]!r})")
    return int(text)


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


def _aor_or_raw(request: Request) -> str:
    raw = request.headers.get("To") or ""
    try:
        uri = parse_uri(parse_name_addr(raw).uri)
    except SipParseError:
        return raw
    return f"{uri.user}@{uri.host.lower()}" if uri.user else uri.host.lower()
