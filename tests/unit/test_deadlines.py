"""Deadlines: named deadlines in a heap with lazy deletion and lazy postponement."""

from __future__ import annotations

from emulator.deadlines import COMPACT_AFTER, Deadlines


def test_pop_due_follows_the_latest_time_of_each_key() -> None:
    d: Deadlines[str] = Deadlines()
    d.set("a", 5.0)
    d.set("b", 3.0)
    d.set("c", 4.0)
    d.set("b", 6.0)  # postponed
    d.cancel("c")
    assert d.pop_due(3.5) == []  # b's old time: nothing is due, b moves on to 6
    assert d.next() == 5.0
    assert d.pop_due(5.5) == ["a"]
    assert len(d) == 1
    assert d.get("b") == 6.0
    assert d.pop_due(10.0) == ["b"]
    assert d.next() is None
    assert len(d) == 0


def test_next_is_never_after_the_first_deadline() -> None:
    d: Deadlines[str] = Deadlines()
    d.set("a", 10.0)
    d.set("a", 20.0)  # postponed: its entry still says 10
    assert d.next() == 10.0
    d.set("a", 5.0)  # brought forward: a new entry
    assert d.next() == 5.0
    assert d.pop_due(5.0) == ["a"]
    assert d.next() is None  # both of a's entries stand for nothing now


def test_a_postponed_deadline_costs_no_heap_entry() -> None:
    d: Deadlines[str] = Deadlines()
    for n in range(10):
        d.set("a", 1.0 + n)
    assert len(d._heap) == 1
    assert d.pop_due(5.0) == []
    assert d.pop_due(10.0) == ["a"]
    assert d.pop_due(20.0) == []


def test_refreshing_long_deadlines_does_not_grow_the_heap() -> None:
    """A registrar refreshing 100 bindings of an hour, 100,000 times."""
    d: Deadlines[int] = Deadlines()
    keys = 100
    for n in range(100_000):
        d.set(n % keys, 3600.0 + n)
    assert len(d._heap) == keys
    assert len(d) == keys
    assert d.pop_due(3600.0 + 100_000 - keys - 1) == []
    assert d.next() == 3600.0 + 100_000 - keys
    due = d.pop_due(10**9)
    assert sorted(due) == list(range(keys))


def test_cancelled_and_brought_forward_entries_are_compacted() -> None:
    d: Deadlines[int] = Deadlines()
    for n in range(5 * COMPACT_AFTER):
        d.set(0, 10_000.0 - n)  # each brought forward: a new entry, the old one dead
    assert len(d._heap) <= 2 * len(d) + COMPACT_AFTER + 1
    assert d.pop_due(10_000.0) == [0]
