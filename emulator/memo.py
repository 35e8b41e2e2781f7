"""Recent results of a pure function of a string, remembered by that string, in bounded memory.

A SIP server sees the same texts again and again: every REGISTER of an endpoint repeats its To,
its Contact and most of its header lines. Parsing them once and handing out the same immutable
result turns the repeats into dict lookups.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Generic, TypeVar

V = TypeVar("V")
# Distinct texts remembered per table: enough for the To and Contact of a few thousand
# endpoints, while the values seen once (each From tag, each Via branch) pass through.
MEMO_SIZE: Final = 8192


class Memo(Generic[V]):
    """Two generations: when the young table is full it becomes the old one (the previous old
    one is dropped), and a hit in the old table moves the value back to the young. Values
    asked for again within a generation stay; values seen once age out. Memory is bounded
    whatever the input. Values must be immutable (every caller gets the same object), and
    None is no value (a miss). A hot loop reads ``young`` and ``old`` itself, and calls
    :meth:`fill` for what it found in the old or made anew."""

    __slots__ = ("old", "size", "young")

    def __init__(self, size: int = MEMO_SIZE) -> None:
        self.size = size
        self.young: dict[str, V] = {}
        self.old: dict[str, V] = {}

    def fill(self, text: str, value: V) -> V:
        if len(self.young) >= self.size:
            self.young, self.old = {}, self.young
        self.young[text] = value
        return value


class Memoized(Generic[V]):
    """``function`` with its recent results remembered in a :class:`Memo`; what it raises is
    not remembered (it raises again every time), nor is a None result. Not
    functools.lru_cache: compiled code calls this object through vectorcall, with a dict
    lookup on a hit, where a call of an lru_cache wrapper builds an argument tuple, looks the
    wrapper up by name and relinks its list."""

    __slots__ = ("function", "memo")

    def __init__(self, function: Callable[[str], V], size: int = MEMO_SIZE) -> None:
        self.function = function
        self.memo: Memo[V] = Memo(size)

    def __call__(self, text: str) -> V:
        memo = self.memo
        value = memo.young.get(text)
        if value is not None:
            return value
        value = memo.old.get(text)
        return memo.fill(text, self.function(text) if value is None else value)
