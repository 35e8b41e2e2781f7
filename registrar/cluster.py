"""The cluster-wide binding view, sans-I/O: which peer holds which binding, and doubles.

Each peer knows its own bindings (the shell calls :meth:`ClusterView.local` with an AOR's
bindings whenever they change) and keeps a replica of the other peers', keyed by (peer, AOR,
binding key) -> entry with an expiry on its own clock; those come over the peer link
(:meth:`receive`) and run out at their own expiry. The shell sends what :meth:`pop_outgoing`
returns to every connected peer, :meth:`hello` to a peer when a link opens, and restores into
its store what :meth:`pop_restores` returns.

Rules, so a reader can check them without the shell:

* A peer is the authority on its own bindings: its ``hello`` snapshot replaces what we knew
  of it, and each of its ``aor`` updates replaces what we knew of its bindings of that AOR.
  An update carries the AOR's bindings as they are when it is sent, so updates of one AOR
  that pile up between two sends go as one, and the last one sent is the truth.
* Entries of a peer whose link is down are kept until they expire (they are what a restarted
  peer learns back) but count for nothing else: not bound there any more, not a double.
* Entries for *us* in the first snapshot a peer sends after we started are bindings we held
  before a restart: those we do not hold now are handed to the shell to restore, with their
  remaining time, except RFC 5626 outbound bindings (they ended with their flow) and those of
  an AOR now bound on a live peer (its client registered there after we went away; restoring
  it would make a double registration that is not one). An AOR with several devices, one of
  them registered elsewhere, is not restored either: the devices register again.
* Other peers' entries in a snapshot (a third peer we have no link to) merge by
  last-writer-wins on expiry.
* An AOR bound on more than one live peer (us or a connected peer) is a double: a
  ``cluster.double`` event when it starts (or its peers change) and when it ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from emulator.deadlines import Deadlines
from emulator.events import EventSink
from emulator.kinds import Kind
from emulator.sip.transport import Flow, TransportName
from registrar.bindings import Binding, BindingKey

# (peer, aor, binding key): a key is a flat tuple of str, int and None, so it hashes as it is.
Ref = tuple[str, str, tuple[Any, ...]]
Message = dict[str, Any]


class ClusterProtocolError(ValueError):
    """A peer sent something that is not a cluster message; the shell drops its link."""


# Not frozen: a frozen dataclass sets each field through object.__setattr__, and one Entry is
# built per binding event (entries are replaced whole, never changed in place).
@dataclass(slots=True)
class Entry:
    peer: str
    aor: str
    key: tuple[Any, ...]
    contact: str
    expires_at: float  # on the holder's clock
    source: str  # "transport ip:port" the REGISTER came from
    call_id: str
    cseq: int
    instance: str | None = None
    reg_id: int | None = None

    @property
    def ref(self) -> Ref:
        return (self.peer, self.aor, self.key)

    def to_wire(self, now: float) -> Message:
        """Expiry travels as remaining seconds: the peers' clocks are not compared."""
        return {
            "peer": self.peer,
            "aor": self.aor,
            "key": list(self.key),
            "contact": self.contact,
            "expires": max(0.0, self.expires_at - now),
            "source": self.source,
            "call_id": self.call_id,
            "cseq": self.cseq,
            "instance": self.instance,
            "reg_id": self.reg_id,
        }

    @classmethod
    def from_wire(cls, data: object, now: float) -> Entry:
        if not isinstance(data, dict):
            raise ClusterProtocolError("an entry is not an object")
        try:
            expires = float(data["expires"])
            entry = cls(
                peer=_text(data["peer"]),
                aor=_text(data["aor"]),
                key=tuple(_key(data["key"])),
                contact=_text(data["contact"]),
                expires_at=now + expires,
                source=_text(data["source"]),
                call_id=str(data["call_id"]),
                cseq=int(data["cseq"]),
                instance=None if data.get("instance") is None else str(data["instance"]),
                reg_id=None if data.get("reg_id") is None else int(data["reg_id"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ClusterProtocolError(f"bad entry: {exc!r}") from None
        if not math.isfinite(expires) or expires < 0:
            raise ClusterProtocolError(f"bad expires {expires!r}")
        return entry

    def view(self, now: float) -> dict[str, object]:
        return {
            "peer": self.peer,
            "aor": self.aor,
            "contact": self.contact,
            "expires": max(0, round(self.expires_at - now)),
            "source": self.source,
            "instance": self.instance,
            "reg_id": self.reg_id,
        }


def entry_of(peer: str, binding: Binding) -> Entry:
    return Entry(
        peer,
        binding.aor,
        tuple(binding.key),
        binding.contact,
        binding.expires_at,
        binding.source,
        binding.call_id,
        binding.cseq,
        binding.instance,
        binding.reg_id,
    )


def binding_of(entry: Entry, local: tuple[str, int]) -> Binding:
    """A binding to restore: it came in on a flow of our previous life, so its flow is only a
    record of where the REGISTER came from (``local`` is our SIP address)."""
    transport, _, remote = entry.source.partition(" ")
    host, _, port = remote.rpartition(":")
    name: TransportName = "tcp" if transport == "tcp" else "tls" if transport == "tls" else "udp"
    flow = Flow(name, local, (host, int(port)))
    key: BindingKey = entry.key  # type: ignore[assignment]
    return Binding(
        entry.aor,
        entry.contact,
        key,
        entry.expires_at,
        entry.call_id,
        entry.cseq,
        flow,
        entry.instance,
        entry.reg_id,
    )


class ClusterView:
    def __init__(self, me: str, events: EventSink, *, replicate: bool = True) -> None:
        self.me = me
        self._events = events
        # False for a peer with no peer link: nobody would ever take the updates off the queue.
        self._replicate = replicate
        # Our own bindings, as the shell last gave them, per AOR: the store's own objects, so
        # a refresh costs the view one dict store; entries are made of them only to be sent.
        self._mine: dict[str, list[Binding]] = {}
        # AORs whose bindings changed since the last pop_outgoing (an ordered set).
        self._dirty: dict[str, None] = {}
        # Other peers' entries, and their refs per AOR.
        self._entries: dict[Ref, Entry] = {}
        self._by_aor: dict[str, set[Ref]] = {}
        self._expiry: Deadlines[Ref] = Deadlines()
        self._up: set[str] = set()
        self._greeted: set[str] = set()  # peers whose first snapshot we have had
        self._doubles: dict[str, tuple[str, ...]] = {}
        self._restores: list[Entry] = []

    # -- our own bindings --------------------------------------------------------------

    def local(self, aor: str, bindings: list[Binding]) -> None:
        """``aor``'s bindings in our store are now ``bindings``."""
        if bindings:
            self._mine[aor] = bindings
        else:
            self._mine.pop(aor, None)
        if self._replicate:
            self._dirty[aor] = None
        if aor in self._by_aor or aor in self._doubles:
            self._check_double(aor)

    def hello(self, now: float) -> Message:
        """What we send first on a new link: who we are and everything we know."""
        return {
            "op": "hello",
            "peer": self.me,
            "entries": [e.to_wire(now) for e in self._own_entries()]
            + [e.to_wire(now) for e in self._entries.values()],
        }

    # -- the peer link -----------------------------------------------------------------

    def receive(self, peer: str | None, message: object, now: float) -> str:
        """Apply one message from the link to ``peer`` (None before its hello); returns the
        peer's name, which a ``hello`` sets."""
        if not isinstance(message, dict):
            raise ClusterProtocolError("a message is not an object")
        op = message.get("op")
        if op == "hello":
            return self._hello(message, now)
        if peer is None:
            raise ClusterProtocolError(f"{op!r} before hello")
        if op == "aor":
            aor = _text(message.get("aor"))
            raw = message.get("entries")
            if not isinstance(raw, list):
                raise ClusterProtocolError("an aor update without an entries list")
            entries = [Entry.from_wire(item, now) for item in raw]
            if any(entry.peer != peer or entry.aor != aor for entry in entries):
                raise ClusterProtocolError(f"{peer} sent an entry not of its own for {aor}")
            for ref in [r for r in self._by_aor.get(aor, ()) if r[0] == peer]:
                self._drop(ref)
            for entry in entries:
                self._put(entry)
            self._check_double(aor)
        elif op != "ping":
            raise ClusterProtocolError(f"unknown op {op!r}")
        return peer

    def peer_down(self, peer: str, reason: str) -> None:
        """The link to ``peer`` closed: its entries stay until they expire, but no longer
        count as bound."""
        if peer not in self._up:
            return
        self._up.discard(peer)
        self._events.emit(Kind.CLUSTER_LEFT, peer=peer, reason=reason)
        for aor in self._aors_of(peer):
            self._check_double(aor)

    def _hello(self, message: Message, now: float) -> str:
        peer = _text(message.get("peer"))
        if peer == self.me:
            raise ClusterProtocolError(f"a peer calls itself {peer!r}, our own name")
        raw = message.get("entries")
        if not isinstance(raw, list):
            raise ClusterProtocolError("hello without an entries list")
        entries = [Entry.from_wire(item, now) for item in raw]
        first = peer not in self._greeted
        self._greeted.add(peer)
        touched = set(self._aors_of(peer))
        for ref in [r for r in self._entries if r[0] == peer]:
            self._drop(ref)
        for entry in entries:
            touched.add(entry.aor)
            if entry.peer == peer:
                self._put(entry)
            elif entry.peer != self.me and entry.peer not in self._up:
                held = self._entries.get(entry.ref)
                if held is None or held.expires_at < entry.expires_at:
                    self._put(entry)
        self._up.add(peer)
        if first:
            self._restores.extend(
                entry
                for entry in entries
                if entry.peer == self.me
                and entry.reg_id is None
                and not self._holds(entry.aor, entry.key)
                and not self._bound_elsewhere(entry.aor)
            )
        self._events.emit(Kind.CLUSTER_JOINED, peer=peer, bindings=len(entries))
        for aor in touched:
            self._check_double(aor)
        return peer

    # -- sans-I/O verbs ----------------------------------------------------------------

    def pop_outgoing(self, now: float) -> list[Message]:
        """What the peers must hear: each changed AOR's bindings as they are now (a burst of
        refreshes of one AOR is one message)."""
        if not self._dirty:
            return []
        dirty, self._dirty = self._dirty, {}
        me, mine = self.me, self._mine
        return [
            {
                "op": "aor",
                "aor": aor,
                "entries": [entry_of(me, b).to_wire(now) for b in mine.get(aor, ())],
            }
            for aor in dirty
        ]

    def drop_outgoing(self) -> None:
        """Forget the pending updates: there is no link to send them on."""
        self._dirty.clear()

    def pop_restores(self) -> list[Entry]:
        out, self._restores = self._restores, []
        return out

    def next_timer(self) -> float | None:
        return self._expiry.next()

    def handle_timer(self, now: float) -> None:
        aors = set()
        for ref in self._expiry.pop_due(now):
            self._drop(ref)
            aors.add(ref[1])
        for aor in aors:
            self._check_double(aor)

    # -- queries -----------------------------------------------------------------------

    @property
    def peers_up(self) -> list[str]:
        return sorted(self._up)

    def bound(self, aor: str) -> list[str]:
        """The live peers ``aor`` is bound on."""
        peers = {r[0] for r in self._by_aor.get(aor, ()) if r[0] in self._up}
        if aor in self._mine:
            peers.add(self.me)
        return sorted(peers)

    def doubles(self) -> list[dict[str, object]]:
        return [{"aor": aor, "peers": list(peers)} for aor, peers in sorted(self._doubles.items())]

    def status(self, now: float) -> dict[str, object]:
        return {
            "peers_up": self.peers_up,
            "bindings": [{**e.view(now), "live": True} for e in self._own_entries()]
            + [{**e.view(now), "live": e.peer in self._up} for e in self._entries.values()],
            "doubles": self.doubles(),
        }

    # -- internals ---------------------------------------------------------------------

    def _own_entries(self) -> list[Entry]:
        me = self.me
        return [entry_of(me, b) for bindings in self._mine.values() for b in bindings]

    def _holds(self, aor: str, key: tuple[Any, ...]) -> bool:
        return any(tuple(b.key) == key for b in self._mine.get(aor, ()))

    def _put(self, entry: Entry) -> None:
        ref = entry.ref
        self._entries[ref] = entry
        self._by_aor.setdefault(entry.aor, set()).add(ref)
        self._expiry.set(ref, entry.expires_at)

    def _drop(self, ref: Ref) -> None:
        if self._entries.pop(ref, None) is None:
            return
        self._expiry.cancel(ref)
        refs = self._by_aor[ref[1]]
        refs.discard(ref)
        if not refs:
            del self._by_aor[ref[1]]

    def _bound_elsewhere(self, aor: str) -> bool:
        """``aor`` is bound on a live peer other than us: its client registered there after
        we went away, so what we held for it is stale."""
        return any(r[0] in self._up for r in self._by_aor.get(aor, ()))

    def _aors_of(self, peer: str) -> list[str]:
        return list({r[1] for r in self._entries if r[0] == peer})

    def _check_double(self, aor: str) -> None:
        peers = tuple(self.bound(aor))
        was = self._doubles.get(aor)
        if len(peers) > 1 and peers != was:
            self._doubles[aor] = peers
            self._events.emit(Kind.CLUSTER_DOUBLE, aor=aor, on=True, peers=list(peers))
        elif len(peers) <= 1 and was is not None:
            del self._doubles[aor]
            self._events.emit(Kind.CLUSTER_DOUBLE, aor=aor, on=False, peers=list(peers))


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ClusterProtocolError(f"expected a non-empty string, got {value!r}")
    return value


def _key(value: object) -> list[Any]:
    if not isinstance(value, list) or not all(
        v is None or isinstance(v, (str, int)) for v in value
    ):
        raise ClusterProtocolError(f"bad binding key {value!r}")
    return value
