"""The registration state tables, arrow by arrow, on a fake clock.

Each test drives a real ``Registration`` core into a state, feeds it one input (a response
class, a timer, a lost flow, a settings change) and checks the move it made against the table
in ``endpoint.states``. A recorder around ``step`` sees every move, so the last test can check
that every arrow of both tables is one the core really takes.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

import endpoint.registration as registration_module
from emulator.events import EventList
from emulator.sip.message import Request, Response, parse_message, response_to
from emulator.sip.transport import Flow
from endpoint.config import EndpointConfig
from endpoint.locator import Target
from endpoint.registration import PING, Connect, Registration, Resolve, Send
from endpoint.states import (
    FLOW_TRANSITIONS,
    KEEPALIVE_TRANSITIONS,
    FlowInput,
    FlowState,
    KeepAliveInput,
    KeepAliveState,
    LocalProtocolError,
    step,
)

TCP1 = Target(2, "tcp", "127.0.0.11", 5060, True)
TCP2 = Target(2, "tcp", "127.0.0.12", 5060, True)
UDP1 = Target(3, "udp", "127.0.0.11", 5060, True)
LOCAL = "127.0.0.101"
_F, _I = FlowState, FlowInput
Arrow = tuple[object, object, object]


@pytest.fixture
def arrows(monkeypatch: pytest.MonkeyPatch) -> list[Arrow]:
    seen: list[Arrow] = []

    def recording(table, state, event):  # type: ignore[no-untyped-def]
        new = step(table, state, event)
        seen.append((state, event, new))
        return new

    monkeypatch.setattr(registration_module, "step", recording)
    return seen


class Driver:
    """Plays the shell: answers the core's actions by hand, with a fake clock."""

    def __init__(self, **overrides: object) -> None:
        config = EndpointConfig.model_validate(
            {
                "name": "ep",
                "uri": "1001@uctest.local",
                "proxy": "uctest.local",
                "address": LOCAL,
                "dns": ["127.0.0.10:1053"],
                "username": "1001",
                "password": "secret",
                "keepalive_interval": 10,
                "pong_timeout": 10,
                "retry_base": 1,
                "retry_max": 4,
                **overrides,
            }
        )
        self.events = EventList()
        self.reg = Registration(config, self.events, rng=random.Random(3))
        self.now = 0.0
        self.port = 40000
        self.flows: dict[int, Flow] = {}  # reg_id (or 0) -> flow
        self.last: dict[Flow, Request] = {}
        self.pings: list[Flow] = []

    @property
    def state(self) -> FlowState:
        return self.reg._flows[0].state

    def pump(self, targets: list[Target] | None = None, refuse: bool = False) -> None:
        """Carry out every action: resolve to ``targets``, connect (or refuse), keep sends."""
        for _ in range(20):
            actions = self.reg.pop_actions()
            if not actions:
                return
            for action in actions:
                if isinstance(action, Resolve):
                    self.reg.resolved(action.op, list(targets or [TCP1, TCP2]), self.now)
                elif isinstance(action, Connect):
                    if refuse:
                        self.reg.connect_failed(action.op, "Connection refused", self.now)
                        continue
                    self.port += 1
                    t = action.target
                    flow = Flow(t.transport, (LOCAL, self.port), (t.host, t.port))
                    self.reg.connected(action.op, flow, self.now)
                elif isinstance(action, Send):
                    if action.data == PING:
                        self.pings.append(action.flow)
                    else:
                        message = parse_message(action.data)
                        assert isinstance(message, Request)
                        self.last[action.flow] = message

    def start(self, targets: list[Target] | None = None) -> None:
        self.reg.start(self.now)
        self.pump(targets)

    def flow(self, index: int = 0) -> Flow:
        reg = self.reg._flows[index]
        assert reg.flow is not None
        return reg.flow

    def request(self, index: int = 0) -> Request:
        return self.last[self.flow(index)]

    def answer(self, status: int, index: int = 0, **headers: str) -> None:
        request = self.request(index)
        response = response_to(request, status)
        if status == 200:
            contact = request.headers.get("Contact")
            response.headers.add("Contact", f"{contact};expires=60")
        for name, value in headers.items():
            response.headers.add(name.replace("_", "-"), value)
        self.reg.receive(response, self.flow(index), self.now)
        self.pump()

    def at(self, when: float) -> None:
        self.now = when
        self.reg.handle_timer(when)
        self.pump()


