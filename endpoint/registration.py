"""One endpoint's registration, sans-I/O: the RoomOS-like failover behaviour as state machines.

The core never touches a socket or a resolver. It asks for work with actions (resolve a proxy,
connect to a target, send bytes, close a flow), is told the results, and keeps its timers as
data (refresh, backoff, keep-alive, and the REGISTER transaction's Timer F). Every asynchronous
request carries an operation number so that a late answer to an abandoned request is ignored.

The states and their allowed moves are the tables in ``endpoint.states``; this module decides
*which* input happened and what to do on entering a state. An endpoint has one registration
flow (``Outbound: Off``, the seed's endpoint: Proxy[1] only) or one per proxy (``Outbound:
On``, RFC 5626: each flow its own reg-id and connection, all registered at once).

Failover rules (RFC 3263 §4, as the seed's endpoint behaves):
* a 503, a transaction timeout, a lost connection, an ICMP error on a UDP flow or a keep-alive
  without its pong marks the flow ``Failed`` with the reason and moves on to the next target;
* the target list is resolved again when it is exhausted, and after every failure when the
  proxy is a plain A name (round-robin DNS hands out the next peer first);
* a target that failed recently is tried last, not ruled out (it may have recovered);
* once every target has been tried since the last success, wait (RFC 5626 §4.5 backoff)
  and start over; a 403 or refused credentials stop until the settings change.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from dataclasses import dataclass, field

from emulator.events import EventSink
from emulator.kinds import Kind
from emulator.sip.message import (
    Headers,
    Request,
    Response,
    SipParseError,
    new_branch,
    new_call_id,
    new_tag,
    parse_name_addr,
    parse_uri,
    parse_warning,
)
from emulator.sip.transaction import (
    ClientTransaction,
    ResponseReceived,
    TimerConfig,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
    client_key,
)
from emulator.sip.transport import Flow
from endpoint.config import EndpointConfig
from endpoint.digest import Challenge, DigestError, authorization, strongest
from endpoint.locator import STRATEGY_NUMERIC, Target, default_port, usable
from endpoint.states import (
    BOUND,
    FLOW_TRANSITIONS,
    KEEPALIVE_TRANSITIONS,
    STATUS_ON_ENTRY,
    FlowInput,
    FlowState,
    KeepAliveInput,
    KeepAliveState,
    Status,
    step,
)

__all__ = [
    "Action",
    "Close",
    "Connect",
    "Registration",
    "Resolve",
    "Send",
    "Status",
]

USER_AGENT = "siplab-endpoint/0.1"
# RFC 5626 §3.5.1: a double CRLF is a ping on a stream; the answer is a single CRLF.
PING = b"\r\n\r\n"
# A chain of redirects longer than this is a loop (RFC 3261 §8.1.3.4 leaves the limit to us).
MAX_REDIRECTS = 5


@dataclass(frozen=True, slots=True)
class Resolve:
    op: int
    proxy: str  # the Proxy[n] address to locate (RFC 3263)
    transport: str  # the DefaultTransport setting: tcp, udp, tls or auto


@dataclass(frozen=True, slots=True)
class Connect:
    op: int
    target: Target


@dataclass(frozen=True, slots=True)
class Send:
    flow: Flow
    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    flow: Flow


Action = Resolve | Connect | Send | Close

_F, _I = FlowState, FlowInput
_K, _KI = KeepAliveState, KeepAliveInput
TargetKey = tuple[str, str, int]


@dataclass(slots=True)
class _RegFlow:
    """One registration flow: its state, its target list, its REGISTER dialog and timers."""

    proxy: str
    reg_id: int | None  # RFC 5626 reg-id; None with Outbound Off
    call_id: str
    from_tag: str
    expires: int
    state: FlowState = _F.INACTIVE
    status: Status = Status.INACTIVE
    reason: str = ""
    op: int = 0
    target: Target | None = None
    flow: Flow | None = None
    granted: int | None = None
    targets: list[Target] = field(default_factory=list)
    next_index: int = 0
    fresh_list: bool = False  # no target of the current list has been used yet
    tried: set[TargetKey] = field(default_factory=set)  # since the last success
    backoffs: int = 0
    redirects: int = 0
    cseq: int = 0
    tx: ClientTransaction | None = None
    refresh_at: float | None = None
    retry_at: float | None = None
    # Digest: the challenge being answered, its header names, the nonce count, and whether
    # the request in flight already answered one (a second challenge then means "wrong").
    challenge: Challenge | None = None
    auth_header: str = "Authorization"
    nc: int = 0
    answered: bool = False
    # Keep-alive (RFC 5626 §4.4): the machine's state, when to ping, when the pong is due,
    # and on UDP the OPTIONS transaction that serves as the ping.
    ka: KeepAliveState = _K.OFF
    ping_at: float | None = None
    pong_due: float | None = None
    ka_tx: ClientTransaction | None = None
    # RoomOS resets its locator after a registration that followed a failure.
    failed_before: bool = False

    @property
    def bound(self) -> bool:
        return self.state in BOUND

    def next_timer(self) -> float | None:
        times = [self.refresh_at, self.retry_at, self.ping_at, self.pong_due]
        if self.tx is not None:
            times.append(self.tx.next_timer())
        if self.ka_tx is not None:
            times.append(self.ka_tx.next_timer())
        return min((t for t in times if t is not None), default=None)


class Registration:
    def __init__(
        self,
        config: EndpointConfig,
        events: EventSink,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.aor = config.uri
        self.status = Status.INACTIVE
        self.reason = ""
        self._events = events
        self._rng = rng or random.Random()
        self._timers = TimerConfig(t1=config.t1)
        self._actions: list[Action] = []
        self._op = 0
        self._ops: dict[int, _RegFlow] = {}
        # When each target last failed (any flow): such targets go to the end of a new list.
        self._failed_at: dict[TargetKey, float] = {}
        # RFC 5626 §4.1: one instance ID for the device, stable across restarts.
        self._instance = uuid.uuid5(uuid.NAMESPACE_URL, f"sip:{self.aor};{config.address}")
        self._flows: list[_RegFlow] = self._make_flows()
        self._started = False

    # -- the sans-I/O verbs ------------------------------------------------------------

    def start(self, now: float) -> None:
        self._started = True
        if self.config.proxy2 and not self.config.outbound:
            self._events.emit(
                Kind.ENDPOINT_WARNING,
                aor=self.aor,
                text=(
                    "Proxy[2..4] are set but SIP Outbound is Off: registering to Proxy[1] "
                    "only, with no redundancy (failover needs DNS SRV or round-robin A "
                    "records, or Outbound On)"
                ),
            )
        for reg in self._flows:
            self._move(reg, _I.START, now)
            self._resolve(reg)

    def pop_actions(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    def next_timer(self) -> float | None:
        return min((t for reg in self._flows if (t := reg.next_timer()) is not None), default=None)

    def handle_timer(self, now: float) -> None:
        for reg in list(self._flows):
            self._flow_timers(reg, now)

    def resolved(self, op: int, targets: list[Target], now: float) -> None:
        reg = self._ops.get(op)
        if reg is None or op != reg.op or reg.state is not _F.RESOLVING:
            return
        reg.targets = self._failed_last(targets, now)
        reg.next_index = 0
        reg.fresh_list = True
        if not targets:
            self._fail(reg, _I.RESOLVE_FAILED, f"No address found for '{reg.proxy}'", now)
            return
        self._try_next_target(reg, now)

    def resolve_failed(self, op: int, error: str, now: float) -> None:
        reg = self._ops.get(op)
        if reg is None or op != reg.op or reg.state is not _F.RESOLVING:
            return
        self._fail(reg, _I.RESOLVE_FAILED, error, now)

    def connected(self, op: int, flow: Flow, now: float) -> None:
        reg = self._ops.get(op)
        if reg is None or op != reg.op or reg.state is not _F.CONNECTING:
            self._actions.append(Close(flow))
            return
        reg.flow = flow
        self._move(reg, _I.CONNECTED, now)
        self._send_register(reg, now)

    def connect_failed(self, op: int, reason: str, now: float) -> None:
        reg = self._ops.get(op)
        if reg is None or op != reg.op or reg.state is not _F.CONNECTING:
            return
        self._fail(reg, _I.CONNECT_FAILED, reason, now)

    def receive(self, response: Response, flow: Flow, now: float) -> None:
        reg = self._flow_of(flow)
        if reg is None:
            return
        key = client_key(response)
        if reg.tx is not None and key == reg.tx.key:
            reg.tx.receive_response(response, now)
            self._drain_transaction(reg, now)
        elif reg.ka_tx is not None and key == reg.ka_tx.key:
            # Any answer to the UDP ping, even an error, shows the peer is alive.
            reg.ka_tx = None
            self._pong(reg, now)

    def pong_received(self, flow: Flow, now: float) -> None:
        """A CRLF pong arrived on ``flow`` (RFC 5626 §4.4.1)."""
        reg = self._flow_of(flow)
        if reg is not None:
            self._pong(reg, now)

    def flow_closed(self, flow: Flow, reason: str, now: float) -> None:
        reg = self._flow_of(flow)
        if reg is None:
            return
        reg.flow = None
        self._emit(reg, Kind.TRANSPORT_LOST, host=flow.remote[0], flow=str(flow), detail=reason)
        # A stream says "Connection lost" as in the seed; a UDP flow closes only on an ICMP
        # error, whose words say more.
        self._transport_error(reg, "Connection lost" if flow.reliable else reason, now)

    def reconfigure(self, config: EndpointConfig, now: float) -> None:
        """New settings at run time: drop every flow and restart the locator, as RoomOS does
        after a configuration change ("Need to resolve ... (restarted locator)")."""
        for reg in self._flows:
            self._abandon(reg)
            self._move(reg, _I.STOP, now)
        self.config = config
        self._timers = TimerConfig(t1=config.t1)
        self._flows = self._make_flows()
        if self._started:
            self.start(now)

    def deregister(self, now: float) -> None:
        """Graceful stop: REGISTER with Expires: 0 on every bound flow (RFC 3261 §10.2.2);
        ``deregistered`` turns true once each is answered, has failed, or had no binding."""
        for reg in self._flows:
            if reg.bound and reg.flow is not None and reg.target is not None:
                self._ka(reg, _KI.FLOW_DOWN)
                reg.refresh_at = None
                self._move(reg, _I.DEREGISTER, now)
                self._send_register(reg, now, expires=0)
            else:
                self._abandon(reg)
                self._move(reg, _I.DEREGISTER, now)

    @property
    def deregistered(self) -> bool:
        return all(reg.state is _F.INACTIVE for reg in self._flows)

    def stop(self) -> None:
        """Forget everything in flight; the shell closes the sockets."""
        self._op += 1
        for reg in self._flows:
            reg.tx = reg.ka_tx = None
            reg.flow = None  # closing our own sockets is not a lost connection
            reg.refresh_at = reg.retry_at = reg.ping_at = reg.pong_due = None
            reg.ka = _K.OFF
            reg.state = _F.INACTIVE

    def snapshot(self) -> dict[str, object]:
        bound = self._first_bound()
        target = bound.target if bound is not None else None
        snap: dict[str, object] = {
            "uri": self.aor,
            "state": self.status.value,
            "reason": self.reason,
            "registrar": f"{target.host}:{target.port}" if target else None,
            "transport": target.transport.upper() if target else None,
            "expires": bound.granted if bound is not None else None,
        }
        if self.config.outbound:
            snap["flows"] = [
                {
                    "reg_id": reg.reg_id,
                    "state": reg.status.value,
                    "reason": reg.reason,
                    "registrar": (
                        f"{reg.target.host}:{reg.target.port}" if reg.target and reg.bound else None
                    ),
                }
                for reg in self._flows
            ]
        return snap

    # -- flows and the state table -------------------------------------------------------

    def _make_flows(self) -> list[_RegFlow]:
        config = self.config
        if not config.outbound:
            proxies = [config.proxy]
        elif len(config.proxies) > 1:
            proxies = config.proxies
        else:
            # One proxy, outbound on: two flows to its first two targets (RFC 5626 §4.2
            # wants at least two flows for redundancy).
            proxies = [config.proxy, config.proxy]
        return [
            _RegFlow(
                proxy=proxy,
                reg_id=index + 1 if config.outbound else None,
                call_id=new_call_id(str(config.address)),
                from_tag=new_tag(),
                expires=config.expires,
            )
            for index, proxy in enumerate(proxies)
        ]

    def _flow_of(self, flow: Flow) -> _RegFlow | None:
        for reg in self._flows:
            if reg.flow == flow:
                return reg
        return None

    def _first_bound(self) -> _RegFlow | None:
        return next((reg for reg in self._flows if reg.bound), None)

    def _move(self, reg: _RegFlow, event: FlowInput, now: float, reason: str = "") -> None:
        """Apply the table, then announce the RoomOS status the new state carries."""
        reg.state = step(FLOW_TRANSITIONS, reg.state, event)
        status = STATUS_ON_ENTRY.get(reg.state)
        if status is None:
            return
        # Every failure is reported (each names its reason); other statuses on change only.
        if status is reg.status and reg.state is not _F.FAILED:
            return
        reg.status, reg.reason = status, reason
        if status is Status.FAILED:
            reg.failed_before = True
        if self.config.outbound:
            self._emit_state(Kind.REGISTRATION_FLOW, reg, status, reason)
            self._update_overall(now)
        else:
            self.status, self.reason = status, reason
            self._emit_state(Kind.REGISTRATION_STATE, reg, status, reason)
        if status is Status.REGISTERED:
            reg.failed_before = False

    def _update_overall(self, now: float) -> None:
        """Outbound On: registered while any flow is; failed only when none is and one failed."""
        flows = self._flows
        bound = self._first_bound()
        if bound is not None:
            status, reason, source = Status.REGISTERED, "", bound
        elif failed := [r for r in flows if r.status is Status.FAILED]:
            status, reason, source = Status.FAILED, failed[-1].reason, failed[-1]
        elif registering := [r for r in flows if r.status is Status.REGISTERING]:
            status, reason, source = Status.REGISTERING, "", registering[0]
        else:
            status, reason, source = Status.INACTIVE, "", flows[0]
        if (status, reason) == (self.status, self.reason):
            return
        self.status, self.reason = status, reason
        self._emit_state(Kind.REGISTRATION_STATE, source, status, reason)

    def _emit_state(self, kind: Kind, reg: _RegFlow, status: Status, reason: str) -> None:
        target = reg.target
        registered = status is Status.REGISTERED
        self._emit(
            reg,
            kind,
            state=status.value,
            reason=reason,
            proxy=reg.proxy,
            target=target.display() if target else None,
            registrar=f"{target.host}:{target.port}" if target else None,
            transport=target.transport.upper() if target else None,
            expires=reg.granted if registered else None,
            reset_locator=reg.failed_before if registered else None,
        )

    def _emit(self, reg: _RegFlow, kind: Kind, **fields: object) -> None:
        if reg.reg_id is not None:
            fields["reg_id"] = reg.reg_id
        self._events.emit(kind, aor=self.aor, **fields)

    # -- timers --------------------------------------------------------------------------

    def _flow_timers(self, reg: _RegFlow, now: float) -> None:
        if reg.tx is not None:
            reg.tx.handle_timer(now)
            self._drain_transaction(reg, now)
        if reg.ka_tx is not None:
            reg.ka_tx.handle_timer(now)
            self._send_keepalive_pending(reg)
        if reg.pong_due is not None and now >= reg.pong_due:
            reg.pong_due = None
            reg.ka_tx = None
            self._ka(reg, _KI.PONG_TIMEOUT)
            target = reg.target.display() if reg.target else "the peer"
            self._transport_error(
                reg,
                f"Keep-alive timed out: no pong from {target} "
                f"within {self.config.pong_timeout:g} s",
                now,
            )
        if reg.ping_at is not None and now >= reg.ping_at:
            reg.ping_at = None
            self._ping(reg, now)
        if reg.refresh_at is not None and now >= reg.refresh_at:
            reg.refresh_at = None
            spare = self._spare_target(reg, now)
            if spare is not None:
                self._relocate(reg, spare, now)
            else:
                self._move(reg, _I.REFRESH_DUE, now)
                self._send_register(reg, now)
        if reg.retry_at is not None and now >= reg.retry_at:
            reg.retry_at = None
            reg.tried.clear()
            self._move(reg, _I.RETRY_DUE, now)
            self._resolve(reg)

    # -- keep-alive (RFC 5626 §4.4) --------------------------------------------------------

    def _ka(self, reg: _RegFlow, event: KeepAliveInput) -> None:
        reg.ka = step(KEEPALIVE_TRANSITIONS, reg.ka, event)
        if reg.ka is _K.OFF:
            reg.ping_at = reg.pong_due = None
            reg.ka_tx = None

    def _schedule_ping(self, reg: _RegFlow, now: float) -> None:
        # §4.4.1: a random time between 80 % and 100 % of the interval, so flows that came up
        # together do not ping together.
        reg.ping_at = now + self.config.keepalive_interval * self._rng.uniform(0.8, 1.0)

    def _flow_up(self, reg: _RegFlow, now: float) -> None:
        if not self.config.keepalive:
            return
        was = reg.ka
        self._ka(reg, _KI.FLOW_UP)
        if was is _K.OFF:
            self._schedule_ping(reg, now)

    def _ping(self, reg: _RegFlow, now: float) -> None:
        flow = reg.flow
        if flow is None:
            return
        self._ka(reg, _KI.PING_DUE)
        reg.pong_due = now + self.config.pong_timeout
        if flow.reliable:
            self._actions.append(Send(flow, PING))
            return
        # §4.4.2 would use STUN; an OPTIONS answered by the registrar proves the same thing.
        reg.ka_tx = ClientTransaction(
            self._options_request(reg, flow), reliable=False, now=now, timers=self._timers
        )
        self._send_keepalive_pending(reg)

    def _send_keepalive_pending(self, reg: _RegFlow) -> None:
        if reg.ka_tx is not None and reg.flow is not None:
            for data in reg.ka_tx.pop_outgoing():
                self._actions.append(Send(reg.flow, data))

    def _pong(self, reg: _RegFlow, now: float) -> None:
        if reg.ka is _K.OFF:
            return
        was = reg.ka
        self._ka(reg, _KI.PONG)
        if was is _K.AWAITING_PONG:
            reg.pong_due = None
            self._schedule_ping(reg, now)

    # -- locating and connecting -----------------------------------------------------------

    def _next_op(self, reg: _RegFlow) -> int:
        self._ops.pop(reg.op, None)
        self._op += 1
        reg.op = self._op
        self._ops[self._op] = reg
        return self._op

    def _resolve(self, reg: _RegFlow) -> None:
        op = self._next_op(reg)
        self._emit(reg, Kind.LOCATOR_RESTART, uri=reg.proxy)
        self._actions.append(Resolve(op, reg.proxy, self.config.transport))

    def _failed_last(self, targets: list[Target], now: float) -> list[Target]:
        """DNS order, but targets that failed within ``failed_memory`` go last (oldest
        failure first): a dead peer is not the first one tried again, yet is not ruled out."""
        memory = self.config.failed_memory

        def failed_at(target: Target) -> float:
            at = self._failed_at.get(_target_key(target))
            return at if at is not None and now - at < memory else float("-inf")

        return sorted(targets, key=failed_at)  # stable: DNS order among equals

    def _held_by_others(self, reg: _RegFlow) -> set[TargetKey]:
        """Targets other flows use or are connecting to: with Outbound On each flow goes to
        its own peer while another is left."""
        return {
            _target_key(other.target)
            for other in self._flows
            if other is not reg
            and other.target is not None
            and other.state not in (_F.FAILED, _F.BACKOFF, _F.HALTED, _F.INACTIVE)
        }

    def _spare_target(self, reg: _RegFlow, now: float) -> Target | None:
        """With Outbound On, for a flow on the same peer as another flow: a usable target of
        its list that no other flow uses and that has not failed within ``failed_memory``."""
        if reg.reg_id is None or reg.target is None:
            return None
        held = self._held_by_others(reg)
        if _target_key(reg.target) not in held:
            return None
        memory = self.config.failed_memory
        for target in reg.targets:
            key = _target_key(target)
            failed_at = self._failed_at.get(key)
            recent = failed_at is not None and now - failed_at < memory
            if usable(target, self.config.transport) and key not in held and not recent:
                return target
        return None

    def _relocate(self, reg: _RegFlow, target: Target, now: float) -> None:
        """Leave the shared peer for ``target``: the old connection closes (the registrar
        ends that flow's binding) while the other flow keeps the endpoint registered."""
        self._close(reg)
        self._move(reg, _I.RELOCATE, now)
        self._use(reg, target, now)

    def _try_next_target(self, reg: _RegFlow, now: float) -> None:
        held = self._held_by_others(reg)
        transport = self.config.transport
        spare = [
            t
            for t in reg.targets[reg.next_index :]
            if usable(t, transport) and _target_key(t) not in reg.tried | held
        ]
        while reg.next_index < len(reg.targets):
            target = reg.targets[reg.next_index]
            reg.next_index += 1
            key = _target_key(target)
            if key in reg.tried or (key in held and spare):
                continue
            self._emit(
                reg,
                Kind.DNS_LOCATED,
                uri=reg.proxy,
                strategy=target.strategy,
                label=target.label,
                target=target.display(),
            )
            if usable(target, transport):
                self._use(reg, target, now)
                return
        if not any(usable(t, transport) for t in reg.targets):
            self._fail(
                reg,
                _I.RESOLVE_FAILED,
                f"No usable {transport.upper()} target for '{reg.proxy}'",
                now,
            )
        elif reg.fresh_list:
            self._backoff(reg, now)  # every target of a new list was tried since the last success
        else:
            self._move(reg, _I.REQUERY, now)
            self._resolve(reg)

    def _use(self, reg: _RegFlow, target: Target, now: float) -> None:
        if reg.flow is not None:
            self._actions.append(Close(reg.flow))
            reg.flow = None
        reg.target = target
        reg.tried.add(_target_key(target))
        reg.fresh_list = False
        reg.challenge = None
        reg.answered = False
        self._emit(reg, Kind.STACK_CONFIGURED, target=target.display(), transport=target.transport)
        op = self._next_op(reg)
        if reg.state is _F.FAILED:
            self._move(reg, _I.NEXT_TARGET, now)
        elif reg.state is _F.RESOLVING:
            self._move(reg, _I.RESOLVED, now)
        self._actions.append(Connect(op, target))

    # -- REGISTER ------------------------------------------------------------------------

    def _send_register(self, reg: _RegFlow, now: float, *, expires: int | None = None) -> None:
        flow, target = reg.flow, reg.target
        if flow is None or target is None:
            self._transport_error(reg, "Connection lost", now)
            return
        reg.cseq += 1
        request = self._register_request(reg, flow, reg.expires if expires is None else expires)
        reg.tx = ClientTransaction(request, reliable=flow.reliable, now=now, timers=self._timers)
        self._send_pending(reg)

    def _contact(self, reg: _RegFlow, flow: Flow) -> str:
        user = self.aor.partition("@")[0]
        transport_param = "" if flow.transport == "udp" else f";transport={flow.transport}"
        scheme = "sips" if flow.transport == "tls" else "sip"
        contact = f"<{scheme}:{user}@{_hostport(flow.local)}{transport_param}>"
        if reg.reg_id is not None:
            contact += f';+sip.instance="<urn:uuid:{self._instance}>";reg-id={reg.reg_id}'
        return contact

    def _register_request(self, reg: _RegFlow, flow: Flow, expires: int) -> Request:
        domain = self.aor.partition("@")[2]
        request_uri = f"sip:{domain}"
        headers = Headers(
            [
                ("Via", _via(flow)),
                ("Max-Forwards", "70"),
                ("From", f"<sip:{self.aor}>;tag={reg.from_tag}"),
                ("To", f"<sip:{self.aor}>"),
                ("Call-ID", reg.call_id),
                ("CSeq", f"{reg.cseq} REGISTER"),
                ("Contact", self._contact(reg, flow)),
                ("Expires", str(expires)),
                ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS"),
                ("User-Agent", USER_AGENT),
            ]
        )
        if reg.reg_id is not None:
            headers.add("Supported", "path, outbound")
        credentials = self._credentials(reg, "REGISTER", request_uri)
        if credentials is not None:
            headers.add(reg.auth_header, credentials)
        return Request("REGISTER", request_uri, headers)

    def _credentials(self, reg: _RegFlow, method: str, uri: str) -> str | None:
        config = self.config
        if reg.challenge is None or config.username is None:
            return None
        reg.nc += 1
        return authorization(
            reg.challenge,
            method=method,
            uri=uri,
            username=config.username,
            password=config.password or "",
            nc=reg.nc,
        )

    def _options_request(self, reg: _RegFlow, flow: Flow) -> Request:
        target = reg.target
        assert target is not None
        headers = Headers(
            [
                ("Via", _via(flow)),
                ("Max-Forwards", "70"),
                ("From", f"<sip:{self.aor}>;tag={new_tag()}"),
                ("To", f"<sip:{_hostport((target.host, target.port))}>"),
                ("Call-ID", new_call_id(str(self.config.address))),
                ("CSeq", "1 OPTIONS"),
                ("User-Agent", USER_AGENT),
            ]
        )
        return Request("OPTIONS", f"sip:{_hostport((target.host, target.port))}", headers)

    def _send_pending(self, reg: _RegFlow) -> None:
        if reg.tx is not None and reg.flow is not None:
            for data in reg.tx.pop_outgoing():
                self._actions.append(Send(reg.flow, data))

    def _drain_transaction(self, reg: _RegFlow, now: float) -> None:
        self._send_pending(reg)
        while reg.tx is not None and (event := reg.tx.next_event()) is not None:
            if isinstance(event, ResponseReceived):
                if event.response.status >= 200:
                    reg.tx = None
                    self._final_response(reg, event.response, now)
            elif isinstance(event, TransactionTimedOut):
                reg.tx = None
                self._fail(reg, _I.TIMEOUT, "408 Request Timeout", now)
            elif isinstance(event, TransportFailed):
                reg.tx = None
                self._transport_error(reg, event.reason, now)
            elif isinstance(event, TransactionTerminated):
                reg.tx = None

    def _final_response(self, reg: _RegFlow, response: Response, now: float) -> None:
        status = response.status
        if reg.state is _F.UNREGISTERING:
            self._finish_deregister(reg, response, now)
            return
        if 200 <= status < 300:
            self._registered_ok(reg, response, now)
            return
        if status in (401, 407):
            self._challenged(reg, response, now)
            return
        if status == 423:
            min_expires = response.headers.get("Min-Expires")
            if min_expires and min_expires.strip().isdigit() and int(min_expires) > reg.expires:
                reg.expires = int(min_expires)
                self._move(reg, _I.INTERVAL_TOO_BRIEF, now)
                self._send_register(reg, now)
                return
        if 300 <= status < 400 and self._redirect(reg, response, now):
            return
        reason = f"{status} {response.reason}"
        warning = response.headers.get("Warning")
        if warning is not None:
            self._emit(reg, Kind.SIP_WARNING, header=f"Warning: {warning}")
            with contextlib.suppress(SipParseError):
                reason = f"{reason} / {parse_warning(warning).text}"
        self._fail(reg, _I.FORBIDDEN if status == 403 else _I.REJECTED, reason, now)

    def _finish_deregister(self, reg: _RegFlow, response: Response, now: float) -> None:
        status = response.status
        if status in (401, 407) and not reg.answered and self.config.username is not None:
            with contextlib.suppress(DigestError):
                self._take_challenge(reg, response)
                self._move(reg, _I.CHALLENGE, now)
                reg.answered = True
                self._send_register(reg, now, expires=0)
                return
        self._move(reg, _final_input(status), now)
        self._close(reg)

    def _take_challenge(self, reg: _RegFlow, response: Response) -> Challenge:
        name = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        challenge = strongest(response.headers.get_all(name))
        if reg.challenge is None or reg.challenge.nonce != challenge.nonce:
            reg.nc = 0
        reg.challenge = challenge
        reg.auth_header = "Authorization" if response.status == 401 else "Proxy-Authorization"
        return challenge

    def _challenged(self, reg: _RegFlow, response: Response, now: float) -> None:
        """RFC 3261 §22.2: answer a challenge once; a second one for the same request means
        the credentials are wrong (unless it only says the nonce went stale, RFC 7616 §3.3)."""
        reason = f"{response.status} {response.reason}"
        if self.config.username is None:
            self._fail(reg, _I.AUTH_REJECTED, f"{reason} (no credentials configured)", now)
            return
        try:
            challenge = self._take_challenge(reg, response)
        except DigestError as exc:
            self._fail(reg, _I.AUTH_REJECTED, f"{reason} ({exc})", now)
            return
        if reg.answered and not challenge.stale:
            self._fail(reg, _I.AUTH_REJECTED, f"{reason} (credentials rejected)", now)
            return
        reg.answered = True
        self._move(reg, _I.CHALLENGE, now)
        self._send_register(reg, now)

    def _redirect(self, reg: _RegFlow, response: Response, now: float) -> bool:
        """RFC 3261 §8.1.3.4: try the Contacts of a 3xx, by q-value, as the new targets."""
        if reg.redirects >= MAX_REDIRECTS:
            return False
        contacts: list[tuple[float, Target]] = []
        for value in response.headers.get_all("Contact"):
            with contextlib.suppress(SipParseError, ValueError):
                contact = parse_name_addr(value)
                uri = parse_uri(contact.uri)
                transport = (uri.params.get("transport") or "").lower() or (
                    "tls" if uri.scheme == "sips" else "udp"
                )
                if transport not in ("udp", "tcp", "tls") or not usable(
                    Target(0, transport, "", 0, False),  # type: ignore[arg-type]
                    self.config.transport,
                ):
                    continue
                port = uri.port or default_port(transport)  # type: ignore[arg-type]
                target = Target(
                    STRATEGY_NUMERIC,
                    transport,  # type: ignore[arg-type]
                    uri.host.strip("[]"),
                    port,
                    uri.port is not None,
                    uri.host.strip("[]"),
                )
                contacts.append((float(contact.params.get("q") or 1.0), target))
        if not contacts:
            return False
        contacts.sort(key=lambda item: -item[0])  # stable: header order among equal q
        reg.redirects += 1
        self._close(reg)
        reg.targets = [target for _, target in contacts]
        reg.next_index = 1
        reg.fresh_list = False
        self._move(reg, _I.REDIRECT, now)
        target = reg.targets[0]
        reg.target = target
        reg.tried.add(_target_key(target))
        reg.challenge = None
        reg.answered = False
        self._emit(reg, Kind.STACK_CONFIGURED, target=target.display(), transport=target.transport)
        self._actions.append(Connect(self._next_op(reg), target))
        return True

    def _registered_ok(self, reg: _RegFlow, response: Response, now: float) -> None:
        assert reg.target is not None
        granted = self._granted_expiry(reg, response)
        was_bound = reg.bound or reg.status is Status.REGISTERED
        reg.granted = granted
        reg.backoffs = 0
        reg.redirects = 0
        reg.answered = False
        reg.tried.clear()
        reg.refresh_at = now + granted * self.config.refresh_ratio
        self._move(reg, _I.OK, now)
        if was_bound:
            self._emit(reg, Kind.REGISTRATION_REFRESHED, expires=granted)
        self._flow_up(reg, now)

    def _granted_expiry(self, reg: _RegFlow, response: Response) -> int:
        assert reg.flow is not None
        ours = _hostport(reg.flow.local)
        for value in response.headers.get_all("Contact"):
            try:
                contact = parse_name_addr(value)
                uri = parse_uri(contact.uri)
            except SipParseError:
                continue
            expires = contact.params.get("expires")
            if _hostport((uri.host, uri.port or 5060)) == ours and expires and expires.isdigit():
                return int(expires)
        header = response.headers.get("Expires")
        if header is not None and header.strip().isdigit():
            return int(header)
        return reg.expires

    # -- failure and failover ------------------------------------------------------------

    def _transport_error(self, reg: _RegFlow, reason: str, now: float) -> None:
        if reg.state is _F.UNREGISTERING:
            self._move(reg, _I.TRANSPORT_ERROR, now)
            self._close(reg)
            return
        if reg.state in (_F.INACTIVE, _F.FAILED, _F.BACKOFF, _F.HALTED, _F.RESOLVING):
            return  # nothing of ours was on that flow any more
        if reg.state is _F.CONNECTING:
            self._fail(reg, _I.CONNECT_FAILED, reason, now)
        else:
            self._fail(reg, _I.TRANSPORT_ERROR, reason, now)

    def _close(self, reg: _RegFlow) -> None:
        reg.tx = None
        reg.refresh_at = None
        if reg.ka is not _K.OFF:
            self._ka(reg, _KI.FLOW_DOWN)
        if reg.flow is not None:
            self._actions.append(Close(reg.flow))
            reg.flow = None

    def _abandon(self, reg: _RegFlow) -> None:
        """Drop the flow and everything in flight (a settings change, a graceful stop)."""
        self._close(reg)
        self._ops.pop(reg.op, None)
        reg.retry_at = None

    def _fail(self, reg: _RegFlow, event: FlowInput, reason: str, now: float) -> None:
        """Report Failed, then fail over (or back off when nothing is left to try)."""
        if reg.state is _F.UNREGISTERING:
            self._move(reg, event, now)  # going away anyway: no failover
            self._close(reg)
            return
        retry_only = event is _I.RESOLVE_FAILED
        if reg.target is not None and not retry_only:
            self._failed_at[_target_key(reg.target)] = now
        self._close(reg)
        self._move(reg, event, now, reason)
        if reg.state is _F.HALTED:
            return  # 403 / refused credentials: no retry storm; a settings change restarts
        if retry_only:
            self._backoff(reg, now)
        elif _is_a_record_list(reg.targets):
            self._move(reg, _I.REQUERY, now)
            self._resolve(reg)
        else:
            self._try_next_target(reg, now)

    def _backoff(self, reg: _RegFlow, now: float) -> None:
        self._next_op(reg)
        self._move(reg, _I.EXHAUSTED, now)
        config = self.config
        wait = min(config.retry_max, config.retry_base * 2**reg.backoffs)
        wait *= self._rng.uniform(0.5, 1.0)
        reg.backoffs += 1
        reg.retry_at = now + wait
        self._emit(reg, Kind.REGISTRATION_BACKOFF, wait=round(wait, 3))


def _final_input(status: int) -> FlowInput:
    """The table's input for a final response, by class (RFC 3261 §21)."""
    if 200 <= status < 300:
        return _I.OK
    if 300 <= status < 400:
        return _I.REDIRECT
    if status in (401, 407):
        return _I.AUTH_REJECTED
    if status == 423:
        return _I.INTERVAL_TOO_BRIEF
    if status == 403:
        return _I.FORBIDDEN
    return _I.REJECTED


def _via(flow: Flow) -> str:
    return f"SIP/2.0/{flow.transport.upper()} {_hostport(flow.local)};branch={new_branch()};rport"


def _target_key(target: Target) -> TargetKey:
    return (target.transport, target.host, target.port)


def _is_a_record_list(targets: list[Target]) -> bool:
    # A plain A name (strategy 4) or a numeric proxy (0): no SRV list to walk, so every
    # failure goes back to DNS, which rotates the next peer to the front.
    return bool(targets) and all(t.strategy in (0, 4) for t in targets)


def _hostport(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
