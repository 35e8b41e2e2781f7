"""The link-fault policy (partition, impairment) driven by a fake clock and a seeded RNG."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.kinds import Kind
from emulator.sip.linkfault import (
    HELD,
    MAX_RETRANSMISSIONS,
    RTO_MAX,
    RTO_MIN,
    LinkFaults,
    register_link_ops,
)

A, B = "127.61.0.1", "127.61.0.2"


def faults(seed: int = 1) -> LinkFaults[str]:
    return LinkFaults(random.Random(seed))


def drain(links: LinkFaults[str], now: float) -> list[str]:
    return [item.payload for item in links.pop_due(now)]


# -- control ops ------------------------------------------------------------------------------


def test_no_fault_is_inactive_and_reports_an_empty_state() -> None:
    links = faults()
    assert not links.active
    assert links.state() == {"partition": None, "impair": {"in": None, "out": None}}


def test_partition_state_normalises_remotes_and_heal_clears_everything() -> None:
    links = faults()
    state = links.control("partition", {"remotes": ["0:0::1", A], "transports": ["tcp"]})
    assert state["partition"] == {"remotes": ["127.61.0.1", "::1"], "transports": ["tcp"]}
    assert links.active
    links.control("impair", {"delay": 0.5})
    state = links.control("heal", {})
    assert state == {"partition": None, "impair": {"in": None, "out": None}}
    assert not links.active


def test_partition_with_null_scope_covers_everything() -> None:
    links = faults()
    assert links.control("partition", {})["partition"] == {"remotes": None, "transports": None}
    assert links.blocks("udp", A)
    assert links.blocks("tls", "::1")


def test_impair_one_direction_keeps_the_other() -> None:
    links = faults()
    links.control("impair", {"direction": "out", "delay": 0.3})
    state = links.control("impair", {"direction": "in", "loss": 0.5, "remotes": [B]})
    assert state["impair"]["out"] == {
        "delay": 0.3,
        "jitter": 0.0,
        "loss": 0.0,
        "remotes": None,
        "transports": None,
    }
    assert state["impair"]["in"]["loss"] == 0.5
    assert state["impair"]["in"]["remotes"] == [B]


def test_impair_without_delay_jitter_or_loss_clears_that_direction() -> None:
    links = faults()
    links.control("impair", {"delay": 1})
    state = links.control("impair", {"direction": "in"})
    assert state["impair"]["in"] is None
    assert state["impair"]["out"] is not None


@pytest.mark.parametrize(
    ("op", "args", "message"),
    [
        ("partition", {"remotes": "127.0.0.1"}, "'remotes'"),
        ("partition", {"remotes": []}, "'remotes'"),
        ("partition", {"remotes": ["exp1.uctest.local"]}, "not an IP address"),
        ("partition", {"transports": ["sctp"]}, "'transports'"),
        ("partition", {"remote": [A]}, "unknown argument 'remote'"),
        ("heal", {"now": True}, "unknown argument 'now'"),
        ("impair", {"direction": "sideways", "delay": 1}, "'direction'"),
        ("impair", {"delay": -1}, "'delay'"),
        ("impair", {"delay": "1"}, "'delay'"),
        ("impair", {"delay": True}, "'delay'"),
        ("impair", {"delay": float("nan")}, "'delay'"),
        ("impair", {"jitter": 1e9}, "'jitter'"),
        ("impair", {"loss": 1.5}, "'loss'"),
        ("impair", {"loss": 0.1, "seed": "x"}, "'seed'"),
        ("cut", {}, "unknown link op"),
    ],
)
def test_bad_arguments_are_one_line_errors_and_change_nothing(
    op: str, args: dict[str, Any], message: str
) -> None:
    links = faults()
    links.control("impair", {"direction": "out", "delay": 0.1})
    before = links.state()
    with pytest.raises(ValueError, match=message) as error:
        links.control(op, args)
    assert "\n" not in str(error.value)
    assert links.state() == before


def test_link_ops_reply_with_the_state_and_emit_link_changed() -> None:
    class Ctx:
        def __init__(self) -> None:
            self.handlers: dict[str, Any] = {}
            self.events: list[tuple[str, dict[str, Any]]] = []

        def on_command(self, op: str, handler: Any) -> None:
            self.handlers[op] = handler

        def emit(self, kind: str, /, **fields: Any) -> None:
            self.events.append((kind, fields))

    ctx, links = Ctx(), faults()
    register_link_ops(ctx, links.control)
    assert sorted(ctx.handlers) == ["heal", "impair", "partition"]
    result = ctx.handlers["partition"]({"remotes": [A]})
    assert ctx.events == [(Kind.LINK_CHANGED, result)]
    assert set(result) == {"partition", "impair"}
    with pytest.raises(ValueError, match="'loss'"):
        ctx.handlers["impair"]({"loss": 2})
    assert len(ctx.events) == 1  # a refused op changes nothing and says nothing


# -- verdicts ---------------------------------------------------------------------------------


def test_partition_drops_datagrams_and_holds_stream_messages_of_matching_remotes() -> None:
    links = faults()
    links.control("partition", {"remotes": [A]})
    assert links.verdict("in", "udp", A, 10.0) is None
    assert links.verdict("out", "tcp", A, 10.0) == HELD
    assert links.verdict("in", "tls", A, 10.0) == HELD
    assert links.verdict("in", "udp", B, 10.0) == 10.0


def test_delay_and_jitter_stay_within_their_bounds() -> None:
    links = faults(seed=7)
    links.control("impair", {"direction": "out", "delay": 0.3, "jitter": 0.1})
    times = [links.verdict("out", "udp", A, 100.0) for _ in range(200)]
    assert all(t is not None and 100.2 <= t <= 100.4 for t in times)
    assert len(set(times)) > 100  # jitter, not a constant
    assert links.verdict("in", "udp", A, 100.0) == 100.0  # the other direction is untouched


def test_jitter_never_makes_a_negative_delay() -> None:
    links = faults()
    links.control("impair", {"delay": 0.01, "jitter": 1.0})
    assert all(links.verdict("in", "tcp", A, 5.0) >= 5.0 for _ in range(100))  # type: ignore[operator]


def test_scope_limits_an_impairment() -> None:
    links = faults()
    links.control("impair", {"delay": 1, "remotes": [A], "transports": ["udp"]})
    assert links.verdict("in", "udp", A, 0.0) == 1.0
    assert links.verdict("in", "tcp", A, 0.0) == 0.0
    assert links.verdict("in", "udp", B, 0.0) == 0.0


def test_total_loss_drops_datagrams() -> None:
    links = faults()
    links.control("impair", {"loss": 1.0})
    assert all(links.verdict("out", "udp", A, 0.0) is None for _ in range(50))


def test_loss_on_a_stream_costs_retransmission_timeouts() -> None:
    links = faults(seed=3)
    links.control("impair", {"direction": "in", "loss": 0.5, "transports": ["tcp"]})
    # Every possible lateness: k losses cost RTO_MIN * (1 + 2 + ... + 2^(k-1)), capped per step.
    possible, total, rto = {0.0}, 0.0, RTO_MIN
    for _ in range(MAX_RETRANSMISSIONS):
        total += rto
        rto = min(2 * rto, RTO_MAX)
        possible.add(round(total, 9))
    seen = set()
    for _ in range(300):
        at = links.verdict("in", "tcp", A, 0.0)
        if at is not None:
            assert round(at, 9) in possible
            seen.add(round(at, 9))
    assert {0.0, 0.2, 0.6} <= seen  # no loss, one loss, two losses all happen at 50%


def test_total_loss_on_a_stream_gives_up_after_the_retransmissions() -> None:
    links = faults()
    links.control("impair", {"loss": 1.0})
    assert links.verdict("out", "tls", A, 0.0) is None


def test_a_seed_makes_the_draws_repeatable() -> None:
    first, second = faults(seed=1), faults(seed=2)
    for links in (first, second):
        links.control("impair", {"delay": 0.5, "jitter": 0.4, "loss": 0.3, "seed": 42})
    draws = [[links.verdict("out", "udp", A, 0.0) for _ in range(50)] for links in (first, second)]
    assert draws[0] == draws[1]


# -- the queue: timers as data ----------------------------------------------------------------


def test_an_undelayed_message_is_due_at_once() -> None:
    links = faults()
    links.control("impair", {"direction": "in", "delay": 1.0})
    assert links.submit("out", "udp", A, None, "answer", 3.0)
    assert drain(links, 3.0) == ["answer"]
    assert links.next_timer() is None


def test_a_delayed_message_is_due_at_its_time_and_the_timer_says_when() -> None:
    links = faults()
    links.control("impair", {"delay": 0.3})
    links.submit("in", "udp", A, None, "query", 10.0)
    assert links.next_timer() == pytest.approx(10.3)
    assert drain(links, 10.29) == []
    assert drain(links, 10.3) == ["query"]
    assert links.next_timer() is None


def test_jitter_never_reorders_a_stream_but_may_reorder_datagrams() -> None:
    links = faults(seed=5)
    links.control("impair", {"delay": 0.5, "jitter": 0.5})
    for n in range(50):
        links.submit("in", "tcp", A, "conn", f"stream {n:02}", 0.0)
        links.submit("in", "udp", A, None, f"datagram {n:02}", 0.0)
    delivered = drain(links, 2.0)
    stream = [p for p in delivered if p.startswith("stream")]
    datagrams = [p for p in delivered if p.startswith("datagram")]
    assert stream == sorted(stream)
    assert len(stream) == 50
    assert datagrams != sorted(datagrams)  # datagrams are not a stream: jitter reorders them


def test_queued_messages_keep_the_link_active_after_the_heal_until_delivered() -> None:
    links = faults()
    links.control("impair", {"delay": 1.0})
    links.submit("in", "tcp", A, "conn", "first", 0.0)
    links.control("heal", {})
    assert links.active
    # Undelayed now, but it must not overtake the message in flight on its stream.
    links.submit("in", "tcp", A, "conn", "second", 0.5)
    assert drain(links, 0.5) == []
    assert drain(links, 1.0) == ["first", "second"]
    assert not links.active


def test_partitioned_datagrams_are_dropped_even_in_flight() -> None:
    links = faults()
    links.control("impair", {"delay": 1.0})
    assert links.submit("out", "udp", A, None, "in flight", 0.0)
    links.control("partition", {"remotes": [A]})
    assert not links.submit("out", "udp", A, None, "refused", 0.5)
    assert links.submit("out", "udp", B, None, "other client", 0.5)
    assert drain(links, 2.0) == ["other client"]
    links.control("heal", {})
    assert drain(links, 3.0) == []
    assert not links.active


def test_a_partitioned_stream_holds_its_messages_and_the_heal_releases_them_in_order() -> None:
    links = faults()
    links.control("partition", {"transports": ["tcp"]})
    links.submit("out", "tcp", A, "conn", "200 OK", 0.0)
    links.submit("out", "tcp", A, "conn", "\r\n", 0.1)
    links.submit("out", "udp", B, None, "udp passes", 0.1)
    assert drain(links, 5.0) == ["udp passes"]
    assert links.next_timer() is None  # held messages wait for a change, not a time
    links.control("heal", {})
    assert drain(links, 6.0) == ["200 OK", "\r\n"]
    assert not links.active


def test_forget_drops_what_a_closed_stream_held() -> None:
    links = faults()
    links.control("partition", {})
    links.submit("out", "tcp", A, "conn", "never", 0.0)
    drain(links, 0.0)
    links.forget("conn")
    links.control("heal", {})
    assert drain(links, 1.0) == []
    assert not links.active


# -- the ordering guarantee, for any sequence of faults -------------------------------------

LANES = ("c1", "c2", None)  # two streams and the datagram socket

ops = st.one_of(
    st.tuples(st.just("send"), st.sampled_from(LANES), st.sampled_from(["in", "out"])),
    st.tuples(st.just("wait"), st.floats(min_value=0, max_value=2)),
    st.tuples(st.just("deliver")),
    st.tuples(
        st.just("impair"),
        st.sampled_from(["in", "out", "both"]),
        st.floats(min_value=0, max_value=1),
        st.floats(min_value=0, max_value=1),
        st.sampled_from([0.0, 0.3, 0.9]),
    ),
    st.tuples(st.just("partition"), st.sampled_from([None, ["tcp"], ["udp"]])),
    st.tuples(st.just("heal")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ops, min_size=5, max_size=80), st.integers(0, 2**32))
def test_a_stream_never_delivers_message_n_plus_1_before_n(
    script: list[tuple[Any, ...]], seed: int
) -> None:
    links: LinkFaults[tuple[Any, str, int]] = LinkFaults(random.Random(seed))
    now, counter = 0.0, 0
    sent: list[tuple[Any, str, int]] = []
    delivered: list[tuple[Any, str, int]] = []
    for op, *args in script:
        if op == "send":
            lane, direction = args
            counter += 1
            item = (lane, direction, counter)
            transport = "udp" if lane is None else "tcp"
            if links.submit(direction, transport, A, lane, item, now):
                sent.append(item)
        elif op == "wait":
            now += args[0]
        elif op == "deliver":
            delivered += [p.payload for p in links.pop_due(now)]
        elif op == "impair":
            direction, delay, jitter, loss = args
            links.control(
                "impair", {"direction": direction, "delay": delay, "jitter": jitter, "loss": loss}
            )
        elif op == "partition":
            links.control("partition", {"transports": args[0]})
        else:
            links.control("heal", {})
        assert links.next_timer() is None or links.active
    links.control("heal", {})
    delivered += [p.payload for p in links.pop_due(now + 1e6)]
    for lane in ("c1", "c2"):
        for direction in ("in", "out"):
            # Whatever a stream accepted arrives after the heal, once each, in sending order.
            stream = [n for (ln, d, n) in delivered if (ln, d) == (lane, direction)]
            assert stream == [n for (ln, d, n) in sent if (ln, d) == (lane, direction)]
    datagrams = [item for item in delivered if item[0] is None]
    assert len(datagrams) == len(set(datagrams))
    assert set(datagrams) <= set(sent)
    assert not links.active
