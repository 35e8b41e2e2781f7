"""``siplab compose``: a lab as a Compose file, and what its containers run."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulator.lab.compose import CHANNEL_PORT, COLLECTOR_PORT, compose_file, container_lab
from emulator.lab.container import listening_ports, shared_token
from emulator.lab.model import CONTAINER_NETWORK, LabConfig, default_lab, parse_lab
from emulator.validation import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def config(service: dict[str, Any]) -> dict[str, Any]:
    command = service["command"]
    text = command[command.index("--config-json") + 1].replace("$$", "$")
    return dict(json.loads(text))


def test_committed_compose_file_is_the_generated_one() -> None:
    committed = (ROOT / "compose.yaml").read_text(encoding="utf-8")
    assert committed == compose_file(default_lab()), (
        "compose.yaml differs from the seed's generated lab: run 'siplab compose > compose.yaml'"
    )


def test_seed_moves_to_the_container_network_with_every_component_attached() -> None:
    document = yaml.safe_load(compose_file(default_lab()))
    services = document["services"]
    assert list(services) == ["dns", "exp1", "exp2", "lab", "endpoint"]
    ipam = document["networks"]["lab"]["ipam"]["config"][0]
    subnet = IPv4Network(ipam["subnet"])
    assert subnet.subnet_of(CONTAINER_NETWORK)
    fixed = {
        name: s["networks"]["lab"]["ipv4_address"]
        for name, s in services.items()
        if name != "endpoint"
    }
    assert fixed == {
        "dns": "198.18.0.10",
        "exp1": "198.18.0.11",
        "exp2": "198.18.0.12",
        "lab": "198.18.0.2",
    }
    # Replicas take addresses Docker gives them, from a range none of the fixed ones is in.
    replicas = IPv4Network(ipam["ip_range"])
    assert replicas.subnet_of(subnet)
    assert not any(IPv4Address(a) in replicas for a in fixed.values())
    endpoint = services["endpoint"]
    assert endpoint["networks"] == ["lab"]
    assert "--config-json" not in endpoint["command"]
    assert endpoint["command"][-2:] == ["--control", f"connect:lab:{COLLECTOR_PORT}"]
    assert "--config-from-lab" in endpoint["command"]
    lab = LabConfig.model_validate(config(services["lab"]))
    assert lab.network == "containers"
    assert lab.collector == f"0.0.0.0:{COLLECTOR_PORT}"
    assert lab.dns.attach == f"198.18.0.10:{CHANNEL_PORT}"
    assert [p.attach for p in lab.peers] == [f"198.18.0.{n}:{CHANNEL_PORT}" for n in (11, 12)]
    # The seed's one endpoint, 1001, is a scalable group: replica k runs 1000 + k.
    group = lab.endpoints[0]
    assert (group.scalable, group.name, group.uri, group.first) == (
        True,
        "endpoint",
        "{n}@uctest.local",
        1001,
    )
    replica = lab.replica_config(0, 2, "198.18.0.193")
    assert replica.name == "endpoint-2"
    member = replica.groups[0].member(0)
    assert (member.uri, str(member.address)) == ("1002@uctest.local", "198.18.0.193")
    assert member.dns == ["198.18.0.10:53"]
    for name, service in services.items():
        assert service["init"] is True  # 'docker compose down' in about a second
        if name == "endpoint":
            continue  # a replica listens on nothing: it is ready when the lab says so
        assert service["healthcheck"]["test"][:4] == [
            "CMD",
            "python",
            "-m",
            "emulator.lab.container",
        ]
    # Published on the host's loopback only, and the lab waits for every component to be ready.
    assert services["lab"]["ports"] == ["127.0.0.1:${SIPLAB_CONTROL_PORT:-7700}:7700"]
    assert set(services["lab"]["depends_on"]) == {"dns", "exp1", "exp2"}
    assert set(services["endpoint"]["depends_on"]) == {"lab"}


def lab_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "c",
        "network": "containers",
        "dns": {"address": "198.19.7.10", "port": 5353},
        "peers": [
            {"name": "a", "address": "198.19.7.11"},
            {"name": "b", "address": "198.19.8.11"},
            {"name": "ext", "address": "192.0.2.1", "external": True},
        ],
        "endpoints": [
            {"uri": "1@uctest.local", "address": "198.19.7.101"},
            {"uri": "2@uctest.local", "address": "198.19.7.102", "proxy": "198.19.7.11"},
            {"uri": "alice@uctest.local", "address": "198.19.7.103"},
        ],
    }
    data.update(overrides)
    return data


def test_container_lab_keeps_its_addresses_ports_and_external_peers() -> None:
    document = yaml.safe_load(compose_file(parse_lab(lab_data(), "t")))
    services = document["services"]
    assert list(services) == [
        "dns",
        "a",
        "b",
        "endpoint-alice-uctest.local",
        "lab",
        "endpoint-1-uctest.local",
        "endpoint-2-uctest.local",
    ]
    # Spread over two /24s: the network widens to hold both, and stays in 198.18.0.0/15.
    assert document["networks"]["lab"]["ipam"]["config"][0]["subnet"] == "198.19.0.0/20"
    assert config(services["dns"])["port"] == 5353
    lab = LabConfig.model_validate(config(services["lab"]))
    # Numeric AORs scale; one replica of 1@ before 2@'s AORs begin, a named one does not.
    assert [(e.name, e.scalable, e.max_replicas) for e in lab.endpoints[:2]] == [
        ("endpoint-1-uctest.local", True, 1),
        ("endpoint-2-uctest.local", True, 64),
    ]
    assert lab.endpoints[2].attach == f"198.19.7.103:{CHANNEL_PORT}"
    assert lab.peer("ext").attach is None
    assert str(lab.peer("ext").address) == "192.0.2.1"
    assert IPv4Address(services["lab"]["networks"]["lab"]["ipv4_address"]) == IPv4Address(
        "198.19.0.2"
    )


def test_loopback_lab_maps_its_records_and_proxies() -> None:
    data = {
        "peers": [{"name": "exp1", "address": "127.0.3.11"}],
        "dns": {"records": [{"name": "exp1", "type": "A", "data": "127.0.3.11"}]},
        "endpoints": [{"uri": "a@uctest.local", "proxy": "127.0.3.11", "address": "127.0.3.5"}],
    }
    lab = container_lab(parse_lab(data, "t"))
    assert str(lab.peer("exp1").address) == "198.18.3.11"
    assert lab.dns_config().zones[0].records[0].data == "198.18.3.11"
    assert lab.endpoint_config("a@uctest.local").proxy == "198.18.3.11"
    assert str(lab.endpoints[0].address) == "198.18.3.5"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"peers": [{"name": "x", "address": "127.1.0.11"}]}, "only 127.0.0.0/16"),
        ({"peers": [{"name": "lab", "address": "127.0.0.11"}]}, "named 'lab'"),
    ],
)
def test_labs_that_cannot_move_are_refused_in_one_line(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compose_file(parse_lab(data, "t"))


def test_zone_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "z.zone").write_text("$ORIGIN uctest.local.\n@ 60 IN A 127.0.0.10\n")
    lab = parse_lab(
        {"peers": [{"name": "x", "address": "127.0.0.11"}], "dns": {"zone_file": "z.zone"}},
        "t",
        tmp_path,
    )
    with pytest.raises(ConfigError, match="zone files stay on this host"):
        compose_file(lab)


def test_dollar_signs_reach_the_component_unchanged() -> None:
    data = {
        "peers": [{"name": "x", "address": "127.0.0.11"}],
        "dns": {"records": [{"name": "t", "type": "TXT", "data": '"a$b"'}]},
    }
    document = yaml.safe_load(compose_file(parse_lab(data, "t")))
    raw = document["services"]["dns"]["command"][2]
    assert "a$$b" in raw  # compose turns $$ into $
    assert config(document["services"]["dns"])["zones"][0]["records"][0]["data"] == '"a$b"'


def test_the_first_container_makes_the_token_and_the_others_read_it(tmp_path: Path) -> None:
    path = tmp_path / "token"
    first = shared_token(path)
    assert len(first) >= 32
    assert shared_token(path) == first
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left
    path.write_text("")
    with pytest.raises(ValueError, match="empty"):
        shared_token(path)


def test_health_reads_listening_ports_from_the_kernel_table(tmp_path: Path) -> None:
    table = tmp_path / "tcp"
    table.write_text(
        "  sl  local_address rem_address   st\n"
        "   0: 0A12C6C6:13C4 00000000:0000 0A\n"  # 198.18.0.10:5060 listening
        "   1: 0A12C6C6:1B9E 0B12C6C6:C350 01\n"  # :7070 established: not listening
    )
    assert listening_ports((str(table), str(tmp_path / "absent"))) == {5060}
