"""Lab files for tests: each lab gets its own loopback /24, so labs run side by side."""

from __future__ import annotations

import itertools
import os
from typing import Any

_blocks = itertools.count(1)


def allocate_prefix() -> str:
    """127.<100+worker>.<n>: unique per test and per xdist worker."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    block = next(_blocks)
    if block > 250:
        raise RuntimeError("out of loopback blocks for this worker")
    return f"127.{100 + worker}.{block}"


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
    prefix = allocate_prefix()
    lab = lab_dict(prefix, f"t{prefix.replace('.', '-')}")
    for key, value in overrides.items():
        lab[key] = value(prefix) if callable(value) else value
    return lab
