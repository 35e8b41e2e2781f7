"""The lab's event log: every event, in arrival order, kept in memory and on disk.

Readers either take a slice (``since``) or subscribe and are woken on each append; the
sequence number lets a follower resume without missing or repeating an event.

The file is written in batches: appended lines are buffered and written (and flushed) at most
every ``FILE_FLUSH_INTERVAL`` and on close, never one write per event. Followers are woken once
per event-loop iteration. Outside a running loop both happen at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO

from emulator.events import Event

# Enough for hours of a default lab; past it the oldest events leave memory (the file keeps them).
MEMORY_LIMIT = 200_000
# Readers of events.jsonl (tail -f, jq) see events this much later at most.
FILE_FLUSH_INTERVAL = 0.1


class EventLog:
    def __init__(self, path: Path | None = None, on_event: Callable[[Event], None] | None = None):
        self._events: list[Event] = []
        self._first_seq = 0
        self._wakeup = asyncio.Event()
        self._file: IO[str] | None = path.open("w", encoding="utf-8") if path else None
        self._on_event = on_event
        self._lines: list[str] = []
        self._wake_due = False
        self._write_due = False
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
            self._lines.append(event.to_json())
        if self._on_event is not None:
            self._on_event(event)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no running loop: nothing to batch with
            self.flush()
            return
        if not self._wake_due:
            self._wake_due = True
            loop.call_soon(self._wake)
        if self._lines and not self._write_due:
            self._write_due = True
            loop.call_later(FILE_FLUSH_INTERVAL, self._write)

    def flush(self) -> None:
        """Write the buffered lines to the file and wake the followers, now."""
        self._write()
        self._wake()

    def _write(self) -> None:
        self._write_due = False
        if self._lines and self._file is not None:
            self._lines.append("")
            self._file.write("\n".join(self._lines))
            self._file.flush()
        self._lines.clear()

    def _wake(self) -> None:
        self._wake_due = False
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
        self.flush()
        self.closed = True
        self._wake()
        if self._file is not None:
            self._file.close()
            self._file = None
