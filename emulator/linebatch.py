"""Event lines gathered into one write: at the end of the loop iteration that produced them, but
at most once per ``FLUSH_INTERVAL`` (then on a timer).

Under load a peer answering 1,000 UDP REGISTERs a second runs ~1,000 loop iterations a second,
and one write (and one wakeup of the reader, the lab's supervisor) for each was most of what
watching it cost. Both ways a component writes events use it: the stdout pipe to its
supervisor and the socket of a ``listen:``/``connect:`` channel. Events keep their own times.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

FLUSH_INTERVAL = 0.02  # s; an idle component still writes at once


class LineBatch:
    """Lines waiting for their write; ``sink`` gets them all at once (a list, never empty)."""

    def __init__(self, sink: Callable[[list[str]], None]) -> None:
        self._sink = sink
        self._lines: list[str] = []
        self.size = 0  # characters waiting, newlines included
        self._flush_due = False
        self._last_flush = 0.0

    def add(self, line: str) -> None:
        self._lines.append(line)
        self.size += len(line) + 1
        if self._flush_due:
            return
        loop = _running_loop()
        if loop is None:
            self.flush()  # no loop (start-up, shutdown): nothing would ever flush it later
            return
        self._flush_due = True
        wait = self._last_flush + FLUSH_INTERVAL - loop.time()
        if wait > 0:
            loop.call_later(wait, self.flush)
        else:
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Hand every waiting line to the sink now."""
        self._flush_due = False
        if not self._lines:
            return
        loop = _running_loop()
        if loop is not None:
            self._last_flush = loop.time()
        lines, self._lines, self.size = self._lines, [], 0
        self._sink(lines)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
