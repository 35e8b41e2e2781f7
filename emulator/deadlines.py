"""Deadlines keyed by name, as data: the one structure behind every core's ``next_timer``.

A heap with lazy deletion and lazy postponement. Cancelling a deadline leaves its heap entry
to be dropped when it comes up. Moving a deadline later (what every refresh of a binding or a
registration does) leaves its heap entry where it is, standing for it: when that entry's time
comes, :meth:`pop_due` puts it back at the deadline's new time instead of returning it. So a
refresh costs a dict store, not a heap push, and :meth:`next` is the time of the first entry:
never after the first deadline, sometimes before it (a core then wakes, finds nothing due,
and sleeps again). When dead entries outnumber the live ones the heap is rebuilt.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Final, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
# Dead entries tolerated before a rebuild: a rebuild is O(n), so it waits for that many.
COMPACT_AFTER: Final = 1024


class Deadlines(Generic[K]):
    def __init__(self) -> None:
        self._when: dict[K, float] = {}  # each key's deadline
        self._queued: dict[K, float] = {}  # the time of the heap entry that stands for it
        self._heap: list[tuple[float, int, K]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._when)

    def __contains__(self, key: object) -> bool:
        return key in self._when

    def set(self, key: K, when: float) -> None:
        self._when[key] = when
        queued = self._queued.get(key)
        if queued is not None and queued <= when:
            return  # its entry comes up first, and is then moved on to ``when``
        self._queued[key] = when
        heap = self._heap
        heapq.heappush(heap, (when, next(self._order), key))
        if len(heap) > 2 * len(self._when) + COMPACT_AFTER:
            self._compact()

    def cancel(self, key: K) -> None:
        self._when.pop(key, None)
        self._queued.pop(key, None)

    def get(self, key: K) -> float | None:
        return self._when.get(key)

    def next(self) -> float | None:
        """When to look again: at or before the first deadline (see the module's note)."""
        heap, queued = self._heap, self._queued
        while heap and queued.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)  # an entry that stands for nothing any more
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> list[K]:
        heap, queued, when = self._heap, self._queued, self._when
        due: list[K] = []
        while heap and heap[0][0] <= now:
            at, _, key = heapq.heappop(heap)
            if queued.get(key) != at:
                continue
            deadline = when[key]
            if deadline > now:  # postponed since the entry was made: it moves on
                queued[key] = deadline
                heapq.heappush(heap, (deadline, next(self._order), key))
                continue
            del when[key], queued[key]
            due.append(key)
        return due

    def _compact(self) -> None:
        queued = self._queued
        self._heap = [entry for entry in self._heap if queued.get(entry[2]) == entry[0]]
        heapq.heapify(self._heap)
