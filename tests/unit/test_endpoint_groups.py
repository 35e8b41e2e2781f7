"""Endpoint groups in the lab model, and one endpoint's RoomOS log out of a host's stream."""

from __future__ import annotations

import re
import tracemalloc
from typing import Any

import pytest

from emulator.events import Event
from emulator.lab.model import LabConfig, parse_lab
from emulator.lab.render import Renderer
from emulator.lab.view import LabView
from emulator.validation import ConfigError
from endpoint.group import GroupConfig, HostConfig
from tests.unit.test_roomos import (
    AOR,
    OPTION1_MAINTENANCE_FAILOVER,
    OPTION1_MAINTENANCE_FAILOVER_EVENTS,
    OPTION2_CONNECTION_LOST_FAILOVER,
    OPTION2_CONNECTION_LOST_FAILOVER_EVENTS,
    PID,
)

PEERS = [{"name": "exp1", "address": "127.0.0.11"}, {"name": "exp2", "address": "127.0.0.12"}]


def lab(*endpoints: dict[str, Any]) -> LabConfig:
    return parse_lab({"peers": PEERS, "endpoints": list(endpoints)}, "lab.yaml")


def test_a_group_is_one_spec_whatever_its_size() -> None:
    """25,000 endpoints load as one group: no per-endpoint object, so memory stays flat."""
    data = {"peers": PEERS, "endpoints": [{"uri": "{n}@uctest.local", "count": 25_000}]}
    tracemalloc.start()
    try:
        config = parse_lab(data, "lab.yaml")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A pydantic model per endpoint would be well over 25 MB; the group is a few kB.
    assert peak < 2_000_000
    assert config.endpoint_count() == 25_000
    assert len(config.endpoints) == 1
    # Over the 10,000-per-host default: three hosts, each given its slice, not a list.
    assert config.endpoint_names() == ["ep-1.1", "ep-1.2", "ep-1.3"]
    small = config.host_config("ep-1.3")
    assert small.groups[0].start == 16_666
    assert small.groups[0].count == 8_334
    assert len(small.model_dump_json()) < 1_000


def test_members_get_their_aor_address_and_host() -> None:
    config = lab(
        {"uri": "1000@uctest.local"},
        {"uri": "{n}@uctest.local", "count": 5, "addresses": 2, "hosts": 2, "name": "rooms"},
    )
    members = list(config.endpoint_members())
    assert members[0] == (
        "1000@uctest.local",
        "1000@uctest.local",
        "1000@uctest.local",
        "127.0.0.101",
    )
    assert members[1:] == [
        ("1001@uctest.local", "1001@uctest.local", "rooms.1", "127.0.0.102"),
        ("1002@uctest.local", "1002@uctest.local", "rooms.1", "127.0.0.103"),
        ("1003@uctest.local", "1003@uctest.local", "rooms.2", "127.0.0.102"),
        ("1004@uctest.local", "1004@uctest.local", "rooms.2", "127.0.0.103"),
        ("1005@uctest.local", "1005@uctest.local", "rooms.2", "127.0.0.102"),
    ]
    assert config.find_endpoint("sip:1004@uctest.local") == ("rooms.2", "1004@uctest.local")
    assert config.find_endpoint("1006@uctest.local") is None
    member = config.endpoint_config("1004@uctest.local")
    assert (member.uri, str(member.address), member.proxy) == (
        "1004@uctest.local",
        "127.0.0.103",
        "uctest.local",
    )
    host = config.host_config("rooms.2").groups[0]
    assert [host.aor(i) for i in range(host.count)] == [
        "1003@uctest.local",
        "1004@uctest.local",
        "1005@uctest.local",
    ]
    assert [host.address_of(i) for i in range(host.count)] == [
        "127.0.0.102",
        "127.0.0.103",
        "127.0.0.102",
    ]
    assert config.endpoint_addresses() == {"127.0.0.101", "127.0.0.102", "127.0.0.103"}


