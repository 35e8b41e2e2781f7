"""In-process link faults, sans-I/O: partition and impairment of one component's traffic.

This kernel offers no netem and no root, so a component cuts or impairs its own links between
the socket and its core. :class:`LinkFaults` is the policy; the asyncio shells
(``emulator.sip.transport``, ``dnsserver.link``) only apply its verdicts. Clock and randomness
are injected: every method that needs the time takes ``now``, and jitter and loss draw from the
``random.Random`` given at construction (the ``impair`` op may reseed it).

What the faults mean:

* **Partition** (a scope: remote addresses and transports, ``None`` = all) — silence both ways
  while sockets stay open. A datagram to or from a matching remote is dropped. On a stream
  nothing is lost, as on a real cut link that heals before TCP gives up: the shell stops
  reading the connection (the kernel keeps the bytes) and outgoing messages are *held*, then
  delivered in order after the heal. Holding beats dropping because dropping a message from
  the middle of a TCP byte stream is something no real network can do.
* **Impairment** (per direction, ``in`` and ``out``, each with its own scope) — a delay plus
  uniform jitter in ``[-jitter, +jitter]`` (never below zero), and a loss probability.
  On UDP a lost datagram is dropped. On TCP/TLS a message is never dropped from the middle of
  the stream: each loss costs one retransmission timeout instead, starting at Linux's minimum
  RTO (200 ms, what a loopback RTT gives) and doubling up to 120 s, as TCP's backoff does;
  the message is dropped only past 15 retransmissions (``tcp_retries2``), where a real
  connection would be reset. Later messages on the stream wait behind a late one (head-of-line
  blocking), so a stream never delivers message n+1 before message n.
* **Heal** lifts both. Messages already in flight (delayed) still arrive at their time.

Per message, :meth:`LinkFaults.verdict` says: drop (``None``), deliver at ``T`` (``T <= now``:
now), or :data:`HELD` (partitioned stream: wait for a change). For callback-driven shells
:meth:`~LinkFaults.submit` queues a message with its verdict (timers as data):
:meth:`~LinkFaults.pop_due` hands back what is due, in order per stream, and
:meth:`~LinkFaults.next_timer` says when to wake. ``active`` is False when no fault is set and
nothing is queued, so a shell's hot path costs one attribute check.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import math
import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, Literal, Protocol, TypeVar

from emulator.kinds import Kind

Direction = Literal["in", "out"]
DIRECTIONS: tuple[Direction, ...] = ("in", "out")
TRANSPORTS = ("udp", "tcp", "tls")
LINK_OPS = ("partition", "heal", "impair")
MAX_DELAY = 300.0  # seconds; longer than any SIP or DNS timer the lab exercises
HELD = math.inf  # verdict: a partitioned stream's message, delivered after the heal
RTO_MIN = 0.2  # Linux TCP_RTO_MIN
RTO_MAX = 120.0  # Linux TCP_RTO_MAX
MAX_RETRANSMISSIONS = 15  # Linux tcp_retries2

P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class Scope:
    """Which traffic a fault covers: remote hosts and transports, ``None`` meaning all."""

    remotes: frozenset[str] | None = None
    transports: frozenset[str] | None = None

    def matches(self, transport: str, host: str) -> bool:
        return (self.transports is None or transport in self.transports) and (
            self.remotes is None or host in self.remotes
        )

    def describe(self) -> dict[str, Any]:
        return {
            "remotes": None if self.remotes is None else sorted(self.remotes),
            "transports": None if self.transports is None else sorted(self.transports),
        }


@dataclass(frozen=True, slots=True)
class Impairment:
    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    scope: Scope = Scope()

    def describe(self) -> dict[str, Any]:
        return {
            "delay": self.delay,
            "jitter": self.jitter,
            "loss": self.loss,
            **self.scope.describe(),
        }


@dataclass(frozen=True, slots=True)
class Pending(Generic[P]):
    """A message on its way through the link; ``lane`` is its stream (None: a datagram)."""

    direction: Direction
    transport: str
    host: str
    lane: Hashable | None
    payload: P


_Entry = tuple[float, int, Pending[P]]


class LinkFaults(Generic[P]):
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.partitioned: Scope | None = None
        self.impaired: dict[Direction, Impairment | None] = {"in": None, "out": None}
        self.active = False
        self._queue: list[_Entry[P]] = []
        self._seq = itertools.count()
        # Per (lane, direction): the delivery time of its latest queued message. A later one is
        # never due earlier, and (time, seq) order then equals arrival order within the lane.
        self._last: dict[tuple[Hashable, Direction], float] = {}
        # Per (lane, direction): messages that fell due while their stream was partitioned.
        self._held: dict[tuple[Hashable, Direction], list[_Entry[P]]] = {}

    # -- control ---------------------------------------------------------------------------

    def control(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Apply one control op (``partition``, ``heal``, ``impair``); returns :meth:`state`.

        Raises ValueError with a one-line message for bad arguments, changing nothing."""
        if op == "partition":
            _known(args, ("remotes", "transports"))
            self.partitioned = _scope(args)
        elif op == "heal":
            _known(args, ())
            self.partitioned = None
            self.impaired = {"in": None, "out": None}
        elif op == "impair":
            directions, impairment, seed = _impairment(args)
            if seed is not None:
                self.rng.seed(seed)
            for direction in directions:
                self.impaired[direction] = impairment
        else:
            raise ValueError(f"unknown link op {op!r}; link ops are: {', '.join(LINK_OPS)}")
        self._release()
        self._settle()
        return self.state()

    def state(self) -> dict[str, Any]:
        return {
            "partition": None if self.partitioned is None else self.partitioned.describe(),
            "impair": {d: None if i is None else i.describe() for d, i in self.impaired.items()},
        }

    # -- per message -----------------------------------------------------------------------

    def blocks(self, transport: str, host: str) -> bool:
        """Whether a partition cuts this remote (a stream shell stops reading it)."""
        return self.partitioned is not None and self.partitioned.matches(transport, host)

    def verdict(self, direction: Direction, transport: str, host: str, now: float) -> float | None:
        """When one message may pass: ``None`` = dropped, :data:`HELD` = after the heal."""
        if self.blocks(transport, host):
            return None if transport == "udp" else HELD
        return self._impaired(direction, transport, host, now)

    def submit(
        self,
        direction: Direction,
        transport: str,
        host: str,
        lane: Hashable | None,
        payload: P,
        now: float,
    ) -> bool:
        """Queue a message (``lane``: its stream, None for a datagram); False if it was lost.

        Collect it, when due, from :meth:`pop_due`."""
        if lane is None and self.blocks(transport, host):
            return False
        at = self._impaired(direction, transport, host, now)
        if at is None:
            return False
        if lane is not None:
            key = (lane, direction)
            at = max(at, self._last.get(key, at))
            self._last[key] = at
        heapq.heappush(
            self._queue, (at, next(self._seq), Pending(direction, transport, host, lane, payload))
        )
        self.active = True
        return True

    def pop_due(self, now: float) -> list[Pending[P]]:
        """Messages due by ``now``, in delivery order (per stream: arrival order)."""
        due: list[Pending[P]] = []
        queue = self._queue
        while queue and queue[0][0] <= now:
            entry = heapq.heappop(queue)
            item = entry[2]
            if self.blocks(item.transport, item.host):
                # The link was cut while the message was in flight: a datagram is lost, a
                # stream's message waits for the heal (TCP would retransmit it).
                if item.lane is not None:
                    self._held.setdefault((item.lane, item.direction), []).append(entry)
                continue
            due.append(item)
        self._settle()
        return due

    def next_timer(self) -> float | None:
        return self._queue[0][0] if self._queue else None

    def forget(self, lane: Hashable) -> None:
        """A stream is gone: drop what is held for it."""
        for direction in DIRECTIONS:
            self._last.pop((lane, direction), None)
            self._held.pop((lane, direction), None)
        self._settle()

    # -- internals -------------------------------------------------------------------------

    def _impaired(
        self, direction: Direction, transport: str, host: str, now: float
    ) -> float | None:
        impairment = self.impaired[direction]
        if impairment is None or not impairment.scope.matches(transport, host):
            return now
        rng = self.rng
        extra = 0.0
        if impairment.loss:
            if transport == "udp":
                if rng.random() < impairment.loss:
                    return None
            else:
                rto = RTO_MIN
                for _ in range(MAX_RETRANSMISSIONS + 1):
                    if rng.random() >= impairment.loss:
                        break
                    extra += rto
                    rto = min(2 * rto, RTO_MAX)
                else:
                    return None
        delay = impairment.delay
        if impairment.jitter:
            delay = max(0.0, delay + rng.uniform(-impairment.jitter, impairment.jitter))
        return now + delay + extra

    def _release(self) -> None:
        """Put held messages whose stream is no longer cut back in the queue, times kept."""
        for key, entries in list(self._held.items()):
            item = entries[0][2]
            if not self.blocks(item.transport, item.host):
                del self._held[key]
                for entry in entries:
                    heapq.heappush(self._queue, entry)

    def _settle(self) -> None:
        if not self._queue:
            # Nothing in flight: every later message is due no earlier than now, so the
            # per-lane floors carry no information (and must not grow without bound).
            self._last.clear()
        self.active = bool(
            self.partitioned is not None
            or self.impaired["in"] is not None
            or self.impaired["out"] is not None
            or self._queue
            or self._held
        )


