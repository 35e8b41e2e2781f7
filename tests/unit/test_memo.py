"""emulator/memo.py: what Memoized remembers, what it does not, and that its memory is bounded."""

from __future__ import annotations

import pytest

from emulator.memo import Memoized


class Calls:
    """A pure function of a string that counts how often it really ran."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, text: str) -> str | None:
        self.count += 1
        if text == "bad":
            raise ValueError("bad input")
        return None if text == "none" else text.upper()


def test_a_repeat_is_answered_from_memory_with_the_same_object() -> None:
    calls = Calls()
    upper = Memoized(calls)
    first = upper("sip:alice@uctest.local")
    assert first == "SIP:ALICE@UCTEST.LOCAL"
    assert upper("sip:alice@uctest.local") is first
    assert calls.count == 1


def test_what_it_raises_is_raised_again_each_time() -> None:
    calls = Calls()
    upper = Memoized(calls)
    for _ in range(3):
        with pytest.raises(ValueError, match="bad input"):
            upper("bad")
    assert calls.count == 3


def test_a_none_result_is_not_remembered() -> None:
    calls = Calls()
    upper = Memoized(calls)
    assert upper("none") is None
    assert upper("none") is None
    assert calls.count == 2


def test_memory_stays_bounded_and_recurring_texts_stay() -> None:
    calls = Calls()
    upper = Memoized(calls, size=8)
    for n in range(1000):
        upper("to")  # asked for again and again: never made again
        upper(f"branch-{n}")  # seen once: ages out
        assert len(upper.memo.young) <= 8
        assert len(upper.memo.old) <= 8
    assert calls.count == 1001


def test_a_value_in_the_old_generation_comes_back_without_a_call() -> None:
    calls = Calls()
    upper = Memoized(calls, size=2)
    upper("a")
    upper("b")
    upper("c")  # the young table was full: a and b are now the old generation
    assert "a" in upper.memo.old
    assert upper("a") == "A"
    assert calls.count == 3
    assert "a" in upper.memo.young