@pytest.mark.parametrize(
    ("endpoints", "message"),
    [
        ([{"uri": "1001@uctest.local", "count": 3}], "needs {n} in its uri"),
        ([{"uri": "{n}@uctest.local", "count": 30_000}], "source ports"),
        ([{"uri": "{n}@uctest.local", "count": 20_000, "hosts": 1, "addresses": 2}], "1 to 16000"),
        ([{"uri": "{n}@uctest.local", "count": 2, "hosts": 3}], "over 3 host(s)"),
        (
            [{"uri": "{n}@uctest.local", "count": 10}, {"uri": "{n}@uctest.local", "first": 1009}],
            "share AORs",
        ),
        ([{"uri": "{n}@uctest.local", "count": 10}, {"uri": "1005@uctest.local"}], "member of"),
        ([{"uri": "1001@uctest.local"}, {"uri": "sip:1001@uctest.local"}], "used twice"),
        ([{"uri": "{n}@uctest.local", "count": 4, "proxy": "bad proxy!"}], "endpoints[0]"),
    ],
)
def test_bad_groups_are_refused_with_the_place(
    endpoints: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        lab(*endpoints)


def test_a_single_endpoint_host_round_trips_its_settings() -> None:
    member = lab({"uri": "1001@uctest.local", "transport": "udp", "expires": 120}).endpoint_config(
        "1001@uctest.local"
    )
    host = HostConfig.single(member)
    assert host.size == 1
    assert host.groups[0].template() == member


def test_group_settings_may_not_set_what_the_group_computes() -> None:
    with pytest.raises(ValueError, match="must not set 'uri'"):
        GroupConfig(uri="{n}@x.local", count=2, address="127.0.0.1", settings={"uri": "a@b"})


def test_the_view_keys_endpoints_by_aor_and_counts_them() -> None:
    config = lab({"uri": "{n}@uctest.local", "count": 3})
    view = LabView.of(config)
    assert list(view.endpoints) == ["1001@uctest.local", "1002@uctest.local", "1003@uctest.local"]
    assert not view.settled()

    view.apply(Event(1.0, "ep-1", "process.started", {"pid": 42}))
    for n, state in ((1001, "Registered"), (1002, "Failed"), (1003, "Registered")):
        fields = {"aor": f"{n}@uctest.local", "state": state, "reason": "", "registrar": "r:5060"}
        view.apply(Event(2.0, "ep-1", "registration.state", fields))
    assert view.settled()
    assert {e.pid for e in view.endpoints.values()} == {42}
    assert view.endpoint_counts() == {
        "by_state": {"Registered": 2, "Failed": 1},
        "by_registrar": {"r:5060": 2},
    }
    view.apply(Event(3.0, "ep-1", "process.exited", {"pid": 42}))
    assert not view.settled()


def test_the_view_follows_outbound_flows_while_the_endpoint_stays_registered() -> None:
    view = LabView.of(lab({"uri": "1001@uctest.local", "outbound": True, "proxy2": "127.0.0.12"}))
    (endpoint,) = view.endpoints.values()

    def flow(t: float, reg_id: int, state: str, registrar: str) -> None:
        fields = {"aor": endpoint.uri, "reg_id": reg_id, "state": state, "registrar": registrar}
        view.apply(Event(t, endpoint.host, "registration.flow", fields))

    flow(1.0, 1, "Registered", "127.0.0.11:5060")
    overall = {"aor": endpoint.uri, "reg_id": 1, "state": "Registered", "reason": ""}
    view.apply(Event(1.0, endpoint.host, "registration.state", overall | {"registrar": "x"}))
    flow(1.1, 2, "Registering", "127.0.0.12:5060")
    assert (endpoint.registrar, endpoint.registrars) == ("127.0.0.11:5060", ["127.0.0.11:5060"])
    flow(1.2, 2, "Registered", "127.0.0.12:5060")
    assert endpoint.registrars == ["127.0.0.11:5060", "127.0.0.12:5060"]
    flow(5.0, 1, "Failed", "127.0.0.11:5060")  # its overall state stays Registered
    assert (endpoint.state, endpoint.registrar) == ("Registered", "127.0.0.12:5060")
    assert [f["state"] for f in endpoint.to_dict()["flows"]] == ["Failed", "Registered"]
    assert view.endpoint_counts()["by_registrar"] == {"127.0.0.12:5060": 1}


def _host_stream(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The seed's events as one endpoint of a host emits them, each followed by the same event
    from two other endpoints of the host."""
    stream: list[dict[str, Any]] = [
        {"t": 0.0, "component": "ep-1", "kind": "process.started", "pid": PID}
    ]
    for event in events:
        for aor in (AOR, "1002@uctest.local", "1003@uctest.local"):
            stream.append({**event, "component": "ep-1", "aor": aor})
    return stream


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        (OPTION1_MAINTENANCE_FAILOVER_EVENTS, OPTION1_MAINTENANCE_FAILOVER),
        (OPTION2_CONNECTION_LOST_FAILOVER_EVENTS, OPTION2_CONNECTION_LOST_FAILOVER),
    ],
    ids=["option1-maintenance", "option2-lost"],
)
def test_one_aor_of_a_host_renders_the_seed_line_for_line(
    events: list[dict[str, Any]], expected: list[str]
) -> None:
    renderer = Renderer("roomos", aor=AOR)
    rendered: list[str] = []
    for event in _host_stream(events):
        lines = renderer.lines(event)
        if lines:  # an event's first line carries the event's own time: the seed's exactly
            assert lines[0] == expected[len(rendered)]
        rendered.extend(lines)
    assert [line.split(" ", 1)[1] for line in rendered] == [
        line.split(" ", 1)[1] for line in expected
    ]


def test_a_flow_event_without_a_usable_reg_id_changes_nothing() -> None:
    view = LabView.of(lab({"uri": "1001@uctest.local", "outbound": True}))
    (endpoint,) = view.endpoints.values()
    for reg_id in (None, "1", [1]):
        fields = {"aor": endpoint.uri, "reg_id": reg_id, "state": "Registered", "registrar": "r"}
        view.apply(Event(1.0, endpoint.host, "registration.flow", fields))
    assert endpoint.flows == {}
    assert endpoint.to_dict()["flows"] == []
