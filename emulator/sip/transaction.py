"""Non-INVITE transactions, RFC 3261 §17.1.2 (client) and §17.2.2 (server), sans-I/O.

The shell feeds messages, transport errors and timer wake-ups with its own `now` (monotonic
seconds); the transaction answers with bytes to send (`pop_outgoing`), the next deadline
(`next_timer`) and events (`next_event`). The client's transition table below is RFC 3261
Figure 7 written as data; an input a state does not list is ignored (e.g. a late
retransmission). A server that answers every request at once needs only the Completed state
of Figure 8, which :class:`AnsweredRequests` keeps for many transactions together.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from emulator.sip.message import (
    Request,
    Response,
    SipParseError,
    parse_cseq,
    parse_via,
    serialize_message,
)

# Where a server sent a response (a registrar's Flow), kept as it is.
F = TypeVar("F")

__all__ = [
    "AnsweredRequests",
    "ClientTransaction",
    "ResponseReceived",
    "TimerConfig",
    "TransactionEvent",
    "TransactionTerminated",
    "TransactionTimedOut",
    "TransportFailed",
    "TxState",
    "client_key",
    "server_key",
]


@dataclass(frozen=True, slots=True)
class TimerConfig:
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


class TxState(enum.Enum):
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    response: Response


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """Timer F fired before a final response; the TU treats it as a 408."""


@dataclass(frozen=True, slots=True)
class TransportFailed:
    reason: str


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    pass


TransactionEvent = ResponseReceived | TransactionTimedOut | TransportFailed | TransactionTerminated


class _In(enum.Enum):
    """Inputs that move a client transaction (the arrows of Figure 7)."""

    PROVISIONAL = "1xx"  # received (client) or sent by the TU (server)
    FINAL = "200-699"  # received (client) or sent by the TU (server)
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_K = "Timer K"
    TRANSPORT_ERROR = "transport error"


_S: Final = TxState

# RFC 3261 Figure 7: non-INVITE client transaction.
CLIENT_TRANSITIONS: Final[dict[TxState, dict[_In, TxState]]] = {
    _S.TRYING: {
        _In.TIMER_E: _S.TRYING,
        _In.PROVISIONAL: _S.PROCEEDING,
        _In.FINAL: _S.COMPLETED,
        _In.TIMER_F: _S.TERMINATED,
        _In.TRANSPORT_ERROR: _S.TERMINATED,
    },
    _S.PROCEEDING: {
        _In.TIMER_E: _S.PROCEEDING,
        _In.PROVISIONAL: _S.PROCEEDING,
        _In.FINAL: _S.COMPLETED,
        _In.TIMER_F: _S.TERMINATED,
        _In.TRANSPORT_ERROR: _S.TERMINATED,
    },
    _S.COMPLETED: {
        _In.TIMER_K: _S.TERMINATED,
    },
    _S.TERMINATED: {},
}


def client_key(response: Response) -> tuple[str, str] | None:
    """RFC 3261 §17.1.3: top Via branch and CSeq method; None when they cannot be read."""
    try:
        branch = parse_via(response.headers.get_all("Via")[0]).branch
        _, method = parse_cseq(response.headers.get("CSeq") or "")
    except (SipParseError, IndexError):
        return None
    return None if not branch else (branch, method)


def server_key(request: Request) -> tuple[str, str, str] | None:
    """RFC 3261 §17.2.3: top Via branch and sent-by, and the method (ACK matches INVITE)."""
    try:
        via = parse_via(request.headers.get_all("Via")[0])
    except (SipParseError, IndexError):
        return None
    if not via.branch:
        return None
    return via.branch, via.sent_by, "INVITE" if request.method == "ACK" else request.method


def _by_time(item: tuple[float, _In]) -> tuple[float, str]:
    return item[0], item[1].value


def _classify(status: int) -> _In | None:
    if 100 <= status <= 199:
        return _In.PROVISIONAL
    if 200 <= status <= 699:
        return _In.FINAL
    return None


class _Transaction:
    """State, timers and queues of a transaction; the subclass supplies the table.

    An endpoint host keeps one per registration in flight, thousands of them: hence the
    slots, and the event queue made only when an event comes.
    """

    __slots__ = ("_config", "_deadlines", "_events", "_outgoing", "_reliable", "state")
    _table: dict[TxState, dict[_In, TxState]]

    def __init__(self, reliable: bool, timers: TimerConfig) -> None:
        self.state = TxState.TRYING
        self._reliable = reliable
        self._config = timers
        self._deadlines: dict[_In, float] = {}
        self._outgoing: list[bytes] = []
        self._events: deque[TransactionEvent] | None = None

    def pop_outgoing(self) -> list[bytes]:
        out, self._outgoing = self._outgoing, []
        return out

    def next_timer(self) -> float | None:
        return min(self._deadlines.values(), default=None)

    def next_event(self) -> TransactionEvent | None:
        return self._events.popleft() if self._events else None

    def _announce(self, event: TransactionEvent) -> None:
        if self._events is None:
            self._events = deque()
        self._events.append(event)

    def handle_timer(self, now: float) -> None:
        due = sorted(((w, t) for t, w in self._deadlines.items() if w <= now), key=_by_time)
        for when, timer in due:
            # An earlier timer in this batch may have cancelled this one.
            if self._deadlines.get(timer) == when:
                del self._deadlines[timer]
                self._on_timer(timer, now)

    def _on_timer(self, timer: _In, now: float) -> None:
        raise NotImplementedError

    def _move(self, event: _In, announce: TransactionEvent | None = None) -> bool:
        """Apply the table; False (and no change) when the input is not allowed now.

        `announce` is reported only if the move happens, and before any TransactionTerminated.
        """
        target = self._table[self.state].get(event)
        if target is None:
            return False
        if announce is not None:
            self._announce(announce)
        self.state = target
        if target is TxState.TERMINATED:
            self._deadlines.clear()
            self._announce(TransactionTerminated())
        return True

    def _start_wait(self, timer: _In, delay: float, now: float) -> None:
        """Timers K and J: zero on reliable transports, so they fire at once."""
        if delay > 0:
            self._deadlines[timer] = now + delay
        else:
            self._on_timer(timer, now)


class ClientTransaction(_Transaction):
    __slots__ = ("_interval", "_wire", "key")
    _table = CLIENT_TRANSITIONS

    def __init__(
        self,
        request: Request,
        *,
        reliable: bool,
        now: float,
        timers: TimerConfig = TimerConfig(),  # frozen, so sharing is safe
    ) -> None:
        if request.method in ("INVITE", "ACK"):
            raise ValueError("only non-INVITE client transactions are implemented")
        vias = request.headers.get_all("Via")
        branch = parse_via(vias[0]).branch if vias else None
        if not branch:
            raise ValueError("the request needs a top Via with a branch parameter")
        super().__init__(reliable, timers)
        self.key: tuple[str, str] = (branch, request.method)
        self._wire = serialize_message(request)
        self._outgoing.append(self._wire)
        self._interval = timers.t1
        self._deadlines[_In.TIMER_F] = now + 64 * timers.t1
        if not reliable:
            self._deadlines[_In.TIMER_E] = now + timers.t1

    def receive_response(self, response: Response, now: float) -> None:
        kind = _classify(response.status)
        if kind is None or client_key(response) != self.key:
            return
        # A retransmitted final response in Completed is not in the table: absorbed.
        if self._move(kind, ResponseReceived(response)) and kind is _In.FINAL:
            self._deadlines.clear()
            self._start_wait(_In.TIMER_K, 0 if self._reliable else self._config.t4, now)

    def transport_error(self, reason: str, now: float) -> None:
        self._move(_In.TRANSPORT_ERROR, TransportFailed(reason))

    def _on_timer(self, timer: _In, now: float) -> None:
        if timer is _In.TIMER_E:
            if self._move(_In.TIMER_E):
                self._outgoing.append(self._wire)
                # §17.1.2.2: doubling up to T2 while Trying, every T2 once Proceeding.
                if self.state is TxState.TRYING:
                    self._interval = min(2 * self._interval, self._config.t2)
                else:
                    self._interval = self._config.t2
                self._deadlines[_In.TIMER_E] = now + self._interval
        elif timer is _In.TIMER_F:
            self._move(_In.TIMER_F, TransactionTimedOut())
        else:
            self._move(timer)


class AnsweredRequests(Generic[F]):
    """The non-INVITE server transactions over UDP of a TU that answers every request at once.

    RFC 3261 §17.2.2 (Figure 8): the TU's final response takes a transaction from Trying to
    Completed, where every retransmission of the request gets that response again, until
    Timer J (64*T1 on an unreliable transport) ends it. Answered at once, a transaction never
    lingers in Trying or Proceeding, so it is its key, its response, where that went, and
    when Timer J fires. Timer J is the same for all of them, so they end in the order they
    began: a queue, not a heap, and nothing per transaction but a dict entry. (Over TCP/TLS
    Timer J is zero: nothing is kept.)
    """

    def __init__(self, timers: TimerConfig = TimerConfig()) -> None:
        self._timer_j = 64 * timers.t1
        self._sent: dict[tuple[str, str, str], tuple[F, bytes, float]] = {}
        self._ends: deque[tuple[float, tuple[str, str, str]]] = deque()

    def __len__(self) -> int:
        return len(self._sent)

    def get(self, key: tuple[str, str, str]) -> tuple[F, bytes] | None:
        """Where the response to the request with ``key`` went, and the response."""
        found = self._sent.get(key)
        return None if found is None else (found[0], found[1])

    def add(self, key: tuple[str, str, str], where: F, response: bytes, now: float) -> None:
        ends = now + self._timer_j
        self._sent[key] = (where, response, ends)
        self._ends.append((ends, key))

    def next_timer(self) -> float | None:
        return self._ends[0][0] if self._ends else None

    def handle_timer(self, now: float) -> None:
        ends, sent = self._ends, self._sent
        while ends and ends[0][0] <= now:
            when, key = ends.popleft()
            found = sent.get(key)
            if found is not None and found[2] == when:  # not answered again since
                del sent[key]
