"""One endpoint's registration, sans-I/O: the RoomOS-like failover behaviour as a state machine.

The core never touches a socket or a resolver. It asks for work with actions (resolve the
proxy, connect to a target, send bytes, close a flow), is told the results, and keeps its
timers as data (refresh, backoff, and the REGISTER transaction's Timer F). Every asynchronous
request carries an operation number so that a late answer to an abandoned request is ignored.

Failover rules (RFC 3263 §4, as the seed's endpoint behaves):
* a 503, a transaction timeout or a lost connection marks the registration ``Failed`` with the
  reason and moves on to the next target at once;
* the target list is resolved again when it is exhausted, and after every failure when the
  proxy is a plain A name (round-robin DNS hands out the next peer first);
* a target that failed recently is tried last, not ruled out (it may have recovered);
* once every target has been tried since the last success, wait (RFC 5626 §4.5 backoff)
  and start over.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from enum import Enum

from emulator.events import EventSink
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
from endpoint.locator import Target, usable

USER_AGENT = "siplab-endpoint/0.1"


class Status(Enum):
    """RoomOS's words for a registration's state."""

    INACTIVE = "Inactive"
    REGISTERING = "Registering"
    REGISTERED = "Registered"
    FAILED = "Failed"


class Phase(Enum):
    IDLE = "idle"
    RESOLVING = "resolving"
    CONNECTING = "connecting"
    REGISTERING = "registering"
    REGISTERED = "registered"
    BACKOFF = "backoff"


@dataclass(frozen=True, slots=True)
class Resolve:
    op: int


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
        self.phase = Phase.IDLE
        self.target: Target | None = None
        self.flow: Flow | None = None
        self.granted: int | None = None
        self._events = events
        self._rng = rng or random.Random()
        self._timers = TimerConfig(t1=config.t1)
        self._actions: list[Action] = []
        self._op = 0
        self._targets: list[Target] = []
        self._next_index = 0
        self._fresh_list = False  # no target of the current list has been used yet
        # Targets tried since the last success: once all have been, back off.
        self._tried: set[tuple[str, str, int]] = set()
        # When each target last failed: such targets go to the end of a new list.
        self._failed_at: dict[tuple[str, str, int], float] = {}
        self._backoffs = 0
        self._tx: ClientTransaction | None = None
        self._call_id = new_call_id(str(config.address))
        self._from_tag = new_tag()
        self._cseq = 0
        self._expires = config.expires
        self._refresh_at: float | None = None
        self._retry_at: float | None = None
        # RoomOS resets its locator after a registration that followed a failure.
        self._failed_before = False
        # A graceful stop's REGISTER (Expires: 0) is in flight: its outcome ends, never fails over.
        self.unregistering = False

    # -- the sans-I/O verbs ------------------------------------------------------------

    def start(self, now: float) -> None:
        self._resolve()

    def pop_actions(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    def next_timer(self) -> float | None:
        times = [self._refresh_at, self._retry_at]
        if self._tx is not None:
            times.append(self._tx.next_timer())
        pending = [t for t in times if t is not None]
        return min(pending) if pending else None

    def handle_timer(self, now: float) -> None:
        if self._tx is not None:
            self._tx.handle_timer(now)
            self._drain_transaction(now)
        if self._refresh_at is not None and now >= self._refresh_at:
            self._refresh_at = None
            self._send_register(now)
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            self._tried.clear()
            self._resolve()

    def resolved(self, op: int, targets: list[Target], now: float) -> None:
        if op != self._op or self.phase is not Phase.RESOLVING:
            return
        self._targets = self._failed_last(targets, now)
        self._next_index = 0
        self._fresh_list = True
        if not targets:
            self._fail(f"No address found for '{self.config.proxy}'", now, retry_only=True)
            return
        self._try_next_target(now)

    def resolve_failed(self, op: int, error: str, now: float) -> None:
        if op != self._op or self.phase is not Phase.RESOLVING:
            return
        self._fail(error, now, retry_only=True)

    def connected(self, op: int, flow: Flow, now: float) -> None:
        if op != self._op or self.phase is not Phase.CONNECTING:
            self._actions.append(Close(flow))
            return
        self.flow = flow
        self._send_register(now)

    def connect_failed(self, op: int, reason: str, now: float) -> None:
        if op != self._op or self.phase is not Phase.CONNECTING:
            return
        self._fail(reason, now)

    def receive(self, response: Response, flow: Flow, now: float) -> None:
        tx = self._tx
        if tx is None or flow != self.flow or client_key(response) != tx.key:
            return
        tx.receive_response(response, now)
        self._drain_transaction(now)

    def flow_closed(self, flow: Flow, reason: str, now: float) -> None:
        if flow != self.flow:
            return
        self.flow = None
        self._events.emit("transport.lost", host=flow.remote[0], flow=str(flow), detail=reason)
        if self._tx is not None:
            self._tx.transport_error("Connection lost", now)
            self._drain_transaction(now)
        else:
            self._fail("Connection lost", now)

    def stop(self) -> None:
        """Forget everything in flight; the shell closes the sockets."""
        self._op += 1
        self._tx = None
        self.flow = None  # closing our own sockets is not a lost connection
        self._refresh_at = self._retry_at = None
        self.phase = Phase.IDLE

    def unregister(self, now: float) -> bool:
        """Graceful stop (RFC 3261 §10.2.2): REGISTER with ``Expires: 0`` on the live flow; any
        outcome (2xx, error, timeout, lost flow) then ends in ``Inactive`` with no failover.
        False when there is no binding to remove: the core is simply stopped."""
        if not self._registered or self.flow is None or self.target is None:
            self.stop()
            return False
        self.unregistering = True
        self._refresh_at = self._retry_at = None
        self._expires = 0
        self._send_register(now)
        return True

    def _unregistered(self, outcome: str, now: float) -> None:
        if self.flow is not None:
            self._actions.append(Close(self.flow))
        self.stop()
        self.unregistering = False
        self._expires = self.config.expires
        self._set_status(Status.INACTIVE, f"Unregistered ({outcome})", now)

    def snapshot(self) -> dict[str, object]:
        target = self.target
        return {
            "uri": self.aor,
            "state": self.status.value,
            "reason": self.reason,
            "registrar": f"{target.host}:{target.port}" if target and self._registered else None,
            "transport": target.transport.upper() if target and self._registered else None,
            "expires": self.granted if self._registered else None,
        }

    # -- internals ----------------------------------------------------------------------

    @property
    def _registered(self) -> bool:
        return self.status is Status.REGISTERED

    def _resolve(self) -> None:
        self._op += 1
        self.phase = Phase.RESOLVING
        self._events.emit("locator.restart", uri=self.config.proxy)
        self._actions.append(Resolve(self._op))

    def _failed_last(self, targets: list[Target], now: float) -> list[Target]:
        """DNS order, but targets that failed within ``failed_memory`` go last (oldest
        failure first): a dead peer is not the first one tried again, yet is not ruled out."""
        memory = self.config.failed_memory

        def failed_at(target: Target) -> float:
            at = self._failed_at.get(_target_key(target))
            return at if at is not None and now - at < memory else float("-inf")

        return sorted(targets, key=failed_at)  # stable: DNS order among equals

    def _try_next_target(self, now: float) -> None:
        while self._next_index < len(self._targets):
            target = self._targets[self._next_index]
            self._next_index += 1
            if _target_key(target) in self._tried:
                continue
            self._events.emit(
                "dns.located",
                uri=self.config.proxy,
                strategy=target.strategy,
                label=target.label,
                target=target.display(),
            )
            if usable(target, self.config.transport):
                self._use(target, now)
                return
        if not any(usable(t, self.config.transport) for t in self._targets):
            self._fail(
                f"No usable {self.config.transport.upper()} target for '{self.config.proxy}'",
                now,
                retry_only=True,
            )
        elif self._fresh_list:
            self._backoff(now)  # every target of a new list was tried since the last success
        else:
            self._resolve()

    def _use(self, target: Target, now: float) -> None:
        if self.flow is not None:
            self._actions.append(Close(self.flow))
            self.flow = None
        self.target = target
        self._tried.add(_target_key(target))
        self._fresh_list = False
        self._events.emit("stack.configured", target=target.display(), transport=target.transport)
        self._op += 1
        self.phase = Phase.CONNECTING
        self._actions.append(Connect(self._op, target))

    def _send_register(self, now: float) -> None:
        flow, target = self.flow, self.target
        if flow is None or target is None:
            self._fail("Connection lost", now)
            return
        if self.status is not Status.REGISTERED:
            self._set_status(Status.REGISTERING, "", now)
            self.phase = Phase.REGISTERING
        self._cseq += 1
        request = self._register_request(flow, target)
        self._tx = ClientTransaction(request, reliable=flow.reliable, now=now, timers=self._timers)
        self._send_pending()

    def _register_request(self, flow: Flow, target: Target) -> Request:
        user, _, domain = self.aor.partition("@")
        local = _hostport(flow.local)
        transport_param = "" if flow.transport == "udp" else f";transport={flow.transport}"
        scheme = "sips" if flow.transport == "tls" else "sip"
        headers = Headers(
            [
                ("Via", f"SIP/2.0/{flow.transport.upper()} {local};branch={new_branch()};rport"),
                ("Max-Forwards", "70"),
                ("From", f"<sip:{self.aor}>;tag={self._from_tag}"),
                ("To", f"<sip:{self.aor}>"),
                ("Call-ID", self._call_id),
                ("CSeq", f"{self._cseq} REGISTER"),
                ("Contact", f"<{scheme}:{user}@{local}{transport_param}>"),
                ("Expires", str(self._expires)),
                ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS"),
                ("User-Agent", USER_AGENT),
            ]
        )
        return Request("REGISTER", f"sip:{domain}", headers)

    def _send_pending(self) -> None:
        if self._tx is not None and self.flow is not None:
            for data in self._tx.pop_outgoing():
                self._actions.append(Send(self.flow, data))

    def _drain_transaction(self, now: float) -> None:
        self._send_pending()
        while self._tx is not None and (event := self._tx.next_event()) is not None:
            if isinstance(event, ResponseReceived):
                if event.response.status >= 200:
                    self._tx = None
                    self._final_response(event.response, now)
            elif isinstance(event, TransactionTimedOut):
                self._tx = None
                self._fail("408 Request Timeout", now)
            elif isinstance(event, TransportFailed):
                self._tx = None
                self._fail(event.reason, now)
            elif isinstance(event, TransactionTerminated):
                self._tx = None

    def _final_response(self, response: Response, now: float) -> None:
        if self.unregistering:
            self._unregistered(f"{response.status} {response.reason}", now)
            return
        if 200 <= response.status < 300:
            self._registered_ok(response, now)
            return
        if response.status == 423:
            min_expires = response.headers.get("Min-Expires")
            if min_expires and min_expires.strip().isdigit() and int(min_expires) > self._expires:
                self._expires = int(min_expires)
                self._send_register(now)
                return
        reason = f"{response.status} {response.reason}"
        warning = response.headers.get("Warning")
        if warning is not None:
            self._events.emit("sip.warning", header=f"Warning: {warning}")
            with contextlib.suppress(SipParseError):
                reason = f"{reason} / {parse_warning(warning).text}"
        self._fail(reason, now)

    def _registered_ok(self, response: Response, now: float) -> None:
        assert self.target is not None
        assert self.flow is not None
        granted = self._granted_expiry(response)
        was_registered = self._registered
        self.granted = granted
        self.phase = Phase.REGISTERED
        self._backoffs = 0
        self._tried.clear()
        self._refresh_at = now + granted * self.config.refresh_ratio
        if was_registered:
            self._events.emit("registration.refreshed", aor=self.aor, expires=granted)
        else:
            self._set_status(Status.REGISTERED, "", now)

    def _granted_expiry(self, response: Response) -> int:
        assert self.flow is not None
        ours = _hostport(self.flow.local)
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
        return self._expires

    def _fail(self, reason: str, now: float, *, retry_only: bool = False) -> None:
        """Report Failed, then fail over (or back off when nothing is left to try)."""
        if self.unregistering:
            self._unregistered(reason, now)
            return
        self._tx = None
        self._refresh_at = None
        if self.target is not None and not retry_only:
            self._failed_at[_target_key(self.target)] = now
        if self.flow is not None:
            self._actions.append(Close(self.flow))
            self.flow = None
        self._failed_before = True
        self._set_status(Status.FAILED, reason, now)
        if retry_only:
            self._backoff(now)
        elif _is_a_record_list(self._targets):
            self._resolve()
        else:
            self._try_next_target(now)

    def _backoff(self, now: float) -> None:
        self._op += 1
        self.phase = Phase.BACKOFF
        wait = min(self.config.retry_max, self.config.retry_base * 2**self._backoffs)
        wait *= self._rng.uniform(0.5, 1.0)
        self._backoffs += 1
        self._retry_at = now + wait
        self._events.emit("registration.backoff", aor=self.aor, wait=round(wait, 3))

    def _set_status(self, status: Status, reason: str, now: float) -> None:
        self.status = status
        self.reason = reason
        target = self.target
        self._events.emit(
            "registration.state",
            aor=self.aor,
            state=status.value,
            reason=reason,
            proxy=self.config.proxy,
            target=target.display() if target else None,
            registrar=f"{target.host}:{target.port}" if target else None,
            transport=target.transport.upper() if target else None,
            expires=self.granted if status is Status.REGISTERED else None,
            reset_locator=self._failed_before if status is Status.REGISTERED else None,
        )
        if status is Status.REGISTERED:
            self._failed_before = False


def _target_key(target: Target) -> tuple[str, str, int]:
    return (target.transport, target.host, target.port)


def _is_a_record_list(targets: list[Target]) -> bool:
    # A plain A name (strategy 4) or a numeric proxy (0): no SRV list to walk, so every
    # failure goes back to DNS, which rotates the next peer to the front.
    return bool(targets) and all(t.strategy in (0, 4) for t in targets)


def _hostport(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