CHALLENGE = 'Digest realm="uctest.local", nonce="n1", algorithm=SHA-256, qop="auth"'
STALE = 'Digest realm="uctest.local", nonce="n2", algorithm=MD5, qop="auth", stale=true'


def to_registering(d: Driver) -> None:
    d.start()
    assert d.state is _F.REGISTERING


def to_authenticating(d: Driver) -> None:
    to_registering(d)
    d.answer(401, WWW_Authenticate=CHALLENGE)
    assert d.state is _F.AUTHENTICATING


def to_registered(d: Driver) -> None:
    to_registering(d)
    d.answer(200)
    assert d.state is _F.REGISTERED


def to_refreshing(d: Driver) -> None:
    to_registered(d)
    d.at(54.0)
    assert d.state is _F.REFRESHING


def to_unregistering(d: Driver) -> None:
    to_registered(d)
    d.reg.deregister(d.now)
    d.pump()
    assert d.state is _F.UNREGISTERING


def to_backoff(d: Driver) -> None:
    d.reg.start(d.now)
    d.pump(refuse=True)
    assert d.state is _F.BACKOFF


def to_halted(d: Driver) -> None:
    to_registering(d)
    d.answer(403)
    assert d.state is _F.HALTED


def to_resolving(d: Driver) -> None:
    d.reg.start(d.now)
    assert d.state is _F.RESOLVING


def to_connecting(d: Driver) -> None:
    d.reg.start(d.now)
    (resolve,) = d.reg.pop_actions()
    assert isinstance(resolve, Resolve)
    d.reg.resolved(resolve.op, [TCP1, TCP2], d.now)
    assert d.state is _F.CONNECTING


IN_FLIGHT: dict[FlowState, Callable[[Driver], None]] = {
    _F.REGISTERING: to_registering,
    _F.AUTHENTICATING: to_authenticating,
    _F.REFRESHING: to_refreshing,
    _F.UNREGISTERING: to_unregistering,
}


def feed(d: Driver, event: FlowInput) -> None:
    """Make the core see ``event`` on the REGISTER in flight."""
    if event is _I.OK:
        d.answer(200)
    elif event is _I.REDIRECT:
        d.answer(302, Contact="<sip:127.0.0.12:5070;transport=tcp>")
    elif event is _I.FORBIDDEN:
        d.answer(403)
    elif event is _I.CHALLENGE:
        d.answer(401, WWW_Authenticate=STALE if d.reg._flows[0].answered else CHALLENGE)
    elif event is _I.AUTH_REJECTED:
        if not d.reg._flows[0].answered:
            # A first challenge is answered when there are credentials: take them away.
            d.reg.config = d.reg.config.model_copy(update={"username": None})
        d.answer(401, WWW_Authenticate=CHALLENGE)
    elif event is _I.INTERVAL_TOO_BRIEF:
        d.answer(423, Min_Expires="7200")
    elif event is _I.REJECTED:
        d.answer(503, Warning='382 127.0.0.11 "System in Maintenance Mode"')
    elif event is _I.TIMEOUT:
        d.at(d.now + 32.0)
    elif event is _I.TRANSPORT_ERROR:
        d.reg.flow_closed(d.flow(), "Connection reset by peer", d.now)
        d.pump()
    else:
        raise AssertionError(event)


RESPONSE_CLASSES = [
    _I.OK,
    _I.REDIRECT,
    _I.FORBIDDEN,
    _I.CHALLENGE,
    _I.AUTH_REJECTED,
    _I.INTERVAL_TOO_BRIEF,
    _I.REJECTED,
    _I.TIMEOUT,
    _I.TRANSPORT_ERROR,
]


@pytest.mark.parametrize("state", list(IN_FLIGHT), ids=lambda s: s.name)
@pytest.mark.parametrize("event", RESPONSE_CLASSES, ids=lambda e: e.name)
def test_every_response_class_in_every_state_with_a_register_in_flight(
    state: FlowState, event: FlowInput, arrows: list[Arrow]
) -> None:
    d = Driver()
    IN_FLIGHT[state](d)
    arrows.clear()
    feed(d, event)
    moves = [(s, e) for s, e, _ in arrows if isinstance(s, FlowState)]
    assert (state, event) in moves, moves
    first = next(a for a in arrows if a[:2] == (state, event))
    assert first[2] is FLOW_TRANSITIONS[state][event]


