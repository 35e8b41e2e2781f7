"""The endpoint's registration state machine, sans-I/O, on a fake clock.

The shell's jobs (DNS, sockets) are played by the test: it answers the core's actions by hand.
Timer F at 32 s and 30 s backoffs are checked in microseconds.
"""

from __future__ import annotations

import random

import pytest

from emulator.events import EventList
from emulator.sip.message import Request, Response, parse_message, response_to
from emulator.sip.transport import Flow
from endpoint.config import EndpointConfig
from endpoint.locator import Target
from endpoint.registration import Close, Connect, Registration, Resolve, Send, Status

TLS1 = Target(1, "tls", "127.0.0.11", 5061, True)
TLS2 = Target(1, "tls", "127.0.0.12", 5061, True)
TCP1 = Target(2, "tcp", "127.0.0.11", 5060, True)
TCP2 = Target(2, "tcp", "127.0.0.12", 5060, True)
A1 = Target(4, "tcp", "127.0.0.11", 5060, False)
A2 = Target(4, "tcp", "127.0.0.12", 5060, False)
LOCAL = "127.0.0.101"
AOR = "1001@uctest.local"


def make(**overrides: object) -> tuple[Registration, EventList]:
    config = EndpointConfig.model_validate(
        {
            "name": "ep",
            "uri": "1001@uctest.local",
            "proxy": "uctest.local",
            "address": LOCAL,
            "dns": ["127.0.0.10:1053"],
            "keepalive": False,  # the seed's endpoint; keep-alives have their own tests
            **overrides,
        }
    )
    events = EventList()
    return Registration(config, events, rng=random.Random(7)), events


def flow_to(target: Target, port: int = 40000) -> Flow:
    return Flow(target.transport, (LOCAL, port), (target.host, target.port))


def only(actions: list[object], kind: type) -> object:
    matching = [a for a in actions if isinstance(a, kind)]
    assert len(matching) == 1, actions
    return matching[0]


def sent_request(actions: list[object]) -> Request:
    send = only(actions, Send)
    assert isinstance(send, Send)
    request = parse_message(send.data)
    assert isinstance(request, Request)
    return request


def ok(request: Request, expires: int = 60) -> Response:
    response = response_to(request, 200)
    contact = request.headers.get("Contact")
    response.headers.add("Contact", f"{contact};expires={expires}")
    return response


def register_to(
    reg: Registration, targets: list[Target], now: float = 0.0, port: int = 40000
) -> tuple[Flow, Request]:
    """Drive start -> resolve -> connect -> REGISTER sent; returns the flow and the request."""
    reg.start(now)
    resolve = only(reg.pop_actions(), Resolve)
    assert isinstance(resolve, Resolve)
    reg.resolved(resolve.op, targets, now)
    connect = only(reg.pop_actions(), Connect)
    assert isinstance(connect, Connect)
    flow = flow_to(connect.target, port)
    reg.connected(connect.op, flow, now)
    return flow, sent_request(reg.pop_actions())


def states(events: EventList) -> list[tuple[str, str]]:
    return [(e["state"], e["reason"]) for e in events.of("registration.state")]


def test_skips_tls_targets_and_registers_over_tcp() -> None:
    reg, events = make()
    flow, request = register_to(reg, [TLS1, TLS2, TCP1, TCP2])
    located = [(e["strategy"], e["label"], e["target"]) for e in events.of("dns.located")]
    assert located == [
        (1, "tls", "127.0.0.11:5061"),
        (1, "tls", "127.0.0.12:5061"),
        (2, "tcp", "127.0.0.11:5060"),
    ]
    assert request.method == "REGISTER"
    assert request.uri == "sip:uctest.local"
    assert str(request.headers.get("Via")).startswith(
        "SIP/2.0/TCP 127.0.0.101:40000;branch=z9hG4bK"
    )
    assert request.headers.get("Contact") == "<sip:1001@127.0.0.101:40000;transport=tcp>"
    assert request.headers.get("Expires") == "3600"
    reg.receive(ok(request), flow, 0.1)
    assert reg.status is Status.REGISTERED
    assert states(events) == [("Registering", ""), ("Registered", "")]
    registered = events.of("registration.state")[-1]
    assert registered["registrar"] == "127.0.0.11:5060"
    assert registered["reset_locator"] is False
    # Refresh at 90 % of the granted 60 s, on the same flow, with the next CSeq.
    assert reg.next_timer() == pytest.approx(54.1)
    reg.handle_timer(54.1)
    refresh = sent_request(reg.pop_actions())
    assert refresh.headers.get("CSeq") == "2 REGISTER"
    assert refresh.headers.get("Call-ID") == request.headers.get("Call-ID")


