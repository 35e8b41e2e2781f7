"""The endpoint's registration state machines as tables, in the manner of h11's ``_state.py``.

Two machines run per flow, side by side:

* ``FLOW_TRANSITIONS``: one registration flow (RFC 3261 §10.2 REGISTER, §10.2.4 refresh,
  §10.3 responses; RFC 3263 §4 target failover; RFC 5626 §4.2 one flow per reg-id, §4.5
  backoff when every flow has failed). With ``Outbound: Off`` an endpoint has one flow; with
  ``Outbound: On`` one per proxy, each with its own reg-id, and the endpoint is registered
  while any of them is.
* ``KEEPALIVE_TRANSITIONS``: RFC 5626 §4.4 keep-alive on a registered flow (CRLF ping/pong on
  a stream, §4.4.1; a request answered on UDP, §4.4.2). A pong that does not come is a
  transport error on the flow, fed to the first machine.

An input a state does not list is a bug in the caller (``LocalProtocolError``), not something
to ignore: the core only feeds inputs the table allows. A reader can check every arrow against
the RFCs without running anything; ``tests/unit/test_states.py`` walks every one.
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

_State = TypeVar("_State", bound=Enum)
_Input = TypeVar("_Input", bound=Enum)


class Status(Enum):
    """RoomOS's words for a registration's state (what the user and the seed's log see)."""

    INACTIVE = "Inactive"
    REGISTERING = "Registering"
    REGISTERED = "Registered"
    FAILED = "Failed"


class FlowState(Enum):
    INACTIVE = "inactive"  # not started, or stopped
    RESOLVING = "resolving"  # RFC 3263 lookup of the proxy in flight
    CONNECTING = "connecting"  # a connection (or UDP flow) to one target being opened
    REGISTERING = "registering"  # initial REGISTER in flight (RFC 3261 §10.2)
    AUTHENTICATING = "authenticating"  # REGISTER with credentials after a 401/407 (§22.2)
    REGISTERED = "registered"  # a binding exists; refresh timer running (§10.2.4)
    REFRESHING = "refreshing"  # refresh REGISTER in flight; the binding still exists
    FAILED = "failed"  # a failure was reported; the failover policy picks what next
    BACKOFF = "backoff"  # every target failed: RFC 5626 §4.5 wait before starting over
    HALTED = "halted"  # 403 or credentials refused: no retry until the settings change
    UNREGISTERING = "unregistering"  # REGISTER Expires: 0 in flight (§10.2.2)


class FlowInput(Enum):
    START = "start"
    RESOLVED = "targets found"
    RESOLVE_FAILED = "no DNS answer / no usable target"
    CONNECTED = "connected"
    CONNECT_FAILED = "connect failed"
    OK = "2xx"
    CHALLENGE = "401/407 with a new challenge"
    AUTH_REJECTED = "401/407 again with the same credentials"
    INTERVAL_TOO_BRIEF = "423 with Min-Expires"
    REDIRECT = "3xx with contacts"
    FORBIDDEN = "403"
    REJECTED = "other 3xx-6xx, 503 included"
    TIMEOUT = "Timer F (408)"
    TRANSPORT_ERROR = "connection lost, ICMP error, keep-alive timeout"
    REFRESH_DUE = "refresh timer"
    NEXT_TARGET = "policy: try the next target"
    REQUERY = "policy: resolve again"
    RELOCATE = "policy: move to a peer no other flow uses"
    EXHAUSTED = "policy: every target tried"
    RETRY_DUE = "backoff timer"
    DEREGISTER = "graceful stop"
    STOP = "stop"


_F, _I = FlowState, FlowInput

# Responses to a REGISTER in flight, shared by the three states that have one. RFC 3261 §10.3 /
# §21: 2xx binds, 3xx redirects to the contacts (§8.1.3.4), 401/407 are answered once with
# credentials (§22.2), 423 is retried with Min-Expires (§10.2.8), 403 is final (§21.4.4: "the
# request SHOULD NOT be repeated"); anything else, and Timer F or a transport error (§8.1.3.1),
# fails the flow over (RFC 3263 §4.3).
_IN_FLIGHT: dict[FlowInput, FlowState] = {
    _I.OK: _F.REGISTERED,
    _I.REDIRECT: _F.CONNECTING,
    _I.FORBIDDEN: _F.HALTED,
    _I.AUTH_REJECTED: _F.HALTED,
    _I.REJECTED: _F.FAILED,
    _I.TIMEOUT: _F.FAILED,
    _I.TRANSPORT_ERROR: _F.FAILED,
}

# Inputs every active state takes: stop ends it all (a settings change stops every flow and
# starts new ones: "restarted locator"); a graceful stop from a state with no binding needs no
# de-REGISTER.
_ANY: dict[FlowInput, FlowState] = {
    _I.STOP: _F.INACTIVE,
    _I.DEREGISTER: _F.INACTIVE,
}

FLOW_TRANSITIONS: dict[FlowState, dict[FlowInput, FlowState]] = {
    _F.INACTIVE: {
        _I.START: _F.RESOLVING,
        _I.STOP: _F.INACTIVE,
        _I.DEREGISTER: _F.INACTIVE,
    },
    _F.RESOLVING: {
        **_ANY,
        _I.RESOLVED: _F.CONNECTING,
        _I.RESOLVE_FAILED: _F.FAILED,
        _I.EXHAUSTED: _F.BACKOFF,  # the new list holds only targets tried since the last success
    },
    _F.CONNECTING: {
        **_ANY,
        _I.CONNECTED: _F.REGISTERING,
        _I.CONNECT_FAILED: _F.FAILED,
    },
    _F.REGISTERING: {
        **_ANY,
        **_IN_FLIGHT,
        _I.CHALLENGE: _F.AUTHENTICATING,
        _I.INTERVAL_TOO_BRIEF: _F.REGISTERING,
    },
    _F.AUTHENTICATING: {
        **_ANY,
        **_IN_FLIGHT,
        _I.CHALLENGE: _F.AUTHENTICATING,  # stale=true (RFC 7616 §3.3): new nonce, same secret
        _I.INTERVAL_TOO_BRIEF: _F.AUTHENTICATING,
    },
    _F.REGISTERED: {
        **_ANY,
        _I.REFRESH_DUE: _F.REFRESHING,
        # Outbound On: a flow that failed over onto a peer another flow uses goes back to a
        # peer of its own at a refresh, once that peer's failure is old (RFC 5626 §4.2: the
        # flows of an instance are its redundancy only while they reach different peers).
        _I.RELOCATE: _F.CONNECTING,
        _I.TRANSPORT_ERROR: _F.FAILED,
        _I.DEREGISTER: _F.UNREGISTERING,
    },
    _F.REFRESHING: {
        **_ANY,
        **_IN_FLIGHT,
        _I.CHALLENGE: _F.REFRESHING,  # the nonce aged out: answer it, still registered
        _I.INTERVAL_TOO_BRIEF: _F.REFRESHING,
        _I.DEREGISTER: _F.UNREGISTERING,
    },
    # Transient: entered and left within one call, as the failover policy decides at once.
    _F.FAILED: {
        _I.NEXT_TARGET: _F.CONNECTING,
        _I.REQUERY: _F.RESOLVING,
        _I.EXHAUSTED: _F.BACKOFF,
    },
    _F.BACKOFF: {
        **_ANY,
        _I.RETRY_DUE: _F.RESOLVING,
    },
    _F.HALTED: {
        **_ANY,
    },
    _F.UNREGISTERING: {
        # Whatever the answer (or none), the endpoint is going away: §10.2.2 is best effort.
        _I.OK: _F.INACTIVE,
        _I.CHALLENGE: _F.UNREGISTERING,
        _I.AUTH_REJECTED: _F.INACTIVE,
        _I.INTERVAL_TOO_BRIEF: _F.INACTIVE,
        _I.REDIRECT: _F.INACTIVE,
        _I.FORBIDDEN: _F.INACTIVE,
        _I.REJECTED: _F.INACTIVE,
        _I.TIMEOUT: _F.INACTIVE,
        _I.TRANSPORT_ERROR: _F.INACTIVE,
        _I.STOP: _F.INACTIVE,
        _I.DEREGISTER: _F.UNREGISTERING,
    },
}

# The RoomOS status a state announces on entry; states not listed keep the last one (the
# seed's log stays "Failed" while the locator resolves and connects again, and a refresh is
# still "Registered").
STATUS_ON_ENTRY: dict[FlowState, Status] = {
    _F.INACTIVE: Status.INACTIVE,
    _F.REGISTERING: Status.REGISTERING,
    _F.REGISTERED: Status.REGISTERED,
    _F.FAILED: Status.FAILED,
    _F.HALTED: Status.FAILED,
}

# States in which the flow holds a binding on its registrar.
BOUND: frozenset[FlowState] = frozenset({_F.REGISTERED, _F.REFRESHING})


class KeepAliveState(Enum):
    OFF = "off"  # no registered flow, or keep-alives disabled
    WAITING = "waiting"  # the next ping is scheduled
    AWAITING_PONG = "awaiting pong"  # ping sent; the pong timeout runs


class KeepAliveInput(Enum):
    FLOW_UP = "flow registered"
    PING_DUE = "ping timer"
    PONG = "pong (CRLF, or any response to the UDP ping)"
    PONG_TIMEOUT = "pong timer"
    FLOW_DOWN = "flow gone"


_K, _KI = KeepAliveState, KeepAliveInput

# RFC 5626 §4.4.1: a ping every interval (80-100 % of it, randomised), and a flow whose pong
# does not arrive within the pong timeout is considered failed.
KEEPALIVE_TRANSITIONS: dict[KeepAliveState, dict[KeepAliveInput, KeepAliveState]] = {
    _K.OFF: {_KI.FLOW_UP: _K.WAITING},
    _K.WAITING: {
        _KI.PING_DUE: _K.AWAITING_PONG,
        _KI.FLOW_UP: _K.WAITING,  # a refresh succeeded: the schedule goes on
        _KI.PONG: _K.WAITING,  # a late or unsolicited pong
        _KI.FLOW_DOWN: _K.OFF,
    },
    _K.AWAITING_PONG: {
        _KI.PONG: _K.WAITING,
        _KI.FLOW_UP: _K.AWAITING_PONG,
        _KI.PONG_TIMEOUT: _K.OFF,
        _KI.FLOW_DOWN: _K.OFF,
    },
}


class LocalProtocolError(RuntimeError):
    """The core fed a machine an input its table does not allow in the current state."""


def step(table: dict[_State, dict[_Input, _State]], state: _State, event: _Input) -> _State:
    """The state ``event`` moves ``state`` to, by the table; an unlisted input is a bug."""
    try:
        return table[state][event]
    except KeyError:
        raise LocalProtocolError(f"{event.name} is not allowed in state {state.name}") from None
