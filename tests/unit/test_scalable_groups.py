"""Scalable endpoint groups in the lab model, and the ``connect:`` channel's spec."""

from __future__ import annotations

from typing import Any

import pytest

from emulator.channel import ChannelSpec, ChannelSpecError
from emulator.lab.model import parse_lab
from emulator.validation import ConfigError


def lab(**group: Any) -> dict[str, Any]:
    return {
        "peers": [{"name": "exp1", "address": "127.0.0.11"}],
        "collector": "127.0.0.5:7071",
        "endpoints": [{"uri": "{n}@uctest.local", "scalable": True, **group}],
    }


def test_connect_spec_parses_and_wants_a_token_beyond_loopback() -> None:
    spec = ChannelSpec.parse("connect:lab:7071")
    assert (spec.mode, spec.host, spec.port) == ("connect", "lab", 7071)
    assert spec.needs_token()
    assert not ChannelSpec.parse("connect:127.0.0.5:7071").needs_token()
    with pytest.raises(ChannelSpecError, match="connect:HOST:PORT"):
        ChannelSpec.parse("connect:lab")


def test_replica_k_gets_its_own_slice_on_its_own_address() -> None:
    config = parse_lab(lab(count_per_replica=10, first=2000, name="rooms"), "t")
    assert config.endpoint_names() == []  # nothing to start: replicas join
    assert config.scalable_groups() == {"rooms": 0}
    third = config.replica_config(0, 3, "127.0.0.77")
    assert third.name == "rooms-3"
    group = third.groups[0]
    assert [group.aor(i) for i in (0, 9)] == ["2020@uctest.local", "2029@uctest.local"]
    assert group.count == 10
    assert str(group.member(9).address) == "127.0.0.77"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**lab(), "collector": None}, "needs the lab's 'collector"),
        ({**lab(), "endpoints": [{"uri": "a@uctest.local", "scalable": True}]}, "needs {n}"),
        (lab(address="127.0.0.101"), "replicas join the lab"),
        (
            {
                **lab(max_replicas=10),
                "endpoints": [
                    {"uri": "{n}@uctest.local", "scalable": True, "max_replicas": 10},
                    {"uri": "1005@uctest.local", "address": "127.0.0.101"},
                ],
            },
            "also a member|share AORs",
        ),
    ],
)
def test_scalable_groups_are_checked_with_the_file(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_lab(data, "t")
