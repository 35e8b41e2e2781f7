"""RoomOS rendering against the endpoint log snippets at the end of the seed.

The expected lines are copied from seed/000_685818f4d6974dab.txt (in the seed, the option-2
"strategy 4" line and the "SIP config is new" line after it are glued into one line; they are
split here). Lines siplab has no event for (CuilApp's configuration change) are left out.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from endpoint.roomos import render, timestamp

PID = 2467
AOR = "1001@uctest.local"
CLUSTER = "habibexpc-cluster.uctest.local"

OPTION1_REGISTRATION = [
    "2025-07-13T10:19:27.683+00:00 main[2467]: "
    "DnsLocator I: locatedAt() Uri 'uctest.local', profile 0, strategy 1: tls"
    " '10.48.53.127:5061' (internal)",
    "2025-07-13T10:19:27.683+00:00 main[2467]: "
    "DnsLocator I: locatedAt() Uri 'uctest.local', profile 0, strategy 1: tls"
    " '10.48.53.128:5061' (internal)",
    "2025-07-13T10:19:27.740+00:00 main[2467]: "
    "DnsLocator I: locatedAt() Uri 'uctest.local', profile 0, strategy 2: tcp"
    " '10.48.53.127:5060' (internal)",
    "2025-07-13T10:19:28.349+00:00 main[2467]: "
    "SipSubscriber I: [p=0] Registration Status: 'Registering', URI:"
    " '1001@uctest.local', Reason: ''",
    "2025-07-13T10:19:28.439+00:00 main[2467]: "
    "SipReg I: Registered as '1001@uctest.local' to '10.48.53.127:5060'",
    "2025-07-13T10:19:28.439+00:00 main[2467]: "
    "SipStack I: Setting 'uctest.local'/10.48.53.127:5060 as new default proxy",
    "2025-07-13T10:19:28.440+00:00 main[2467]: "
    "SipSubscriber I: [p=0] Registration Status: 'Registered', URI:"
    " '1001@uctest.local', Reason: ''",
]
OPTION1_MAINTENANCE_FAILOVER = [
    "2025-07-13T10:25:30.840+00:00 main[2467]: "
    'SipPacket W: SIP Msg: Warning: 382 10.48.53.127 "System in Maintenance Mode"',
    "2025-07-13T10:25:30.843+00:00 main[2467]: "
    "SipSubscriber I: [p=0] Registration Status: 'Failed', URI: '1001@uctest.local',"
    " Reason: '503 Service Unavailable / System in Maintenance Mode'",
    "2025-07-13T10:25:30.844+00:00 main[2467]: "
    "DnsLocator I: locatedAt() Uri 'uctest.local', profile 0, strategy 2: tcp"
    " '10.48.53.128:5060' (internal)",
    "2025-07-13T10:25:30.855+00:00 main[2467]: "
    "SipStack I: SIP config is new and 0 active sessions; reconfiguring SIP stack",
    "2025-07-13T10:25:30.861+00:00 main[2467]: "
    "SipStack I: SIP stack successfully configured; now ready",
    "2025-07-13T10:25:31.096+00:00 main[2467]: "
    "SipSubscriber I: [p=0] Registration Status: 'Registering', URI:"
    " '1001@uctest.local', Reason: ''",
    "2025-07-13T10:25:31.180+00:00 main[2467]: "
    "SipReg I: Registered as '1001@uctest.local' to '10.48.53.128:5060'",
    "2025-07-13T10:25:31.181+00:00 main[2467]: "
    "SipStack I: Setting 'uctest.local'/10.48.53.128:5060 as new default proxy",
    "2025-07-13T10:25:31.181+00:00 main[2467]: "
    "SipSubscriber I: [p=0] Registration Status: 'Registered', URI:"
    " '1001@uctest.local', Reason: ''",
    "2025-07-13T10:25:31.182+00:00 main[2467]: "
    "SipSubscriber I: Resetting locator since reg_ind.status is registered",
]
OPTION2_REGISTRATION = [
    "2025-07-13T11:16:34.990+00:00 main[2467]: "
    "SipSubscriber I: [p=0] Need to resolve 'habibexpc-cluster.uctest.local' before"
    " sending config to SIP stack (restarted locator)",
    "2025-07-13T11:16:35.056+00:00 main[2467]: "
    "DnsLocator I: locatedAt() Uri 'habibexpc-cluster.uctest.local', profile 0,"
    " strategy 4: unspec '10.48.53.127' (internal)",
    "2025-07-13T11:16:35.058+00:00 main[2467]: "
    "SipStack I: SIP config is new and 0 active sessions; reconfiguring SIP stack",
    "2025-07-13T11:16:35.070+00:00 main[2467]: "
    "SipStack I: SIP stack successfully configured; now ready",
    "2025-07-13T11:16:35.372+00:00 main[2467]: "
    "SipSubscriber I: [p=0] Registration Status: 'Registering', URI:"
    " '1001@uctest.local', Reason: ''",
    "2025-07-13T11:16:35.461+00:00 main[2467]: "
    "SipReg I: Registered as '1001@uctest.local' to '10.48.53.127'",
    "2025-07-13T11:16:35.461+00:00 main[2467]: "
    "SipStack I: Setting 'habibexpc-cluster.uctest.local'/10.48.53.127 as new default proxy",
    "2025-07-13T11:16:35.462+00:00 main[2467]: "
    "SipSubscriber I: [p=0] Registration Status: 'Registered', URI:"
    " '1001@uctest.local', Reason: ''",
]
OPTION2_CONNECTION_LOST_FAILOVER = [
    "2025-07-13T11:20:48.897+00:00 main[2467]: "
    "SipReg W: SipTransport indicates that connection to 10.48.53.127 was lost.",
    "2025-07-13T11:20:48.898+00:00 main[2467]: "
    "SipStack I: Failed to find new default outbound proxy at present time.",
    "2025-07-13T11:20:48.901+00:00 main[2467]: "
    "SipSubscriber I: [p=0] Registration Status: 'Failed', URI: '1001@uctest.local',"
    " Reason: 'Connection lost'",
    "2025-07-13T11:20:48.907+00:00 main[2467]: "
    "SipSubscriber I: [p=0] Need to resolve 'habibexpc-cluster.uctest.local' before"
    " sending config to SIP stack (restarted locator)",
    "2025-07-13T11:20:48.990+00:00 main[2467]: "
    "DnsLocator I: locatedAt() Uri 'habibexpc-cluster.uctest.local', profile 0,"
    " strategy 4: unspec '10.48.53.128' (internal)",
    "2025-07-13T11:20:48.993+00:00 main[2467]: "
    "SipStack I: SIP config is new and 0 active sessions; reconfiguring SIP stack",
    "2025-07-13T11:20:49.006+00:00 main[2467]: "
    "SipStack I: SIP stack successfully configured; now ready",
    "2025-07-13T11:20:49.210+00:00 main[2467]: "
    "SipSubscriber I: [p=0] Registration Status: 'Registering', URI:"
    " '1001@uctest.local', Reason: ''",
    "2025-07-13T11:20:49.332+00:00 main[2467]: "
    "SipReg I: Registered as '1001@uctest.local' to '10.48.53.128'",
    "2025-07-13T11:20:49.337+00:00 main[2467]: "
    "SipStack I: Setting 'habibexpc-cluster.uctest.local'/10.48.53.128 as new default proxy",
    "2025-07-13T11:20:49.338+00:00 main[2467]: "
    "SipSubscriber I: [p=0] Registration Status: 'Registered', URI:"
    " '1001@uctest.local', Reason: ''",
    "2025-07-13T11:20:49.339+00:00 main[2467]: "
    "SipSubscriber I: Resetting locator since reg_ind.status is registered",
]


def at(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def ev(iso: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"t": at(iso), "component": "ep1", "kind": kind, **fields}


def located(iso: str, uri: str, strategy: int, label: str, target: str) -> dict[str, Any]:
    fields = {"uri": uri, "strategy": strategy, "label": label, "target": target}
    return ev(iso, "dns.located", **fields)


def reg(iso: str, state: str, reason: str = "", **fields: Any) -> dict[str, Any]:
    return ev(iso, "registration.state", aor=AOR, state=state, reason=reason, **fields)


def seed_t(iso: str) -> str:
    return f"2025-07-13T{iso}+00:00"


OPTION1_REGISTRATION_EVENTS = [
    located(seed_t("10:19:27.683"), "uctest.local", 1, "tls", "10.48.53.127:5061"),
    located(seed_t("10:19:27.683"), "uctest.local", 1, "tls", "10.48.53.128:5061"),
    located(seed_t("10:19:27.740"), "uctest.local", 2, "tcp", "10.48.53.127:5060"),
    reg(seed_t("10:19:28.349"), "Registering"),
    reg(
        seed_t("10:19:28.439"),
        "Registered",
        proxy="uctest.local",
        target="10.48.53.127:5060",
        reset_locator=False,
    ),
]
OPTION1_MAINTENANCE_FAILOVER_EVENTS = [
    ev(
        seed_t("10:25:30.840"),
        "sip.warning",
        header='Warning: 382 10.48.53.127 "System in Maintenance Mode"',
    ),
    reg(seed_t("10:25:30.843"), "Failed", "503 Service Unavailable / System in Maintenance Mode"),
    located(seed_t("10:25:30.844"), "uctest.local", 2, "tcp", "10.48.53.128:5060"),
    ev(seed_t("10:25:30.855"), "stack.configured"),
    reg(seed_t("10:25:31.096"), "Registering"),
    reg(seed_t("10:25:31.180"), "Registered", proxy="uctest.local", target="10.48.53.128:5060"),
]
OPTION2_REGISTRATION_EVENTS = [
    ev(seed_t("11:16:34.990"), "locator.restart", uri=CLUSTER),
    located(seed_t("11:16:35.056"), CLUSTER, 4, "unspec", "10.48.53.127"),
    ev(seed_t("11:16:35.058"), "stack.configured"),
    reg(seed_t("11:16:35.372"), "Registering"),
    reg(
        seed_t("11:16:35.461"),
        "Registered",
        proxy=CLUSTER,
        target="10.48.53.127",
        reset_locator=False,
    ),
]
OPTION2_CONNECTION_LOST_FAILOVER_EVENTS = [
    ev(seed_t("11:20:48.897"), "transport.lost", host="10.48.53.127"),
    reg(seed_t("11:20:48.901"), "Failed", "Connection lost"),
    ev(seed_t("11:20:48.907"), "locator.restart", uri=CLUSTER),
    located(seed_t("11:20:48.990"), CLUSTER, 4, "unspec", "10.48.53.128"),
    ev(seed_t("11:20:48.993"), "stack.configured"),
    reg(seed_t("11:20:49.210"), "Registering"),
    reg(seed_t("11:20:49.332"), "Registered", proxy=CLUSTER, target="10.48.53.128"),
]


def split(line: str) -> tuple[float, str]:
    stamp, rest = line.split(" ", 1)
    return at(stamp), rest


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        (OPTION1_REGISTRATION_EVENTS, OPTION1_REGISTRATION),
        (OPTION1_MAINTENANCE_FAILOVER_EVENTS, OPTION1_MAINTENANCE_FAILOVER),
        (OPTION2_REGISTRATION_EVENTS, OPTION2_REGISTRATION),
        (OPTION2_CONNECTION_LOST_FAILOVER_EVENTS, OPTION2_CONNECTION_LOST_FAILOVER),
    ],
    ids=["option1-registration", "option1-maintenance", "option2-registration", "option2-lost"],
)
def test_seed_snippets(events: list[dict[str, Any]], expected: list[str]) -> None:
    rendered: list[str] = []
    for event in events:
        lines = render(event, pid=PID)
        # An event's first line carries the event's own time, so it matches the seed exactly.
        assert lines[0] == expected[len(rendered)]
        rendered.extend(lines)
    assert [split(line)[1] for line in rendered] == [split(line)[1] for line in expected]
    # Follow-up lines of one event share its time; RoomOS spent up to 13 ms between them.
    for got, want in zip(rendered, expected, strict=True):
        assert 0 <= split(want)[0] - split(got)[0] <= 0.015


def test_timestamp_rounds_to_the_millisecond() -> None:
    assert timestamp(at("2025-07-13T10:19:27.683+00:00")) == "2025-07-13T10:19:27.683+00:00"
    assert timestamp(1752401967.9996) == "2025-07-13T10:19:28.000+00:00"
    assert timestamp(0) == "1970-01-01T00:00:00.000+00:00"


def test_unknown_kind_renders_nothing() -> None:
    assert render({"t": 1.0, "component": "ep1", "kind": "sip.sent"}, pid=PID) == []
    assert render({"t": 1.0}, pid=PID) == []


def test_missing_fields_render_empty() -> None:
    assert render({"t": 0.0, "kind": "dns.located"}, pid=7) == [
        "1970-01-01T00:00:00.000+00:00 main[7]: "
        "DnsLocator I: locatedAt() Uri '', profile 0, strategy :  '' (internal)"
    ]
    lines = render({"kind": "registration.state", "state": "Registered"}, pid=7)
    assert [line.split(": ", 1)[1] for line in lines] == [
        "SipReg I: Registered as '' to ''",
        "SipStack I: Setting ''/ as new default proxy",
        "SipSubscriber I: [p=0] Registration Status: 'Registered', URI: '', Reason: ''",
        "SipSubscriber I: Resetting locator since reg_ind.status is registered",
    ]
