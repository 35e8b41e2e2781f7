"""Non-INVITE transactions (RFC 3261 §17.1.2, §17.2.2) driven by a fake clock."""

from __future__ import annotations

import pytest

from emulator.sip.message import Headers, Request, Response, response_to, serialize_message
from emulator.sip.transaction import (
    CLIENT_TRANSITIONS,
    AnsweredRequests,
    ClientTransaction,
    ResponseReceived,
    TimerConfig,
    TransactionEvent,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
    TxState,
    client_key,
    server_key,
)

BRANCH = "z9hG4bK74bf9"


def register(branch: str | None = BRANCH, method: str = "REGISTER") -> Request:
    via = "SIP/2.0/UDP 127.0.0.101:5060;rport" + (f";branch={branch}" if branch else "")
    return Request(
        method,
        "sip:uctest.local",
        Headers(
            [
                ("Via", via),
                ("From", "<sip:1001@uctest.local>;tag=a"),
                ("To", "<sip:1001@uctest.local>"),
                ("Call-ID", "c@127.0.0.101"),
                ("CSeq", f"1 {method}"),
            ]
        ),
    )


def events(tx: ClientTransaction) -> list[TransactionEvent]:
    out = []
    while (event := tx.next_event()) is not None:
        out.append(event)
    return out


def run_until(tx: ClientTransaction, end: float) -> list[float]:
    """Fire timers up to `end`; the times at which a retransmission was queued."""
    sent = []
    while (when := tx.next_timer()) is not None and when <= end:
        tx.handle_timer(when)
        sent += [when] * len(tx.pop_outgoing())
    return sent


# --- tables --------------------------------------------------------------------------------


def test_the_table_covers_every_state_and_only_moves_forward() -> None:
    table = CLIENT_TRANSITIONS
    order = list(TxState)  # Trying, Proceeding, Completed, Terminated (Figure 7)
    assert set(table) == set(order)
    assert table[TxState.TERMINATED] == {}
    for state, moves in table.items():
        assert all(order.index(target) >= order.index(state) for target in moves.values())


# --- client --------------------------------------------------------------------------------


def test_client_sends_request_and_has_key() -> None:
    tx = ClientTransaction(register(), reliable=True, now=0.0)
    assert tx.key == (BRANCH, "REGISTER")
    assert tx.state is TxState.TRYING
    assert tx.pop_outgoing() == [serialize_message(register())]
    assert tx.pop_outgoing() == []


@pytest.mark.parametrize("request_", [register(branch=None), register(method="INVITE")])
def test_client_refuses_unusable_requests(request_: Request) -> None:
    with pytest.raises(ValueError, match=r"branch|non-INVITE"):
        ClientTransaction(request_, reliable=True, now=0.0)


def test_unreliable_timer_e_schedule_and_timer_f() -> None:
    tx = ClientTransaction(register(), reliable=False, now=100.0)
    tx.pop_outgoing()
    sent = run_until(tx, 200.0)
    # Intervals 0.5, 1, 2, 4, 4, ...: retransmissions at +0.5, 1.5, 3.5, 7.5, 11.5, ... < 32.
    expected = [0.5, 1.5, 3.5, 7.5, *(7.5 + 4 * k for k in range(1, 7))]
    assert [round(t - 100.0, 6) for t in sent] == expected
    assert tx.state is TxState.TERMINATED
    assert events(tx) == [TransactionTimedOut(), TransactionTerminated()]
    assert tx.next_timer() is None


def test_reliable_has_no_retransmissions_and_times_out_at_32s() -> None:
    tx = ClientTransaction(register(), reliable=True, now=0.0)
    tx.pop_outgoing()
    assert tx.next_timer() == 32.0
    tx.handle_timer(31.9)
    assert tx.state is TxState.TRYING
    assert events(tx) == []
    tx.handle_timer(32.0)
    assert tx.pop_outgoing() == []
    assert tx.state is TxState.TERMINATED
    assert events(tx) == [TransactionTimedOut(), TransactionTerminated()]


def test_custom_timers() -> None:
    tx = ClientTransaction(register(), reliable=False, now=0.0, timers=TimerConfig(t1=0.1, t2=0.3))
    tx.pop_outgoing()
    # Intervals 0.1, 0.2, then capped at T2 = 0.3 until Timer F at 64 * T1 = 6.4.
    expected = [0.1, 0.3, *(0.3 + 0.3 * k for k in range(1, 21))]
    assert run_until(tx, 100.0) == pytest.approx(expected)
    assert tx.state is TxState.TERMINATED


def test_final_response_stops_retransmissions_and_timer_k() -> None:
    tx = ClientTransaction(register(), reliable=False, now=0.0)
    tx.pop_outgoing()
    run_until(tx, 1.0)
    ok = response_to(register(), 200)
    tx.receive_response(ok, now=1.2)
    assert tx.state is TxState.COMPLETED
    assert events(tx) == [ResponseReceived(ok)]
    assert tx.next_timer() == pytest.approx(1.2 + 5.0)  # Timer K = T4
    tx.receive_response(ok, now=2.0)  # retransmitted final: absorbed
    assert events(tx) == []
    tx.handle_timer(6.2)
    assert tx.pop_outgoing() == []
    assert tx.state is TxState.TERMINATED
    assert events(tx) == [TransactionTerminated()]
    tx.receive_response(ok, now=7.0)  # after Terminated: ignored
    assert events(tx) == []


def test_reliable_final_response_terminates_at_once() -> None:
    tx = ClientTransaction(register(), reliable=True, now=0.0)
    unavailable = response_to(register(), 503)
    tx.receive_response(unavailable, now=0.3)
    assert tx.state is TxState.TERMINATED
    assert events(tx) == [ResponseReceived(unavailable), TransactionTerminated()]
    assert tx.next_timer() is None