def test_503_in_maintenance_moves_to_the_next_srv_target() -> None:
    reg, events = make()
    flow, request = register_to(reg, [TLS1, TLS2, TCP1, TCP2])
    reg.receive(ok(request), flow, 0.1)
    reg.handle_timer(54.1)
    refresh = sent_request(reg.pop_actions())
    busy = response_to(refresh, 503)
    busy.headers.add("Warning", '382 127.0.0.11 "System in Maintenance Mode"')
    reg.receive(busy, flow, 54.2)
    assert events.of("sip.warning") == [
        {"aor": AOR, "header": 'Warning: 382 127.0.0.11 "System in Maintenance Mode"'}
    ]
    assert states(events)[-1] == ("Failed", "503 Service Unavailable / System in Maintenance Mode")
    actions = reg.pop_actions()
    assert Close(flow) in actions
    connect = only(actions, Connect)
    assert isinstance(connect, Connect)
    assert connect.target == TCP2  # next in the list, no new DNS lookup
    # only the first one
    assert events.of("locator.restart") == [{"aor": AOR, "uri": "uctest.local"}]
    flow2 = flow_to(TCP2, 40001)
    reg.connected(connect.op, flow2, 54.2)
    reg.receive(ok(sent_request(reg.pop_actions())), flow2, 54.3)
    assert reg.snapshot()["registrar"] == "127.0.0.12:5060"
    assert events.of("registration.state")[-1]["reset_locator"] is True


def test_connection_lost_on_a_round_robin_name_resolves_again() -> None:
    reg, events = make(proxy="habibexpc-cluster.uctest.local")
    flow, request = register_to(reg, [A1, A2])
    reg.receive(ok(request), flow, 0.1)
    reg.flow_closed(flow, "Connection reset by peer", 10.0)
    assert events.of("transport.lost")[0]["host"] == "127.0.0.11"
    assert states(events)[-1] == ("Failed", "Connection lost")
    resolve = only(reg.pop_actions(), Resolve)
    assert isinstance(resolve, Resolve)
    # DNS rotated: the other peer first. The failed one would be passed over anyway.
    reg.resolved(resolve.op, [A2, A1], 10.0)
    connect = only(reg.pop_actions(), Connect)
    assert isinstance(connect, Connect)
    assert connect.target == A2
    located = events.of("dns.located")[-1]
    assert (located["strategy"], located["label"], located["target"]) == (4, "unspec", "127.0.0.12")


def test_recently_failed_target_is_passed_over_when_dns_does_not_rotate() -> None:
    reg, _ = make(proxy="habibexpc-cluster.uctest.local")
    flow, request = register_to(reg, [A1, A2])
    reg.receive(ok(request), flow, 0.1)
    reg.flow_closed(flow, "reset", 10.0)
    resolve = only(reg.pop_actions(), Resolve)
    assert isinstance(resolve, Resolve)
    reg.resolved(resolve.op, [A1, A2], 10.0)
    connect = only(reg.pop_actions(), Connect)
    assert isinstance(connect, Connect)
    assert connect.target == A2


def test_a_failed_peer_that_recovered_is_tried_before_backing_off() -> None:
    reg, events = make()
    flow1, _ = register_to(reg, [TCP1, TCP2])
    reg.flow_closed(flow1, "reset", 1.0)  # peer 1 dies: on to peer 2
    connect = only(reg.pop_actions(), Connect)
    assert isinstance(connect, Connect)
    assert connect.target == TCP2
    flow2 = flow_to(TCP2, 40001)
    reg.connected(connect.op, flow2, 1.0)
    reg.receive(ok(sent_request(reg.pop_actions())), flow2, 1.1)
    assert reg.status is Status.REGISTERED
    # 10 s later peer 2 dies too; peer 1 failed only 11 s ago but is back: try it, no backoff.
    reg.flow_closed(flow2, "reset", 11.0)
    resolve = only(reg.pop_actions(), Resolve)
    assert isinstance(resolve, Resolve)
    reg.resolved(resolve.op, [TCP2, TCP1], 11.0)
    connect = only(reg.pop_actions(), Connect)
    assert isinstance(connect, Connect)
    assert connect.target == TCP1
    assert events.of("registration.backoff") == []


