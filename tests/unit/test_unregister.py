"""Graceful stop in the registration core: REGISTER with Expires: 0, then Inactive, never a
failover, whatever the answer."""

from __future__ import annotations

from emulator.sip.message import response_to
from endpoint.registration import Close, Connect, Resolve, Status
from tests.unit.test_registration import TCP1, TCP2, make, ok, register_to, sent_request, states


def test_unregister_sends_expires_zero_and_ends_inactive() -> None:
    reg, events = make()
    flow, request = register_to(reg, [TCP1, TCP2])
    reg.receive(ok(request), flow, 0.1)
    assert reg.unregister(1.0) is True
    bye = sent_request(reg.pop_actions())
    assert bye.headers.get("Expires") == "0"
    assert bye.headers.get("Call-ID") == request.headers.get("Call-ID")
    assert bye.headers.get("CSeq") == "2 REGISTER"
    reg.receive(ok(bye, expires=0), flow, 1.1)
    assert reg.status is Status.INACTIVE
    assert not reg.unregistering
    assert reg.next_timer() is None
    assert states(events)[-1] == ("Inactive", "Unregistered (200 OK)")
    assert [type(a) for a in reg.pop_actions()] == [Close]


def test_an_error_or_lost_flow_while_unregistering_is_no_failover() -> None:
    for outcome in ("503", "lost"):
        reg, events = make()
        flow, request = register_to(reg, [TCP1, TCP2])
        reg.receive(ok(request), flow, 0.1)
        reg.unregister(1.0)
        bye = sent_request(reg.pop_actions())
        if outcome == "503":
            reg.receive(response_to(bye, 503), flow, 1.1)
        else:
            reg.flow_closed(flow, "closed by peer", 1.1)
        assert reg.status is Status.INACTIVE
        assert not any(isinstance(a, Connect | Resolve) for a in reg.pop_actions())
        assert reg.next_timer() is None
        assert "Failed" not in [state for state, _ in states(events)]


def test_unregister_before_registering_just_stops() -> None:
    reg, _ = make()
    reg.start(0.0)
    reg.pop_actions()
    assert reg.unregister(0.5) is False
    assert reg.next_timer() is None
