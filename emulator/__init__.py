"""siplab's shared ground floor (SIP core, events, component scaffold) and, in ``emulator.lab``,
the lab itself. ``from emulator import Lab`` is the Python API (see ``emulator.lab.api``); it is
imported on first use, so components that only need the ground floor do not load it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emulator.lab.api import Lab, LabTimeout, SyncLab

__all__ = ["Lab", "LabTimeout", "SyncLab"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from emulator.lab import api

        return getattr(api, name)
    raise AttributeError(f"module 'emulator' has no attribute {name!r}")
