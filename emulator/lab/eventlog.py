"""The lab's event log: every event, in arrival order, kept in memory and on disk.

Readers either take a slice (``since``) or subscribe and are woken on each append; the
sequence number lets a follower resume without missing or repeating an event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO

from emulator.events import Event

# Enough for hours of a default lab; past it the oldest events leave memory (the file keeps them).
MEMORY_LIMIT = 200_000


class EventLog:
    def __init__(self, path: Path | None = None, on_event: Callable[[Event], None] | None = None):
        self._events: list[Event] = []
        self._first_seq = 0
        self._wakeup = asyncio.Event()
        self._file: IO[str] | None = path.open("w", encoding="utf-8") if path else None
        self._on_event = on_event
        self.closed = False

    @property
    def next_seq(self) -> int:
        return self._first_seq + len(self._events)

    def append(self, event: Event) -> None:
        self._events.append(event)
        if len(self._events) > MEMORY_LIMIT:
            drop = len(self._events) - MEMORY_LIMIT
            del self._events[:drop]
            self._first_seq += drop
        if self._file is not None:
            self._file.write(event.to_json() + "\n")
            self._file.flush()
        if self._on_event is not None:
            self._on_event(event)
        self._wake()

    def _wake(self) -> None:
        # Followers wait on the current Event; replacing it after setting it re-arms the next wait.
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    def since(self, seq: int) -> tuple[list[Event], int]:
        start = max(seq, self._first_seq) - self._first_seq
        return self._events[start:], self.next_seq

    async def follow(self, seq: int) -> AsyncIterator[tuple[int, Event]]:
        """Yield (seq, event) from ``seq`` on, waiting for new ones, until the log closes."""
        while True:
            wakeup = self._wakeup
            events, next_seq = self.since(seq)
            first = next_seq - len(events)
            for offset, event in enumerate(events):
                yield first + offset, event
            seq = next_seq
            if self.closed:
                return
            if self.next_seq == seq:
                await wakeup.wait()

    async def close(self) -> None:
        self.closed = True
        self._wake()
        if self._file is not None:
            self._file.close()
            self._file = None