@pytest.mark.parametrize(
    "drive",
    [
        to_resolving,
        to_connecting,
        to_registering,
        to_authenticating,
        to_registered,
        to_refreshing,
        to_unregistering,
        to_backoff,
        to_halted,
    ],
)
def test_stop_and_graceful_stop_from_every_state(
    drive: Callable[[Driver], None], arrows: list[Arrow]
) -> None:
    for graceful in (False, True):
        d = Driver()
        d.reg.start(0.0) if drive is to_resolving else None
        if drive is not to_resolving:
            drive(d)
        before = d.state
        arrows.clear()
        if graceful:
            d.reg.deregister(d.now)
            event = _I.DEREGISTER
        else:
            d.reg.reconfigure(d.reg.config, d.now)  # a settings change stops every flow
            event = _I.STOP
        flow_arrows = [a for a in arrows if isinstance(a[0], FlowState)]
        assert flow_arrows[0] == (before, event, FLOW_TRANSITIONS[before][event])


def test_refresh_then_keepalive_timeout_is_a_transport_error(arrows: list[Arrow]) -> None:
    d = Driver()
    to_registered(d)
    ping_at = d.reg.next_timer()
    assert ping_at is not None
    assert 8.0 <= ping_at <= 10.0  # 80-100 % of the interval
    d.at(ping_at)
    assert d.pings == [d.flow()]
    assert d.reg._flows[0].ka is KeepAliveState.AWAITING_PONG
    d.reg.pong_received(d.flow(), d.now + 0.01)
    assert d.reg._flows[0].ka is KeepAliveState.WAITING
    next_ping = d.reg.next_timer()
    assert next_ping is not None
    d.at(next_ping)
    assert len(d.pings) == 2
    d.at(next_ping + 9.99)
    assert d.state is _F.REGISTERED  # the pong timeout has not run out yet
    d.at(next_ping + 10.0)
    failed = d.events.of("registration.state")[-2]
    assert failed["state"] == "Failed"
    assert failed["reason"] == "Keep-alive timed out: no pong from 127.0.0.11:5060 within 10 s"
    assert (KeepAliveState.AWAITING_PONG, KeepAliveInput.PONG_TIMEOUT, KeepAliveState.OFF) in (
        arrows
    )
    assert (_F.REGISTERED, _I.TRANSPORT_ERROR, _F.FAILED) in arrows
    assert d.state is _F.REGISTERING  # on the next target at once
    assert d.reg._flows[0].target == TCP2


def test_keepalive_off_sends_no_ping_and_waits_for_the_refresh() -> None:
    d = Driver(keepalive=False)
    to_registered(d)
    assert d.reg.next_timer() == pytest.approx(54.0)
    d.at(54.0)
    assert d.pings == []
    assert d.state is _F.REFRESHING


def test_udp_keepalive_is_an_options_request_and_any_answer_is_a_pong() -> None:
    d = Driver(transport="udp")
    d.start([UDP1])
    d.answer(200)
    ping_at = d.reg.next_timer()
    assert ping_at is not None
    d.at(ping_at)
    options = d.request()
    assert options.method == "OPTIONS"
    d.reg.receive(response_to(options, 200), d.flow(), d.now)
    assert d.reg._flows[0].ka is KeepAliveState.WAITING


def test_icmp_error_on_a_udp_flow_fails_over_at_once() -> None:
    udp2 = Target(3, "udp", "127.0.0.12", 5060, True)
    d = Driver(transport="udp")
    d.start([UDP1, udp2])
    d.reg.flow_closed(d.flow(), "ICMP port unreachable", 0.1)
    d.pump()
    states = [(e["state"], e["reason"]) for e in d.events.of("registration.state")]
    assert states[-2:] == [("Failed", "ICMP port unreachable"), ("Registering", "")]
    assert d.reg._flows[0].target == udp2


def test_outbound_registers_two_flows_to_two_peers_and_survives_one() -> None:
    d = Driver(outbound=True)
    d.start()
    assert [r.target for r in d.reg._flows] == [TCP1, TCP2]
    for index in (0, 1):
        request = d.request(index)
        contact = request.headers.get("Contact") or ""
        assert f"reg-id={index + 1}" in contact
        assert '+sip.instance="<urn:uuid:' in contact
        assert request.headers.get("Supported") == "path, outbound"
        d.answer(200, index)
    assert d.request(0).headers.get("Call-ID") != d.request(1).headers.get("Call-ID")
    assert d.reg.snapshot()["state"] == "Registered"
    d.reg.flow_closed(d.flow(0), "reset", 1.0)
    d.pump()
    overall = [e["state"] for e in d.events.of("registration.state")]
    assert overall == ["Registering", "Registered"]  # no gap: still registered via flow 2
    flow_states = [(e["reg_id"], e["state"]) for e in d.events.of("registration.flow")]
    assert (1, "Failed") in flow_states


