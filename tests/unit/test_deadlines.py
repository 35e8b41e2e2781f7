"""Deadlines: named deadlines in a heap with lazy deletion, rebuilt when stale entries pile up."""

from __future__ import annotations

from emulator.deadlines import COMPACT_AFTER, Deadlines


def test_next_and_pop_due_follow_the_latest_time_of_each_key() -> None:
    d: Deadlines[str] = Deadlines()
    d.set("a", 5.0)
    d.set("b", 3.0)
    d.set("c", 4.0)
    d.set("b", 6.0)  # re-armed later
    d.cancel("c")
    assert d.next() == 5.0
    assert d.pop_due(5.5) == ["a"]
    assert len(d) == 1
    assert d.get("b") == 6.0
    assert d.pop_due(10.0) == ["b"]
    assert d.next() is None
    assert len(d) == 0


def test_setting_the_same_time_again_adds_nothing() -> None:
    d: Deadlines[str] = Deadlines()
    for _ in range(10):
        d.set("a", 1.0)
    assert len(d._heap) == 1
    assert d.pop_due(1.0) == ["a"]
    assert d.pop_due(2.0) == []


def test_refreshing_long_deadlines_does_not_grow_the_heap_without_bound() -> None:
    """A registrar refreshing 100 bindings of an hour, 100,000 times: each refresh moves a
    deadline that is not the next one, so no stale entry reaches the top of the heap."""
    d: Deadlines[int] = Deadlines()
    keys = 100
    for n in range(100_000):
        d.set(n % keys, 3600.0 + n)
        assert len(d._heap) <= 2 * keys + COMPACT_AFTER + 1
    assert len(d) == keys
    assert d.next() == 3600.0 + 100_000 - keys
    due = d.pop_due(10**9)
    assert sorted(due) == list(range(keys))
