"""The rate governor and the Emitter's use of it, with a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from emulator.eventrate import RateGovernor
from emulator.events import Emitter, Event
from emulator.kinds import CATALOGUE, HIGH_RATE, Kind, Rate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def emitter(threshold: int = 10) -> tuple[Emitter, list[Event], Clock]:
    clock = Clock()
    written: list[Event] = []
    governor = RateGovernor(threshold=threshold, window=1.0, clock=clock)
    return Emitter("peer", written.append, clock=clock, governor=governor), written, clock


def of(written: list[Event], kind: str) -> list[Event]:
    return [event for event in written if event.kind == kind]


def test_under_the_threshold_every_event_goes_out_whole() -> None:
    emit, written, clock = emitter(threshold=10)
    for _second in range(3):
        for _ in range(10):
            emit.emit(Kind.REGISTER_ANSWERED, aor="a", code=200)
        clock.now += 1.0
    assert len(written) == 30
    assert all("sample" not in event.fields for event in written)


def test_past_the_threshold_one_in_n_with_sample_and_exact_stats() -> None:
    emit, written, clock = emitter(threshold=10)
    for _ in range(1000):
        emit.emit(Kind.REGISTER_ANSWERED, aor="a", code=200)
    answered = of(written, Kind.REGISTER_ANSWERED)
    # 11 whole (the threshold, then the one past it), then 10 at 1/2, 10 at 1/4, ... until
    # 1000 are covered: far fewer than 1000 events.
    assert len(answered) < 80
    assert [e.get("sample", 1) for e in answered[:13]] == [1] * 11 + [2, 2]
    covered = sum(event.get("sample", 1) for event in answered)
    assert 1000 - covered < answered[-1].get("sample", 1) * 2
    clock.now += 1.0
    emit.report()
    (stats,) = of(written, Kind.STATS)
    assert stats.fields == {"counts": {"register.answered": 1000}, "interval": 1.0}


def test_a_steady_load_costs_about_threshold_events_per_window() -> None:
    emit, written, clock = emitter(threshold=10)
    for _ in range(5):  # 5 s at 1000 happenings/s
        for index in range(1000):
            clock.now += 0.001
            emit.emit(Kind.DNS_QUERY, qname=str(index))
    last_second = [e for e in written if e.t > clock.now - 1.0]
    assert 5 <= len(last_second) <= 20
    assert {e.get("sample") for e in last_second} == {100}


def test_state_kinds_are_never_sampled_even_in_a_flood() -> None:
    emit, written, _ = emitter(threshold=10)
    for index in range(500):
        emit.emit(Kind.REGISTER_ANSWERED, aor=str(index))
        emit.emit(Kind.BINDING_ADDED, aor=str(index), contact="sip:x")
    added = of(written, Kind.BINDING_ADDED)
    assert [e.get("aor") for e in added] == [str(i) for i in range(500)]
    assert all("sample" not in e.fields for e in added)
    assert len(of(written, Kind.REGISTER_ANSWERED)) < 100


def test_a_quiet_window_ends_sampling_without_waiting_for_the_next_happening() -> None:
    emit, written, clock = emitter(threshold=10)
    for _ in range(5000):
        emit.emit(Kind.TRANSPORT_CLOSED, flow="f")
    clock.now += 1.0
    emit.report()  # the timer closes the busy window
    clock.now += 1.0
    emit.report()  # and the (empty) next one: the rate is now under the threshold
    before = len(written)
    emit.emit(Kind.TRANSPORT_CLOSED, flow="quiet")
    (quiet,) = written[before:]
    assert quiet.fields == {"flow": "quiet"}


def test_stats_only_when_counts_changed_and_per_kind() -> None:
    emit, written, clock = emitter(threshold=100)
    emit.report()
    assert written == []
    emit.emit(Kind.REGISTER_ANSWERED, aor="a")
    emit.emit(Kind.BINDING_REFRESHED, aor="a")
    emit.emit(Kind.BINDING_REFRESHED, aor="a")
    clock.now += 2.5
    emit.report()
    emit.report()
    (stats,) = of(written, Kind.STATS)
    assert stats.get("counts") == {"register.answered": 1, "binding.refreshed": 2}
    assert stats.get("interval") == 2.5


def test_a_hot_path_tally_counts_and_admits_without_the_generic_path() -> None:
    clock = Clock()
    governor = RateGovernor(threshold=3, window=1.0, clock=clock)
    tally = governor.tally(Kind.DNS_QUERY)
    assert Kind.DNS_QUERY not in governor.governed  # emit() passes it through as given
    samples = [tally.admit() for _ in range(4 + 2 * 3 + 4 * 3)]
    assert samples == [1, 1, 1, 1] + [0, 2] * 3 + [0, 0, 0, 4] * 3
    assert tally.count == 22
    clock.now += 1.0
    counts, interval = governor.tick() or ({}, 0.0)
    assert counts == {"dns.query": 22}
    assert interval == 1.0


def test_events_from_the_catalogue_rate() -> None:
    governor = RateGovernor()
    assert governor.governed == {k for k, spec in CATALOGUE.items() if spec.rate is Rate.HIGH}
    assert governor.governed == HIGH_RATE


@pytest.mark.parametrize(("threshold", "window"), [(0, 1.0), (10, 0.0)])
def test_bad_settings_are_refused(threshold: int, window: float) -> None:
    with pytest.raises(ValueError, match="threshold must be at least 1"):
        RateGovernor(threshold=threshold, window=window)


def test_without_a_governor_every_event_goes_out() -> None:
    written: list[Any] = []
    plain = Emitter("peer", written.append)
    for _ in range(1000):
        plain.emit(Kind.DNS_QUERY)
    plain.report()
    assert len(written) == 1000
