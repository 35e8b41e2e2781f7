"""``siplab compose [LAB.yaml] > compose.yaml``: any lab, as a Docker Compose lab.

The same lab model as ``siplab up``, placed on a user-defined bridge network inside
198.18.0.0/15: one service per component (``dns``, each peer), each running ``python -m
<component> --control listen:0.0.0.0:7070`` at a fixed address, and a ``lab`` service running
the supervisor with every component ``attach:``ed — so Docker owns the processes and the lab
sees them exactly as it sees its children: ``docker compose kill exp1`` is a
``component.left``, ``docker compose pause exp1`` an unresponsive peer, a restart a rejoin.

Endpoints are endpoint *hosts* that scale: ``docker compose up --scale endpoint=N``. Their
replicas have addresses nobody chose, so the lab cannot attach to them; they join the lab's
collector instead (``--config-from-lab --control connect:lab:7071``) and each is given the next
slice of its group (emulator/lab/collector.py). A group ``{n}@domain`` of ``count`` becomes a
scalable group of ``count`` per replica; a single numeric AOR (the seed's ``1001@uctest.local``)
becomes ``{n}@domain`` from that number, one per replica — up to the next group's first AOR. An
endpoint of any other name stays one container at a fixed address.
The lab's control plane is published on the host's 127.0.0.1 (``SIPLAB_CONTROL_PORT``, 7700)
and its state file is written into the host's state dir (a bind mount), so ``siplab status``
finds the lab as it finds one started by ``siplab up``.

A loopback lab moves to the container network by its addresses: 127.0.B.C becomes 198.18.B.C
(the seed's DNS 127.0.0.10 is 198.18.0.10) and the DNS server listens on port 53. A lab with
``network: containers`` keeps its addresses and ports. The file is kept within what Debian's
docker-compose 1.29 accepts (format 2.4).
"""

from __future__ import annotations

import itertools
import re
from ipaddress import IPv4Address, IPv4Network, ip_address
from typing import Any

import yaml

from emulator.lab.model import CONTAINER_NETWORK, LabConfig, parse_lab
from emulator.validation import ConfigError
from endpoint.group import PLACEHOLDER

CHANNEL_PORT = 7070
COLLECTOR_PORT = 7071
CONTROL_PORT = 7700
CONTAINER_DNS_PORT = 53
IMAGE = "siplab"
DEFAULT_BASE = "python:3.12-slim"
LOOPBACK_PREFIX = IPv4Network("127.0.0.0/16")
HEALTH = {"interval": "2s", "timeout": "2s", "retries": 30}


def container_lab(lab: LabConfig) -> LabConfig:
    """``lab`` as it runs in containers: on the container network, every component attached."""
    if lab.dns.zone_file is not None or any(zone.file for zone in lab.dns.zones):
        raise ConfigError(
            "dns: zone files stay on this host; a container lab takes its records from the lab "
            "file (dns.records)"
        )
    data = lab.model_dump(mode="json", exclude_none=True)
    move = lab.network == "loopback"
    place = _to_container if move else _same
    data["network"] = "containers"
    dns = data["dns"]
    dns["address"] = place(dns["address"])
    if move:
        dns["port"] = CONTAINER_DNS_PORT
    dns["attach"] = f"{dns['address']}:{CHANNEL_PORT}"
    for record in dns.get("records") or []:
        if record["type"] == "A" and _is_address(record["data"]):
            record["data"] = place(record["data"])
    for peer in data["peers"]:
        if peer.get("external"):
            continue
        peer["address"] = place(peer["address"])
        peer["attach"] = f"{peer['address']}:{CHANNEL_PORT}"
    data["endpoint_base_address"] = place(data["endpoint_base_address"])
    alone = len(data["endpoints"]) == 1
    for endpoint in data["endpoints"]:
        if endpoint.get("proxy") and _is_address(endpoint["proxy"]):
            endpoint["proxy"] = place(endpoint["proxy"])
        if _make_scalable(endpoint, alone):
            data["collector"] = f"0.0.0.0:{COLLECTOR_PORT}"
            continue
        endpoint["address"] = place(endpoint["address"])
        endpoint["attach"] = f"{endpoint['address']}:{CHANNEL_PORT}"
    _cap_replicas(data["endpoints"])
    return parse_lab(data, "compose")


NUMERIC_AOR = re.compile(r"^([0-9]+)(@.+)$")


