"""Bindings per address-of-record, with expiry (RFC 3261 §10.3) and flows (RFC 5626)."""

from __future__ import annotations

from dataclasses import dataclass

from emulator.deadlines import Deadlines
from emulator.sip.transport import Flow

# (scheme, user, host, port, transport): what RFC 3261 §19.1.4 URI comparison mostly boils
# down to for contacts; two contacts that compare equal are one binding.
ContactKey = tuple[str, str | None, str, int | None, str | None]
# RFC 5626 §6: an outbound binding is named by the instance and reg-id, not by its URI, so a
# client that comes back over a new flow (new port) replaces its binding instead of adding one.
OutboundKey = tuple[str, int]
BindingKey = ContactKey | OutboundKey


@dataclass(slots=True)
class Binding:
    aor: str
    contact: str  # the Contact URI as the endpoint sent it
    key: BindingKey
    expires_at: float
    call_id: str
    cseq: int
    flow: Flow  # the flow the REGISTER came in on
    instance: str | None = None  # +sip.instance, for an outbound binding
    reg_id: int | None = None

    @property
    def outbound(self) -> bool:
        return self.reg_id is not None

    @property
    def source(self) -> str:
        """``transport ip:port`` the REGISTER came from."""
        return f"{self.flow.transport} {self.flow.remote[0]}:{self.flow.remote[1]}"

    def remaining(self, now: float) -> int:
        return max(0, round(self.expires_at - now))

    def to_dict(self, now: float) -> dict[str, object]:
        return {
            "aor": self.aor,
            "contact": self.contact,
            "expires": self.remaining(now),
            "source": self.source,
            "flow": str(self.flow),
            "instance": self.instance,
            "reg_id": self.reg_id,
        }


class BindingStore:
    def __init__(self) -> None:
        self._by_aor: dict[str, dict[BindingKey, Binding]] = {}
        self._expiry: Deadlines[tuple[str, BindingKey]] = Deadlines()
        # Outbound bindings by flow: a flow that closes ends them at once (RFC 5626 §6).
        self._by_flow: dict[Flow, set[tuple[str, BindingKey]]] = {}

    def __len__(self) -> int:
        return len(self._expiry)

    @property
    def aors(self) -> int:
        return len(self._by_aor)

    def has_aor(self, aor: str) -> bool:
        return aor in self._by_aor

    def get(self, aor: str, key: BindingKey) -> Binding | None:
        return self._by_aor.get(aor, {}).get(key)

    def for_aor(self, aor: str) -> list[Binding]:
        return list(self._by_aor.get(aor, {}).values())

    def all(self) -> list[Binding]:
        return [b for bindings in self._by_aor.values() for b in bindings.values()]

    def put(self, binding: Binding) -> None:
        ref = (binding.aor, binding.key)
        old = self.get(*ref)
        if old is not None:
            self._unlink(old)
        self._by_aor.setdefault(binding.aor, {})[binding.key] = binding
        self._expiry.set(ref, binding.expires_at)
        if binding.outbound:
            self._by_flow.setdefault(binding.flow, set()).add(ref)

    def refresh(
        self,
        binding: Binding,
        contact: str,
        expires_at: float,
        call_id: str,
        cseq: int,
        flow: Flow,
    ) -> None:
        """``binding`` (held here) registered again: updated in place, as a refresh changes no
        key, and refreshes are most of a registrar's work."""
        if binding.outbound and binding.flow != flow:
            self._unlink(binding)
            self._by_flow.setdefault(flow, set()).add((binding.aor, binding.key))
        binding.contact = contact
        binding.expires_at = expires_at
        binding.call_id = call_id
        binding.cseq = cseq
        binding.flow = flow
        self._expiry.set((binding.aor, binding.key), expires_at)

    def restore(self, binding: Binding) -> bool:
        """Put back a binding held before a restart (learned from the cluster), unless one
        with its key is already here: what the client told us since is newer. Returns whether
        it was put back."""
        if self.get(binding.aor, binding.key) is not None:
            return False
        self.put(binding)
        return True

    def remove(self, aor: str, key: BindingKey) -> Binding | None:
        bindings = self._by_aor.get(aor)
        if bindings is None or key not in bindings:
            return None
        binding = bindings.pop(key)
        if not bindings:
            del self._by_aor[aor]
        self._expiry.cancel((aor, key))
        self._unlink(binding)
        return binding

    def on_flow(self, flow: Flow) -> list[Binding]:
        """The outbound bindings that live on ``flow``."""
        refs = self._by_flow.get(flow, ())
        return [b for aor, key in refs if (b := self.get(aor, key)) is not None]

    def next_expiry(self) -> float | None:
        return self._expiry.next()

    def expire(self, now: float) -> list[Binding]:
        gone: list[Binding] = []
        for aor, key in self._expiry.pop_due(now):
            bindings = self._by_aor.get(aor, {})
            binding = bindings.pop(key, None)
            if not bindings:
                self._by_aor.pop(aor, None)
            if binding is not None:
                self._unlink(binding)
                gone.append(binding)
        return gone

    def _unlink(self, binding: Binding) -> None:
        if not binding.outbound:
            return
        refs = self._by_flow.get(binding.flow)
        if refs is not None:
            refs.discard((binding.aor, binding.key))
            if not refs:
                del self._by_flow[binding.flow]
