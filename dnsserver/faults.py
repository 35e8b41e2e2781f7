"""DNS faults the lab can inject: the server goes silent, fails, or answers late.

A fault covers every name, or one name and everything below it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dnsserver.names import NameKey, is_within

FaultMode = Literal["none", "down", "servfail", "delay"]
MAX_DELAY = 300.0


@dataclass(frozen=True, slots=True)
class FaultSpec:
    mode: FaultMode
    scope: NameKey | None = None  # None: every name
    delay: float = 0.0


class Fault:
    """The fault in force, if any."""

    def __init__(self) -> None:
        self.spec = FaultSpec("none")

    @property
    def active(self) -> bool:
        return self.spec.mode != "none"

    def set(self, spec: FaultSpec) -> None:
        if spec.mode == "delay" and not 0 < spec.delay <= MAX_DELAY:
            raise ValueError(f"a delay fault needs 0 < delay <= {MAX_DELAY:g} seconds")
        self.spec = spec

    def applies(self, key: NameKey) -> FaultSpec | None:
        spec = self.spec
        if spec.mode == "none" or (spec.scope is not None and not is_within(key, spec.scope)):
            return None
        return spec

    def describe(self) -> dict[str, object]:
        spec = self.spec
        scope = None if spec.scope is None else ".".join(label.decode() for label in spec.scope)
        return {"mode": spec.mode, "name": scope, "delay": spec.delay}