def test_timer_f_fails_a_silent_peer_after_64_t1() -> None:
    reg, events = make()
    flow, _ = register_to(reg, [TCP1, TCP2])
    assert reg.next_timer() == pytest.approx(32.0)
    reg.handle_timer(31.9)
    assert reg.status is Status.REGISTERING
    reg.handle_timer(32.0)
    assert states(events)[-1] == ("Failed", "408 Request Timeout")
    actions = reg.pop_actions()
    assert Close(flow) in actions
    connect = only(actions, Connect)
    assert isinstance(connect, Connect)
    assert connect.target == TCP2


def test_udp_register_is_retransmitted_per_timer_e() -> None:
    reg, _ = make(transport="udp", t1=0.5)
    udp = Target(3, "udp", "127.0.0.11", 5060, True)
    register_to(reg, [udp])
    times = []
    now = 0.0
    for _ in range(4):
        now = reg.next_timer() or 0.0
        reg.handle_timer(now)
        sent_request(reg.pop_actions())
        times.append(now)
    assert times == pytest.approx([0.5, 1.5, 3.5, 7.5])


def test_every_target_failing_backs_off_then_starts_over() -> None:
    reg, events = make(retry_base=30, retry_max=1800)
    reg.start(0.0)
    resolve = only(reg.pop_actions(), Resolve)
    assert isinstance(resolve, Resolve)
    reg.resolved(resolve.op, [TCP1, TCP2], 0.0)
    for _ in range(2):
        connect = only(reg.pop_actions(), Connect)
        assert isinstance(connect, Connect)
        reg.connect_failed(connect.op, "Connection refused", 0.0)
    # List exhausted: resolve again; both targets failed just now, so back off.
    resolve = only(reg.pop_actions(), Resolve)
    assert isinstance(resolve, Resolve)
    reg.resolved(resolve.op, [TCP1, TCP2], 0.0)
    (backoff,) = events.of("registration.backoff")
    assert 15 <= backoff["wait"] <= 30
    assert reg.pop_actions() == []
    wake = reg.next_timer()
    assert wake == pytest.approx(backoff["wait"], abs=0.001)
    reg.handle_timer(wake)
    assert isinstance(only(reg.pop_actions(), Resolve), Resolve)
    assert states(events)[-1] == ("Failed", "Connection refused")


def test_dns_failure_backs_off() -> None:
    reg, events = make(retry_base=2, retry_max=8)
    reg.start(0.0)
    resolve = only(reg.pop_actions(), Resolve)
    assert isinstance(resolve, Resolve)
    reg.resolve_failed(resolve.op, "DNS server 127.0.0.10:1053 did not answer", 0.0)
    assert states(events) == [("Failed", "DNS server 127.0.0.10:1053 did not answer")]
    assert 1 <= events.of("registration.backoff")[0]["wait"] <= 2


def test_423_retries_with_min_expires() -> None:
    reg, _ = make(expires=30)
    flow, request = register_to(reg, [TCP1])
    brief = response_to(request, 423)
    brief.headers.add("Min-Expires", "45")
    reg.receive(brief, flow, 0.1)
    retry = sent_request(reg.pop_actions())
    assert retry.headers.get("Expires") == "45"
    assert reg.status is Status.REGISTERING


def test_late_answers_to_abandoned_requests_are_ignored() -> None:
    reg, _ = make()
    reg.start(0.0)
    first = only(reg.pop_actions(), Resolve)
    assert isinstance(first, Resolve)
    reg.resolved(first.op, [TCP1], 0.0)
    connect = only(reg.pop_actions(), Connect)
    assert isinstance(connect, Connect)
    reg.connect_failed(connect.op, "refused", 0.0)
    reg.pop_actions()
    reg.resolved(first.op, [TCP2], 0.1)  # stale: the op number moved on
    reg.connected(connect.op, flow_to(TCP1), 0.1)
    assert reg.pop_actions() == [Close(flow_to(TCP1))]


def test_responses_from_another_flow_or_transaction_are_ignored() -> None:
    reg, _ = make()
    flow, request = register_to(reg, [TCP1])
    reg.receive(ok(request), flow_to(TCP2), 0.1)
    assert reg.status is Status.REGISTERING
    other = ok(request)
    other.headers.set("Via", "SIP/2.0/TCP 127.0.0.101:40000;branch=z9hG4bKother")
    reg.receive(other, flow, 0.1)
    assert reg.status is Status.REGISTERING
