"""Render endpoint events as RoomOS log lines, the format of the endpoint logs in the seed.

A line is ``<ISO 8601 UTC, milliseconds, +00:00> main[<pid>]: <text>``. The texts are copied from
the seed; the events are the source of truth and these lines only a view of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any


def timestamp(t: float) -> str:
    """``2025-07-13T10:19:27.683+00:00`` for a unix time, rounded to the millisecond."""
    # Integer milliseconds: a float such as 1752401967.683 is stored as ...682999 and would
    # otherwise print as .682.
    millis = round(t * 1000)
    seconds = datetime.fromtimestamp(millis // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{seconds}.{millis % 1000:03d}+00:00"


class _Fields:
    """Event fields for a template; a missing or null field renders as an empty string, so a
    malformed event still yields a readable line instead of breaking the log."""

    def __init__(self, event: Mapping[str, Any]) -> None:
        self._event = event

    def __getitem__(self, name: str) -> str:
        value = self._event.get(name)
        return "" if value is None else str(value)

    def flag(self, name: str, *, default: bool) -> bool:
        value = self._event.get(name)
        return default if value is None else bool(value)


def _located(f: _Fields) -> list[str]:
    return [
        f"DnsLocator I: locatedAt() Uri '{f['uri']}', profile 0, "
        f"strategy {f['strategy']}: {f['label']} '{f['target']}' (internal)"
    ]


def _restart(f: _Fields) -> list[str]:
    return [
        f"SipSubscriber I: [p=0] Need to resolve '{f['uri']}' before sending config to SIP stack "
        "(restarted locator)"
    ]


def _configured(_: _Fields) -> list[str]:
    return [
        "SipStack I: SIP config is new and 0 active sessions; reconfiguring SIP stack",
        "SipStack I: SIP stack successfully configured; now ready",
    ]


def _warning(f: _Fields) -> list[str]:
    return [f"SipPacket W: SIP Msg: {f['header']}"]


def _lost(f: _Fields) -> list[str]:
    return [
        f"SipReg W: SipTransport indicates that connection to {f['host']} was lost.",
        "SipStack I: Failed to find new default outbound proxy at present time.",
    ]


def _registration(f: _Fields) -> list[str]:
    status = (
        f"SipSubscriber I: [p=0] Registration Status: '{f['state']}', URI: '{f['aor']}', "
        f"Reason: '{f['reason']}'"
    )
    if f["state"] != "Registered":
        return [status]
    lines = [
        f"SipReg I: Registered as '{f['aor']}' to '{f['target']}'",
        f"SipStack I: Setting '{f['proxy']}'/{f['target']} as new default proxy",
        status,
    ]
    # In the seed RoomOS prints this only when the registration followed a failure (after the
    # 503 failover and the connection-lost failover, not after the first registrations), so the
    # endpoint says whether its locator was moved; absent means yes, the common case to show.
    if f.flag("reset_locator", default=True):
        lines.append("SipSubscriber I: Resetting locator since reg_ind.status is registered")
    return lines


_RENDERERS: dict[str, Callable[[_Fields], list[str]]] = {
    "dns.located": _located,
    "locator.restart": _restart,
    "stack.configured": _configured,
    "sip.warning": _warning,
    "transport.lost": _lost,
    "registration.state": _registration,
}


def render(event: Mapping[str, Any], *, pid: int) -> list[str]:
    """The RoomOS log lines for one event; ``[]`` for kinds RoomOS has no line for."""
    renderer = _RENDERERS.get(str(event.get("kind")))
    if renderer is None:
        return []
    t = event.get("t")
    prefix = f"{timestamp(t if isinstance(t, int | float) else 0.0)} main[{pid}]: "
    return [prefix + text for text in renderer(_Fields(event))]