def test_an_outbound_flow_that_failed_over_onto_the_other_flows_peer_goes_back_later(
    arrows: list[Arrow],
) -> None:
    d = Driver(outbound=True, failed_memory=60, keepalive=False)  # no pings to answer
    d.start()
    d.answer(200, 0)
    d.answer(200, 1)
    d.reg.flow_closed(d.flow(0), "reset", 1.0)  # the peer of flow 1 dies...
    d.pump()
    assert d.reg._flows[0].target == TCP2  # ...so it joins flow 2's peer, the only one left
    d.answer(200, 0)
    # A refresh within failed_memory of the failure stays put: the dead peer is not retried.
    d.at(1.0 + 54.0)
    assert d.state is _F.REFRESHING
    assert d.reg._flows[0].target == TCP2
    d.answer(200, 0)
    d.answer(200, 1)  # flow 2's own refresh, due at 54
    # The next one is past it: the flow moves back to a peer of its own.
    d.at(55.0 + 54.0)
    assert d.reg._flows[0].target == TCP1
    assert d.state is _F.REGISTERING
    d.answer(200, 0)
    d.answer(200, 1)
    assert [r.target for r in d.reg._flows] == [TCP1, TCP2]
    assert [r.state for r in d.reg._flows] == [_F.REGISTERED, _F.REGISTERED]
    overall = [e["state"] for e in d.events.of("registration.state")]
    assert overall == ["Registering", "Registered"]  # registered all along
    assert (_F.REGISTERED, _I.RELOCATE, _F.CONNECTING) in arrows


def test_static_proxies_with_outbound_off_use_proxy1_only_and_warn() -> None:
    d = Driver(proxy="127.0.0.11", proxy2="127.0.0.12")
    d.start([Target(0, "tcp", "127.0.0.11", 5060, False)])
    (warning,) = d.events.of("endpoint.warning")
    assert "Proxy[1]" in warning["text"]
    assert len(d.reg._flows) == 1
    resolves = [e["uri"] for e in d.events.of("locator.restart")]
    assert resolves == ["127.0.0.11"]


def test_digest_challenge_is_answered_once_with_sha256() -> None:
    d = Driver()
    to_registering(d)
    d.answer(401, WWW_Authenticate='Digest realm="r", nonce="m", algorithm=MD5, qop="auth"')
    # RFC 7616: of several challenges the strongest supported is answered.
    d.answer(401, WWW_Authenticate=CHALLENGE)
    assert d.state is _F.HALTED  # a second non-stale challenge: the credentials are wrong
    assert d.reg.reason == "401 Unauthorized (credentials rejected)"
    d2 = Driver()
    to_registering(d2)
    first = d2.request()
    d2.answer(401, WWW_Authenticate=CHALLENGE)
    retry = d2.request()
    auth = retry.headers.get("Authorization") or ""
    assert auth.startswith('Digest username="1001", realm="uctest.local", nonce="n1"')
    assert "algorithm=SHA-256" in auth
    assert "nc=00000001" in auth
    assert retry.headers.get("CSeq") != first.headers.get("CSeq")


def test_403_stops_without_a_retry_storm() -> None:
    d = Driver()
    to_halted(d)
    assert d.reg.next_timer() is None
    assert d.reg.pop_actions() == []
    assert d.reg.reason == "403 Forbidden"


def test_3xx_follows_the_contacts() -> None:
    d = Driver()
    to_registering(d)
    d.answer(
        302,
        Contact="<sip:127.0.0.13:5070;transport=tcp>;q=0.5, <sip:127.0.0.14;transport=tcp>;q=0.9,"
        " <sip:127.0.0.15>;q=1.0",
    )
    # The higher q first; a UDP contact (no transport=) is not usable with DefaultTransport TCP.
    assert d.reg._flows[0].target == Target(0, "tcp", "127.0.0.14", 5060, False)
    assert [t.port for t in d.reg._flows[0].targets] == [5060, 5070]