# -- control op arguments ----------------------------------------------------------------


def _known(args: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        expected = ", ".join(allowed) if allowed else "none"
        raise ValueError(f"unknown argument {unknown[0]!r} (expected: {expected})")


def _scope(args: dict[str, Any]) -> Scope:
    remotes = args.get("remotes")
    transports = args.get("transports")
    if remotes is not None:
        if not isinstance(remotes, list) or not remotes:
            raise ValueError("'remotes' must be a non-empty list of IP addresses, or null for all")
        hosts = set()
        for remote in remotes:
            try:
                hosts.add(str(ipaddress.ip_address(remote)))
            except ValueError:
                raise ValueError(f"'remotes': {remote!r} is not an IP address") from None
        remotes = frozenset(hosts)
    if transports is not None:
        if (
            not isinstance(transports, list)
            or not transports
            or not all(isinstance(t, str) and t in TRANSPORTS for t in transports)
        ):
            raise ValueError(
                f"'transports' must be a non-empty list of {', '.join(TRANSPORTS)}, or null for all"
            )
        transports = frozenset(transports)
    return Scope(remotes, transports)


def _number(args: dict[str, Any], name: str, high: float) -> float:
    value = args.get(name, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= high:
        raise ValueError(f"{name!r} must be a number from 0 to {high:g}")
    return float(value)


def _impairment(
    args: dict[str, Any],
) -> tuple[tuple[Direction, ...], Impairment | None, int | None]:
    _known(args, ("direction", "delay", "jitter", "loss", "remotes", "transports", "seed"))
    direction = args.get("direction", "both")
    if direction not in ("in", "out", "both"):
        raise ValueError("'direction' must be 'in', 'out' or 'both'")
    seed = args.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError("'seed' must be an integer or null")
    impairment = Impairment(
        _number(args, "delay", MAX_DELAY),
        _number(args, "jitter", MAX_DELAY),
        _number(args, "loss", 1.0),
        _scope(args),
    )
    # No delay, jitter or loss: nothing to impair, so the direction is cleared.
    nothing = not (impairment.delay or impairment.jitter or impairment.loss)
    directions: tuple[Direction, ...] = DIRECTIONS if direction == "both" else (direction,)
    return directions, None if nothing else impairment, seed


# -- wiring into a component -------------------------------------------------------------


class _Commands(Protocol):
    def on_command(self, op: str, handler: Callable[[dict[str, Any]], Any]) -> None: ...

    def emit(self, kind: str, /, **fields: Any) -> None: ...


def register_link_ops(
    ctx: _Commands, control: Callable[[str, dict[str, Any]], dict[str, Any]]
) -> None:
    """Register ``partition``, ``heal`` and ``impair``; each replies with the link state and
    emits it as one ``link.changed`` event. ``control`` applies the op (a shell's wrapper
    around :meth:`LinkFaults.control`)."""
    for op in LINK_OPS:
        ctx.on_command(op, partial(_link_op, ctx, control, op))


def _link_op(
    ctx: _Commands,
    control: Callable[[str, dict[str, Any]], dict[str, Any]],
    op: str,
    args: dict[str, Any],
) -> dict[str, Any]:
    state = control(op, args)
    ctx.emit(Kind.LINK_CHANGED, **state)
    return state
