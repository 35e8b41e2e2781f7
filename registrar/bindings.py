"""Bindings per address-of-record, with expiry (RFC 3261 §10.3)."""

from __future__ import annotations

from dataclasses import dataclass

from emulator.deadlines import Deadlines

# (scheme, user, host, port, transport): what RFC 3261 §19.1.4 URI comparison mostly boils
# down to for contacts; two contacts that compare equal are one binding.
ContactKey = tuple[str, str | None, str, int | None, str | None]


@dataclass(slots=True)
class Binding:
    aor: str
    contact: str  # the Contact URI as the endpoint sent it
    key: ContactKey
    expires_at: float
    call_id: str
    cseq: int
    source: str  # "transport ip:port" the REGISTER came from

    def remaining(self, now: float) -> int:
        return max(0, round(self.expires_at - now))


class BindingStore:
    def __init__(self) -> None:
        self._by_aor: dict[str, dict[ContactKey, Binding]] = {}
        self._expiry: Deadlines[tuple[str, ContactKey]] = Deadlines()

    def __len__(self) -> int:
        return len(self._expiry)

    def get(self, aor: str, key: ContactKey) -> Binding | None:
        return self._by_aor.get(aor, {}).get(key)

    def for_aor(self, aor: str) -> list[Binding]:
        return list(self._by_aor.get(aor, {}).values())

    def all(self) -> list[Binding]:
        return [b for bindings in self._by_aor.values() for b in bindings.values()]

    def put(self, binding: Binding) -> None:
        self._by_aor.setdefault(binding.aor, {})[binding.key] = binding
        self._expiry.set((binding.aor, binding.key), binding.expires_at)

    def remove(self, aor: str, key: ContactKey) -> Binding | None:
        bindings = self._by_aor.get(aor)
        if bindings is None or key not in bindings:
            return None
        binding = bindings.pop(key)
        if not bindings:
            del self._by_aor[aor]
        self._expiry.cancel((aor, key))
        return binding

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
                gone.append(binding)
        return gone