def test_423_retries_with_min_expires_in_every_in_flight_state() -> None:
    d = Driver()
    to_refreshing(d)
    d.answer(423, Min_Expires="7200")
    assert d.request().headers.get("Expires") == "7200"
    assert d.state is _F.REFRESHING


def test_graceful_stop_sends_expires_zero_and_ends_inactive() -> None:
    d = Driver()
    to_unregistering(d)
    request = d.request()
    assert request.headers.get("Expires") == "0"
    assert not d.reg.deregistered
    d.answer(200)
    assert d.reg.deregistered


def test_unlisted_inputs_are_errors() -> None:
    with pytest.raises(LocalProtocolError):
        step(FLOW_TRANSITIONS, _F.INACTIVE, _I.OK)
    with pytest.raises(LocalProtocolError):
        step(KEEPALIVE_TRANSITIONS, KeepAliveState.OFF, KeepAliveInput.PONG_TIMEOUT)


def test_tables_are_closed_and_every_state_is_reachable() -> None:
    for table in (FLOW_TRANSITIONS, KEEPALIVE_TRANSITIONS):
        states = set(table)
        assert {new for moves in table.values() for new in moves.values()} <= states
        reached, frontier = set(), [next(iter(table))]
        while frontier:
            state = frontier.pop()
            if state not in reached:
                reached.add(state)
                frontier.extend(table[state].values())
        assert reached == states
    used = {event for moves in FLOW_TRANSITIONS.values() for event in moves}
    assert used == set(FlowInput)


def _response(request: Request, status: int) -> Response:
    return response_to(request, status)


def test_every_arrow_of_both_tables_is_one_the_core_takes(
    arrows: list[Arrow], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run the scenarios above together and check that no arrow of the tables is dead."""
    for drive in IN_FLIGHT.values():
        for event in RESPONSE_CLASSES:
            d = Driver()
            drive(d)
            feed(d, event)
    for drive in (to_connecting, to_registering, to_authenticating, to_registered):
        for graceful in (False, True):
            d = Driver()
            drive(d)
            d.reg.deregister(d.now) if graceful else d.reg.reconfigure(d.reg.config, d.now)
    for drive in (to_backoff, to_halted, to_refreshing, to_unregistering):
        for graceful in (False, True):
            d = Driver()
            drive(d)
            d.reg.deregister(d.now) if graceful else d.reg.reconfigure(d.reg.config, d.now)
    for graceful in (False, True):
        d = Driver()
        to_resolving(d)
        d.reg.deregister(d.now) if graceful else d.reg.reconfigure(d.reg.config, d.now)
        d = Driver()
        d.reg.deregister(d.now) if graceful else d.reg.reconfigure(d.reg.config, d.now)
    d = Driver()
    to_backoff(d)
    d.at(d.reg.next_timer() or 0.0)  # RETRY_DUE
    d = Driver()
    d.reg.start(0.0)
    (resolve,) = d.reg.pop_actions()
    assert isinstance(resolve, Resolve)
    d.reg.resolve_failed(resolve.op, "DNS down", 0.0)
    d = Driver(transport="udp")
    d.start([TCP1])  # no usable UDP target
    d = Driver(proxy="cluster.uctest.local")
    a1, a2 = (Target(4, "tcp", h, 5060, False) for h in ("127.0.0.11", "127.0.0.12"))
    d.start([a1, a2])
    d.reg.flow_closed(d.flow(), "reset", 1.0)  # REQUERY
    d.pump([a1, a2])
    d = Driver()
    to_unregistering(d)
    d.reg.deregister(d.now)  # a second graceful stop while the first is in flight
    test_refresh_then_keepalive_timeout_is_a_transport_error(arrows)
    test_an_outbound_flow_that_failed_over_onto_the_other_flows_peer_goes_back_later(arrows)
    d = Driver()
    to_registered(d)
    d.reg.pong_received(d.flow(), 1.0)  # unsolicited pong while waiting
    d = Driver(pong_timeout=50)
    to_registered(d)
    d.at(d.reg.next_timer() or 0.0)  # ping, and no pong...
    d.at(54.0)
    d.answer(200)  # ...while a refresh succeeds
    d = Driver(keepalive_interval=100)
    to_refreshing(d)
    d.answer(200)  # a refresh succeeds before the first ping
    taken = {(s, e) for s, e, _ in arrows}
    for table in (FLOW_TRANSITIONS, KEEPALIVE_TRANSITIONS):
        listed = {(s, e) for s, moves in table.items() for e in moves}
        assert sorted(map(str, listed - taken)) == []
