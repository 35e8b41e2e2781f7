"""Lab files for tests: each lab gets its own loopback /24, so labs run side by side.

The /24s come from a loopback /16 that this process (the session, or one xdist worker) claims
for itself (``emulator.lab.addresses``), so two test sessions on one machine never share an
address or a lab name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emulator.lab.addresses import next_block


def allocate_prefix() -> str:
    """``127.X.N``: a /24 no other test, worker or session on this machine is using."""
    return next_block().prefix


def lab_dict(prefix: str, name: str, **overrides: Any) -> dict[str, Any]:
    """The seed's lab on ``prefix``.x, with short registration times for tests."""
    lab: dict[str, Any] = {
        "name": name,
        "domain": "uctest.local",
        "dns": {"address": f"{prefix}.10", "port": 1053, "ttl": 5},
        "peers": [
            {"name": "exp1", "address": f"{prefix}.11"},
            {"name": "exp2", "address": f"{prefix}.12"},
        ],
        "registrar": {"min_expires": 1, "max_expires": 4, "default_expires": 4},
        "endpoints": [
            {
                "uri": "1001@uctest.local",
                "proxy": "uctest.local",
                "transport": "tcp",
                "address": f"{prefix}.101",
                "retry_base": 1,
                "retry_max": 4,
            }
        ],
    }
    lab.update(overrides)
    return lab


def fresh_lab_dict(**overrides: Any) -> dict[str, Any]:
    """A seed-layout lab on a fresh /24; a callable override gets the prefix first."""
    block = next_block()
    prefix = block.prefix
    lab = lab_dict(prefix, f"t{block.name}")
    for key, value in overrides.items():
        lab[key] = value(prefix) if callable(value) else value
    return lab


Match = Callable[[dict[str, Any]], bool]


def kind(name: str, component: str | None = None, **fields: Any) -> Match:
    """An event predicate: this kind, from this component if given, with these field values."""

    def match(event: dict[str, Any]) -> bool:
        return (
            event["kind"] == name
            and (component is None or event["component"] == component)
            and all(event.get(k) == v for k, v in fields.items())
        )

    return match
