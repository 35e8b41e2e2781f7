"""One asyncio timer per sans-I/O core, re-armed to whatever the core's ``next_timer`` says."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Rearm:
    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._when: float | None = None

    def arm(self, when: float | None) -> None:
        """Wake at loop time ``when`` (None: not at all); replaces the previous wake-up."""
        if when == self._when and self._handle is not None:
            return
        self.cancel()
        if when is not None:
            self._when = when
            self._handle = asyncio.get_running_loop().call_at(when, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._when = None

    def _fire(self) -> None:
        self._handle = None
        self._when = None
        self._callback()