def test_provisional_moves_to_proceeding_and_retransmits_every_t2() -> None:
    tx = ClientTransaction(register(), reliable=False, now=0.0)
    tx.pop_outgoing()
    assert run_until(tx, 0.6) == [0.5]
    trying = response_to(register(), 100)
    tx.receive_response(trying, now=0.7)
    assert tx.state is TxState.PROCEEDING
    tx.receive_response(trying, now=0.8)
    assert events(tx) == [ResponseReceived(trying), ResponseReceived(trying)]
    assert run_until(tx, 14.0) == [1.5, 5.5, 9.5, 13.5]
    ok = response_to(register(), 200)
    tx.receive_response(ok, now=14.0)
    assert tx.state is TxState.COMPLETED
    assert events(tx) == [ResponseReceived(ok)]
    tx.receive_response(trying, now=14.1)  # late provisional: absorbed
    assert events(tx) == []


def test_timer_f_still_fires_in_proceeding() -> None:
    tx = ClientTransaction(register(), reliable=True, now=0.0)
    tx.receive_response(response_to(register(), 180), now=1.0)
    tx.handle_timer(32.0)
    assert [type(e) for e in events(tx)] == [
        ResponseReceived, TransactionTimedOut, TransactionTerminated,
    ]  # fmt: skip


def test_responses_for_other_transactions_are_ignored() -> None:
    tx = ClientTransaction(register(), reliable=True, now=0.0)
    tx.receive_response(response_to(register(branch="z9hG4bKother"), 200), now=0.1)
    bogus = response_to(register(), 200)
    bogus.status = 99
    tx.receive_response(bogus, now=0.1)
    assert tx.state is TxState.TRYING
    assert events(tx) == []


@pytest.mark.parametrize("reliable", [True, False])
def test_transport_error(reliable: bool) -> None:
    tx = ClientTransaction(register(), reliable=reliable, now=0.0)
    tx.transport_error("connection reset", now=0.2)
    assert tx.state is TxState.TERMINATED
    assert events(tx) == [TransportFailed("connection reset"), TransactionTerminated()]
    assert tx.next_timer() is None
    tx.transport_error("again", now=0.3)
    tx.handle_timer(100.0)
    assert events(tx) == []


def test_transport_error_in_completed_is_ignored() -> None:
    tx = ClientTransaction(register(), reliable=False, now=0.0)
    tx.receive_response(response_to(register(), 200), now=0.1)
    events(tx)
    tx.transport_error("reset", now=0.2)
    assert tx.state is TxState.COMPLETED
    assert events(tx) == []


def test_late_handle_timer_fires_each_due_timer_once_in_order() -> None:
    tx = ClientTransaction(register(), reliable=False, now=0.0)
    tx.pop_outgoing()
    tx.handle_timer(1000.0)  # E and F both due: F wins, E is cancelled by termination
    assert tx.pop_outgoing() == [serialize_message(register())]
    assert events(tx) == [TransactionTimedOut(), TransactionTerminated()]


# --- server --------------------------------------------------------------------------------


def test_server_key() -> None:
    assert server_key(register()) == (BRANCH, "127.0.0.101:5060", "REGISTER")
    assert server_key(register(method="ACK")) == (BRANCH, "127.0.0.101:5060", "INVITE")
    assert server_key(register(branch=None)) is None
    no_via = register()
    no_via.headers.remove("Via")
    assert server_key(no_via) is None
    broken = register()
    broken.headers.set("Via", "garbage")
    assert server_key(broken) is None


def test_client_key() -> None:
    assert client_key(response_to(register(), 200)) == (BRANCH, "REGISTER")
    response = response_to(register(), 200)
    response.headers.set("CSeq", "nonsense")
    assert client_key(response) is None
    response = response_to(register(branch=None), 200)
    assert client_key(response) is None
    assert client_key(Response(200, "OK", Headers())) is None


def test_answered_request_gets_the_same_answer_until_timer_j() -> None:
    answered: AnsweredRequests[str] = AnsweredRequests()
    key = server_key(register())
    assert key is not None
    assert answered.get(key) is None
    answered.add(key, "flow", b"SIP/2.0 200 OK", now=1.0)
    assert answered.next_timer() == pytest.approx(1.0 + 32.0)  # Timer J = 64*T1 over UDP
    assert answered.get(key) == ("flow", b"SIP/2.0 200 OK")  # a retransmission: same answer
    answered.handle_timer(32.9)
    assert answered.get(key) == ("flow", b"SIP/2.0 200 OK")
    answered.handle_timer(33.0)
    assert answered.get(key) is None
    assert answered.next_timer() is None
    assert len(answered) == 0


def test_answered_requests_end_in_order_and_a_later_answer_keeps_its_own_timer_j() -> None:
    answered: AnsweredRequests[str] = AnsweredRequests(TimerConfig(t1=0.1))  # Timer J 6.4 s
    first, second = ("a", "h:1", "REGISTER"), ("b", "h:1", "REGISTER")
    answered.add(first, "f", b"1", now=0.0)
    answered.add(second, "f", b"2", now=1.0)
    answered.handle_timer(6.4)
    assert (answered.get(first), answered.get(second)) == (None, ("f", b"2"))
    answered.add(first, "f", b"1 again", now=7.0)  # the same key answered anew after its end
    answered.handle_timer(7.4)
    assert answered.get(first) == ("f", b"1 again")
    assert answered.next_timer() == pytest.approx(13.4)
    answered.handle_timer(13.4)
    assert len(answered) == 0
