"""The event schema: every component reports what happened as one JSON object per line.

An event is ``{"t": <unix time>, "component": <name>, "kind": <dotted kind>, ...fields}``.
Status views, failover measurements, RoomOS log lines and test assertions are all computed
from these events, so a field that matters downstream must be in the event, not only in a log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from emulator.eventrate import RateGovernor
from emulator.kinds import Kind

RESERVED = ("t", "component", "kind")
# One encoder for every event: json.dumps with arguments builds a new one per call.
_ENCODE = json.JSONEncoder(separators=(",", ":"), default=str).encode


@dataclass(frozen=True, slots=True)
class Event:
    t: float
    component: str
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)
    # The line an event was parsed from, written out again as is: the supervisor passes every
    # component event on to events.jsonl, and encoding it a second time was a quarter of its
    # CPU per event. Not an init field, so ``dataclasses.replace`` never carries a stale one.
    line: str | None = field(default=None, init=False, compare=False, repr=False)

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)

    def to_dict(self) -> dict[str, Any]:
        return {"t": self.t, "component": self.component, "kind": self.kind, **self.fields}

    def to_json(self) -> str:
        if self.line is not None:
            return self.line
        return _ENCODE({"t": self.t, "component": self.component, "kind": self.kind, **self.fields})

    @classmethod
    def from_dict(cls, obj: Any) -> Event:
        if not isinstance(obj, dict):
            raise ValueError("an event must be a JSON object")
        t, component, kind = obj.get("t"), obj.get("component"), obj.get("kind")
        if not isinstance(t, int | float) or not isinstance(component, str):
            raise ValueError("an event needs a numeric 't' and a string 'component'")
        if not isinstance(kind, str) or not kind:
            raise ValueError("an event needs a non-empty string 'kind'")
        fields = {k: v for k, v in obj.items() if k not in RESERVED}
        return cls(float(t), component, kind, fields)

    @classmethod
    def from_json(cls, line: str | bytes) -> Event:
        try:
            text = line.decode() if isinstance(line, bytes) else line
            obj = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a JSON event line: {exc}") from None
        event = cls.from_dict(obj)
        # json.loads took it, so it is one JSON object; kept only if it is also one line for
        # every reader (ASCII, as our encoder writes: no U+2028 that splitlines() breaks on).
        text = text.strip()
        if text.isascii() and "\n" not in text and "\r" not in text:
            object.__setattr__(event, "line", text)
        return event


class EventSink(Protocol):
    """Where a component's core reports what happened."""

    def emit(self, kind: str, /, **fields: Any) -> None: ...


class Emitter:
    """Stamps events with a component name and a wall-clock time and hands them to ``write``.

    Wall-clock (not monotonic) time, because events from separate processes are merged and
    compared by the supervisor. With a :class:`RateGovernor`, ``HIGH`` kinds are counted and
    sampled under load (a sampled event carries ``sample=N``), and :meth:`report` emits the
    counts as one ``stats`` event; ``STATE`` kinds always go straight through.
    """

    def __init__(
        self,
        component: str,
        write: Callable[[Event], None],
        clock: Callable[[], float] = time.time,
        governor: RateGovernor | None = None,
    ) -> None:
        self.component = component
        self.governor = governor
        self._write = write
        self._clock = clock

    def emit(self, kind: str, /, **fields: Any) -> None:
        governor = self.governor
        if governor is not None and kind in governor.governed:
            sample = governor.admit(kind)
            if not sample:
                return
            if sample > 1:
                fields["sample"] = sample
        self._write(Event(self._clock(), self.component, kind, fields))

    def report(self) -> None:
        """Emit the governor's counts since its last report, if any changed."""
        if self.governor is None:
            return
        stats = self.governor.tick()
        if stats is not None:
            counts, interval = stats
            self._write(
                Event(
                    self._clock(),
                    self.component,
                    Kind.STATS,
                    {"counts": counts, "interval": round(interval, 3)},
                )
            )


class EventList:
    """An in-memory sink, for cores under unit test and for in-process use."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, kind: str, /, **fields: Any) -> None:
        self.events.append((kind, fields))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [fields for k, fields in self.events if k == kind]
