"""The rate governor: high-rate events are always counted, emitted whole while they are few,
sampled when they are many, and their exact counts reported once a second.

Sans-I/O (the clock is injected; the asyncio shell calls :meth:`RateGovernor.tick` on a timer),
one per component. Only ``Rate.HIGH`` kinds (``emulator/kinds.py``) pass through it; ``STATE``
kinds never do, so a registration state, a fault or a binding added is never sampled away.

The rule, per window (1 s by default):

* While the component's HIGH happenings stay under ``threshold`` per window, each one is an
  event.
* Past it, one in N is, carrying ``sample=N`` (the number of happenings it stands for). N starts
  at 2 and doubles each time another ``threshold`` sampled events have gone out in the same
  window, so a burst costs about ``threshold * log2(rate / threshold)`` events in its first
  window.
* Each new window starts from the previous window's rate: under the threshold, every event
  again; over it, N = rate / threshold, so a steady load costs about ``threshold`` events per
  window, whatever its rate.
* :meth:`tick` returns the per-kind counts since its last report (when they changed), which
  the component emits as one ``stats`` event: sampled or not, no happening goes uncounted.

The hot path is :meth:`Tally.admit`: two integer updates and a compare unless an event is due,
no clock read, no dict, no allocation. A caller that emits a kind through its own hot path
takes that kind's :class:`Tally` with :meth:`RateGovernor.tally`; the generic path
(``Emitter.emit``) calls :meth:`RateGovernor.admit`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from emulator.kinds import HIGH_RATE

DEFAULT_THRESHOLD: Final = 200
DEFAULT_WINDOW: Final = 1.0


class Tally:
    """One HIGH kind's count; :meth:`admit` is the per-happening verb of a hot path."""

    __slots__ = ("_governor", "count", "kind")

    def __init__(self, kind: str, governor: RateGovernor) -> None:
        self.kind = kind
        self.count = 0
        self._governor = governor

    def admit(self) -> int:
        """Count one happening: 0 if it gets no event, else N, the happenings its event
        stands for (1: this one alone; more: put ``sample=N`` on the event)."""
        self.count += 1
        governor = self._governor
        governor.countdown -= 1
        if governor.countdown:
            return 0
        return governor.due()


class RateGovernor:
    def __init__(
        self,
        threshold: int = DEFAULT_THRESHOLD,
        window: float = DEFAULT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1 or window <= 0:
            raise ValueError("the threshold must be at least 1 and the window positive")
        self.threshold = threshold
        self.window = window
        self._clock = clock
        now = clock()
        self._window_start = now
        self._stats_at = now
        # Happenings of this window up to the start of the current run; a run is the stretch
        # of happenings one event stands for (``countdown`` of them are still to come).
        self._seen = 0
        self._run = 1
        self.countdown = 1
        self._factor = 1
        self._left = threshold  # events still to go out at ``_factor`` before it doubles
        self._tallies: dict[str, Tally] = {}
        self._reported: dict[str, int] = {}
        # HIGH kinds that ``admit`` governs: those no hot path took with ``tally``.
        self.governed: set[str] = set(HIGH_RATE)

    def tally(self, kind: str) -> Tally:
        """The counter for ``kind``, for a caller that counts and emits it itself."""
        self.governed.discard(kind)
        return self._tally(kind)

    def admit(self, kind: str) -> int:
        """Count one happening of ``kind`` (the generic path); see :meth:`Tally.admit`."""
        return self._tally(kind).admit()

    def _tally(self, kind: str) -> Tally:
        tally = self._tallies.get(kind)
        if tally is None:
            tally = self._tallies[kind] = Tally(kind, self)
        return tally

    def due(self) -> int:
        """A run just ended: its last happening gets an event standing for the whole run."""
        sample = self._run
        now = self._clock()
        if now - self._window_start >= self.window:
            self._roll(now, sample - 1)  # the run's last happening is the new window's first
            self._seen = 1
        else:
            self._seen += sample
            if self._left:
                self._left -= 1
            else:  # ``threshold`` events at this factor already went out in this window
                self._factor *= 2
                self._left = self.threshold - 1
            self._run = self.countdown = self._factor
        return sample

    def tick(self) -> tuple[dict[str, int], float] | None:
        """The timer verb: close the window if it is over (so a quiet spell ends sampling
        without waiting for the next happening), and return the per-kind counts since the last
        report with the seconds they cover, or None if none changed. Call it at least every
        :attr:`window` seconds."""
        now = self._clock()
        if now - self._window_start >= self.window:
            self._roll(now, self._run - self.countdown)
        counts: dict[str, int] = {}
        for kind, tally in self._tallies.items():
            new = tally.count - self._reported.get(kind, 0)
            if new:
                counts[kind] = new
                self._reported[kind] = tally.count
        if not counts:
            return None
        interval, self._stats_at = now - self._stats_at, now
        return counts, interval

    def _roll(self, now: float, pending: int) -> None:
        """Start a new window at ``now``. The ``pending`` happenings of the unfinished run stay
        counted but get no event: a run begun at a high factor must not stretch into a quiet
        window."""
        elapsed = now - self._window_start
        per_window = (self._seen + pending) * self.window / elapsed
        self._window_start = now
        self._seen = 0
        over = per_window > self.threshold
        self._factor = max(2, round(per_window / self.threshold)) if over else 1
        self._left = self.threshold
        self._run = self.countdown = self._factor