def _make_scalable(endpoint: dict[str, Any], alone: bool) -> bool:
    """Turn an endpoint group into a scalable one (its replicas join the lab), if it can be;
    its name becomes its compose service's, so replica k is ``endpoint-k``."""
    uri = str(endpoint["uri"])
    numeric = NUMERIC_AOR.match(uri)
    if not endpoint.get("scalable"):
        if PLACEHOLDER in uri:
            endpoint["count_per_replica"] = endpoint.pop("count", 1)
        elif numeric is not None and endpoint.get("count", 1) == 1:
            endpoint["uri"] = PLACEHOLDER + numeric.group(2)
            endpoint["first"] = int(numeric.group(1))
            endpoint.pop("count", None)
        else:
            return False
    name = endpoint.get("name") or uri
    endpoint["name"] = "endpoint" if alone else f"endpoint-{_service_safe(name)}"
    endpoint["scalable"] = True
    for mine in ("address", "addresses", "attach", "hosts"):
        endpoint.pop(mine, None)  # a replica's own address, and one host per container
    return True


def _cap_replicas(endpoints: list[dict[str, Any]]) -> None:
    """A scalable group stops short of the next group's AORs (same pattern, higher first)."""
    groups = sorted(
        (
            (str(e["uri"]).lower(), int(e.get("first", 1001)), e)
            for e in endpoints
            if PLACEHOLDER in e["uri"]
        ),
        key=lambda group: group[:2],
    )
    for (uri, first, spec), (next_uri, next_first, _) in itertools.pairwise(groups):
        if spec.get("scalable") and uri == next_uri:
            per = int(spec.get("count_per_replica", 1))
            room = max(1, (next_first - first) // per)
            spec["max_replicas"] = min(int(spec.get("max_replicas", 64)), room)


def _is_address(text: str) -> bool:
    try:
        ip_address(text)
    except ValueError:
        return False
    return True


def _same(address: str) -> str:
    return address


def _to_container(address: str) -> str:
    """127.0.B.C -> 198.18.B.C: the loopback lab's layout, on the container network."""
    parsed = ip_address(address)
    if parsed not in LOOPBACK_PREFIX:
        raise ConfigError(
            f"{address}: only 127.0.0.0/16 maps onto the container network; give the lab "
            "'network: containers' and addresses inside 198.18.0.0/15"
        )
    offset = int(parsed) - int(LOOPBACK_PREFIX.network_address)
    return str(IPv4Address(int(CONTAINER_NETWORK.network_address) + offset))


def subnet_of(addresses: list[IPv4Address]) -> IPv4Network:
    """The smallest network of at least a /24 inside 198.18.0.0/15 holding every address."""
    for prefix in range(24, CONTAINER_NETWORK.prefixlen - 1, -1):
        network = IPv4Network(f"{addresses[0]}/{prefix}", strict=False)
        if all(address in network for address in addresses):
            return network
    raise ConfigError(f"the lab's addresses do not fit in {CONTAINER_NETWORK}")


def _service_safe(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9._-]+", "-", name)


def service_name(component: str, endpoints: list[str], groups: int = 1) -> str:
    """Compose service names allow [a-zA-Z0-9._-]; an endpoint is 'endpoint' when alone (one
    host of the lab's only group)."""
    if component in endpoints:
        if len(endpoints) == 1 and groups == 1:
            return "endpoint"
        return "endpoint-" + _service_safe(component)
    return component


def compose_file(lab: LabConfig, source: str = "the seed's lab") -> str:
    """The whole ``compose.yaml`` for ``lab``, as text (deterministic: a test compares it)."""
    inside = container_lab(lab)
    endpoints = inside.endpoint_names()
    placed = [inside.dns.address, *(p.address for p in inside.peers if not p.external)]
    placed += [e.address for e in inside.endpoints if e.address is not None]
    addresses = [IPv4Address(str(a)) for a in placed]
    subnet = subnet_of(addresses)
    hosts = subnet.hosts()
    next(hosts)  # the first is the bridge's gateway: the host's side of the network
    lab_address = next(a for a in hosts if a not in addresses)

    def service(
        module: str, component: str, config: str, address: Any, ports: list[int]
    ) -> dict[str, Any]:
        return {
            "image": IMAGE,
            "build": {"context": ".", "args": {"BASE": f"${{SIPLAB_BASE:-{DEFAULT_BASE}}}"}},
            "init": True,
            "command": [
                module,
                "--config-json",
                _literal(config),
                "--control",
                f"listen:0.0.0.0:{CHANNEL_PORT}",
            ],
            "networks": {"lab": {"ipv4_address": str(address)}},
            "volumes": ["secrets:/run/siplab"],
            "healthcheck": _health(ports),
        }

    services: dict[str, dict[str, Any]] = {}
    dns = inside.dns_config()
    services["dns"] = service(
        "dnsserver", "dns", dns.model_dump_json(), inside.dns.address, [inside.dns.port]
    )
    peers = [p for p in inside.peers if not p.external]
    for peer in peers:
        config = inside.registrar_config(peer.name)
        ports = [port for port in (peer.tcp_port, peer.tls_port) if port]
        services[peer.name] = service(
            "registrar", peer.name, config.model_dump_json(), peer.address, ports
        )
    ready = list(services)
    for host in inside.endpoint_hosts():
        spec = inside.endpoints[host.group]
        if spec.host_count() > 1:
            raise ConfigError(
                f"endpoint group {spec.uri!r} spreads over {spec.host_count()} host processes; "
                "in containers a group runs in one container: set hosts: 1"
            )
        name = service_name(host.name, endpoints, len(inside.endpoints))
        config = inside.host_config(host.name).model_dump_json()
        services[name] = service("endpoint", host.name, config, spec.address, [])
        services[name]["depends_on"] = _healthy(ready)  # it resolves and registers at start
    if "lab" in services or len(services) < 1 + len(peers) + len(endpoints):
        raise ConfigError("a component may not be named 'lab' (the supervisor's service)")
    replicas = {spec.name: spec for spec in inside.endpoints if spec.scalable and spec.name}
    services["lab"] = {
        "image": IMAGE,
        "init": True,
        # The state file goes into the host's state dir, owned by its user (1000 by default).
        "user": "${SIPLAB_UID:-1000}:${SIPLAB_GID:-1000}",
        "command": [
            "emulator.lab.runner",
            "--config-json",
            _literal(inside.model_dump_json(exclude_none=True)),
            "--listen",
            f"0.0.0.0:{CONTROL_PORT}",
            "--advertise",
            f"http://127.0.0.1:${{SIPLAB_CONTROL_PORT:-{CONTROL_PORT}}}",
        ],
        "environment": {"SIPLAB_STATE_DIR": "/state"},
        "ports": [f"127.0.0.1:${{SIPLAB_CONTROL_PORT:-{CONTROL_PORT}}}:{CONTROL_PORT}"],
        "networks": {"lab": {"ipv4_address": str(lab_address)}},
        "volumes": ["secrets:/run/siplab", "${SIPLAB_STATE_DIR:-~/.local/state/siplab}:/state"],
        "healthcheck": _health([CONTROL_PORT, *([COLLECTOR_PORT] if replicas else [])], False),
        "depends_on": _healthy(list(services)),
    }
    for name in replicas:
        # Any number of replicas (--scale), each joining the lab for its slice of the group.
        services[name] = {
            "image": IMAGE,
            "init": True,
            "command": [
                "endpoint",
                "--config-from-lab",
                "--name",
                name,
                "--control",
                f"connect:lab:{COLLECTOR_PORT}",
            ],
            "networks": ["lab"],
            "volumes": ["secrets:/run/siplab"],
            "depends_on": _healthy(["lab"]),  # which waits for DNS and the peers
        }
    ipam: dict[str, str] = {"subnet": str(subnet)}
    if replicas:
        ipam.update(_replica_range(subnet, [*addresses, lab_address]))
    document = {
        "version": "2.4",
        "services": services,
        "networks": {"lab": {"driver": "bridge", "ipam": {"config": [ipam]}}},
        "volumes": {"secrets": {}},
    }
    header = (
        f"# Lab {lab.name!r} in containers, generated from {source} by 'siplab compose';\n"
        "# regenerate it rather than editing it: siplab compose [LAB.yaml] > compose.yaml\n"
        "# 'docker compose up -d', then 'siplab status' (README: \"Lab in containers\").\n"
    )
    # One configuration per line, however long: a reader finds each, a diff shows each.
    body = yaml.safe_dump(document, sort_keys=False, width=1 << 20, default_flow_style=False)
    return header + body


def _replica_range(subnet: IPv4Network, fixed: list[IPv4Address]) -> dict[str, str]:
    """Replicas take their addresses from the subnet's last quarter, away from the fixed ones
    (a stopped peer's address is free again, and a new replica must not take it)."""
    top = list(subnet.subnets(prefixlen_diff=2))[-1]
    if any(address in top for address in fixed):
        return {}
    return {"ip_range": str(top)}


def _healthy(names: list[str]) -> dict[str, Any]:
    return {name: {"condition": "service_healthy"} for name in names}


def _literal(text: str) -> str:
    """Compose interpolates ``$`` everywhere; a configuration means its text as it is."""
    return text.replace("$", "$$")


def _health(ports: list[int], channel: bool = True) -> dict[str, Any]:
    checked = [*ports, CHANNEL_PORT] if channel else ports
    test = ["CMD", "python", "-m", "emulator.lab.container", "health", *map(str, checked)]
    return {"test": test, **HEALTH}
