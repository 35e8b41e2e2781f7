"""Deadlines keyed by name, as data: the one structure behind every core's ``next_timer``.

A heap with lazy deletion, so that re-arming or cancelling a deadline is O(log n) and a core
that holds thousands of bindings or registrations still answers ``next_timer`` in O(1). A
re-armed deadline leaves its old heap entry behind until that time comes; when such stale
entries outnumber the live ones the heap is rebuilt, so a registrar refreshing long bindings
does not grow it by one entry per refresh.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
# Stale entries tolerated before a rebuild: a rebuild is O(n), so it waits for that many.
COMPACT_AFTER = 1024


class Deadlines(Generic[K]):
    def __init__(self) -> None:
        self._when: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._when)

    def __contains__(self, key: object) -> bool:
        return key in self._when

    def set(self, key: K, when: float) -> None:
        if self._when.get(key) == when:
            return  # its heap entry is there already
        self._when[key] = when
        heap = self._heap
        heapq.heappush(heap, (when, next(self._order), key))
        if len(heap) > 2 * len(self._when) + COMPACT_AFTER:
            self._compact()

    def cancel(self, key: K) -> None:
        self._when.pop(key, None)

    def get(self, key: K) -> float | None:
        return self._when.get(key)

    def next(self) -> float | None:
        self._discard_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[K]:
        due: list[K] = []
        while True:
            self._discard_stale()
            if not self._heap or self._heap[0][0] > now:
                return due
            _, _, key = heapq.heappop(self._heap)
            del self._when[key]
            due.append(key)

    def _compact(self) -> None:
        when = self._when
        live = {entry[2]: entry for entry in self._heap if when.get(entry[2]) == entry[0]}
        self._heap = list(live.values())
        heapq.heapify(self._heap)

    def _discard_stale(self) -> None:
        heap = self._heap
        while heap and self._when.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
