"""The lab model: which components exist, where they listen, and what each one is told.

A lab file (YAML) is validated here, once, into a :class:`LabConfig`; every component gets its
own typed configuration derived from it (``dns_config``, ``registrar_config``,
``endpoint_config``). With no file, :func:`default_lab` reproduces the seed: DNS for
``uctest.local``, peers ``exp1``/``exp2`` and endpoint ``1001@uctest.local`` over TCP.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_address
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from dnsserver.config import DnsServerConfig, RecordConfig, TsigKeyConfig, ZoneConfig
from emulator.validation import ConfigError, describe
from endpoint.config import EndpointConfig, RegistrationSettings
from endpoint.group import PLACEHOLDER, GroupConfig, HostConfig, member_aor, pattern_regex
from registrar.ca import IssuedCert
from registrar.config import AuthConfig, ClusterPeer, RegistrarConfig

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$"
CONTAINER_NETWORK = IPv4Network("198.18.0.0/15")
ATTACH_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Standard H.323 ports (ITU-T H.225.0): RAS and location on 1719/udp, call signalling 1720/tcp.
H323_RAS_PORT = 1719
H323_CS_PORT = 1720


class PeerSpec(_Model):
    name: str = Field(pattern=NAME_PATTERN)
    address: IPvAnyAddress
    udp_port: int | None = Field(default=5060, ge=1, le=65535)
    tcp_port: int | None = Field(default=5060, ge=1, le=65535)
    tls_port: int | None = Field(default=5061, ge=1, le=65535)
    maintenance: bool = False
    # A registrar the lab does not run (Kamailio, Asterisk, a real Expressway): the lab's DNS
    # and endpoints point at it, but faults that need its process are refused.
    external: bool = False
    # HOST:PORT of a peer started elsewhere with --control listen:HOST:PORT (a container,
    # another host): the lab attaches to its channel instead of starting a process.
    attach: str | None = Field(default=None, pattern=ATTACH_PATTERN)
    # Registered AORs this peer takes (Expressway sizing: 2,500, 5,000); default: the
    # registrar section's capacity.
    capacity: int | None = Field(default=None, ge=1)
    # Prometheus /metrics on the peer's address; null: no listener.
    metrics_port: int | None = Field(default=9160, ge=1, le=65535)

    @model_validator(mode="after")
    def _one_way(self) -> PeerSpec:
        if self.external and self.attach:
            raise ValueError(
                "a peer is either external (the lab does not talk to it) or attached, not both"
            )
        return self


class DnsSpec(_Model):
    address: IPvAnyAddress = IPv4Address("127.0.0.10")
    port: int = Field(default=1053, ge=1, le=65535)
    ttl: int = Field(default=60, ge=0, description="TTL of the generated records (seed: <= 60)")
    # The seed's round-robin name for option 2: one A record per peer.
    cluster_name: str = "habibexpc-cluster"
    # None: generate the seed's records from the peers (SRV for _sips._tcp and _sip._tcp, an
    # A record per peer and the cluster name), unless zone_file gives the zone. A list
    # replaces them entirely (and adds to zone_file's records).
    records: list[RecordConfig] | None = None
    # An RFC 1035 master file for the lab's domain (relative to the lab file).
    zone_file: Path | None = None
    # More zones on the same server, each with records and/or a master file.
    zones: list[ZoneConfig] = []
    rotation: dict[str, Literal["rotate", "fixed", "random"]] = {}
    # RFC 2136 UPDATE (nsupdate) to the lab's zone; with a key, only signed UPDATEs apply.
    allow_update: bool = True
    tsig: TsigKeyConfig | None = None
    # Query events: every query, one in event_sample, or none (for load tests).
    events: Literal["auto", "all", "sample", "off"] = "auto"
    event_sample: int = Field(default=100, ge=1)
    # Prometheus /metrics on the DNS address (9153, as CoreDNS); null: no listener.
    metrics_port: int | None = Field(default=9153, ge=1, le=65535)
    # HOST:PORT of a DNS server started elsewhere with --control listen:HOST:PORT.
    attach: str | None = Field(default=None, pattern=ATTACH_PATTERN)

    def metrics_address(self) -> str | None:
        if self.metrics_port is None:
            return None
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{host}:{self.metrics_port}"


class RegistrarSpec(_Model):
    min_expires: int = Field(default=45, ge=0)
    max_expires: int = Field(default=60, ge=1)
    default_expires: int = Field(default=60, ge=1)
    # Expressway's refresh strategies: "maximum" or "variable" (seeded by seed).
    refresh: Literal["maximum", "variable"] = "maximum"
    seed: int | None = None
    capacity: int | None = Field(default=None, ge=1, description="AORs per peer")
    flow_timer: int = Field(default=120, ge=1, description="RFC 5626 Flow-Timer, seconds")
    # Digest credentials (per user, or a pattern per group of endpoints); null: no auth.
    auth: AuthConfig | None = None
    # Mutual TLS: client certificates checked against the lab CA.
    tls_client_auth: Literal["none", "optional", "required"] = "none"


# Endpoints one host process runs unless the group says otherwise, and the most it may run:
# a process may hold 20,000 open files, one per endpoint, with room for failovers (an old
# connection closing while the new one opens) and the resolver's sockets.
ENDPOINTS_PER_HOST = 10_000
MAX_ENDPOINTS_PER_HOST = 16_000
# Source ports one address can give to connections (Linux's default ephemeral range).
MAX_ENDPOINTS_PER_ADDRESS = 28_000
# Default start-up spread of a group: 1 ms per endpoint, at most this many seconds.
MAX_DEFAULT_JITTER = 10.0


class EndpointSpec(_Model, RegistrationSettings):
    """One endpoint, or a group of ``count`` endpoints whose URIs follow a ``{n}`` pattern;
    the RoomOS settings that decide failover (RegistrationSettings) are shared by the group."""

    uri: str = Field(description="an AOR, or a pattern such as {n}@uctest.local")
    count: int = Field(default=1, ge=1)
    first: int = Field(default=1001, ge=0, description="n of the first member")
    # The host process's component name (a group over several hosts: NAME.1, NAME.2...).
    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    hosts: int | None = Field(default=None, ge=1, description="host processes to spread over")
    address: IPvAnyAddress | None = None
    addresses: int = Field(default=1, ge=1, description="address pool size; 1: source ports")
    jitter: float | None = Field(default=None, ge=0, description="start-up spread, seconds")
    # DNS: shared (one cache per host, TTL honoured), independent (a cache per endpoint, as
    # separate devices), uncached (every lookup asks the server, as the seed's endpoint did).
    resolve: Literal["shared", "independent", "uncached"] = "shared"
    # Settings every member shares: any field named as in EndpointConfig is passed through.
    proxy: str | None = Field(default=None, description="default: the lab's domain (SRV)")
    transport: Literal["tcp", "udp", "tls", "auto"] = "tcp"
    expires: int = Field(default=3600, ge=1)
    refresh_ratio: float = Field(default=0.9, gt=0, lt=1)
    t1: float = Field(default=0.5, gt=0, le=10)
    retry_base: float = Field(default=30.0, gt=0)
    retry_max: float = Field(default=1800.0, gt=0)
    failed_memory: float = Field(default=60.0, ge=0)
    attach: str | None = Field(default=None, pattern=ATTACH_PATTERN)
    # A group of replicas nobody lists: endpoint hosts that join the lab's collector
    # (``python -m endpoint --config-from-lab --control connect:...``, ``docker compose up
    # --scale endpoint=N``) each get the next free slot: replica k (from 1) runs members
    # (k - 1) * count_per_replica onwards, on the address it connected from.
    scalable: bool = False
    count_per_replica: int = Field(default=1, ge=1, le=MAX_ENDPOINTS_PER_HOST)
    max_replicas: int = Field(default=64, ge=1)

    def host_count(self) -> int:
        return self.hosts or -(-self.count // ENDPOINTS_PER_HOST)

    def start_jitter(self) -> float:
        if self.jitter is not None:
            return self.jitter
        return 0.0 if self.count == 1 else min(self.count * 0.001, MAX_DEFAULT_JITTER)

    def aor(self, i: int) -> str:
        """The ``i``-th member's AOR (0-based)."""
        return member_aor(self.uri, self.first + i)


# EndpointSpec fields that are endpoint settings, handed to every member as they are.
_GROUP_FIELDS = frozenset({"name", "uri", "address"})
ENDPOINT_SETTINGS = tuple(
    name
    for name in EndpointSpec.model_fields
    if name in EndpointConfig.model_fields and name not in _GROUP_FIELDS and name != "proxy"
)


@dataclass(frozen=True, slots=True)
class EndpointHostPlan:
    """One endpoint host process: ``count`` members of group ``group`` from ``start``."""

    name: str
    group: int
    start: int
    count: int


@dataclass(slots=True)
class _EndpointIndex:
    """Where each endpoint lives, found without listing them: literal AORs in a dict, patterns
    by regex (a lab has few groups)."""

    hosts: list[EndpointHostPlan]
    literal: dict[str, int]  # AOR -> group
    patterns: list[tuple[re.Pattern[str], int]]  # (AORs of a {n} group, group)
    names: dict[str, int]  # host component name -> index in hosts


class LabConfig(_Model):
    name: str = Field(default="seed", pattern=NAME_PATTERN)
    domain: str = "uctest.local"
    dns: DnsSpec = DnsSpec()
    peers: list[PeerSpec] = Field(min_length=1)
    registrar: RegistrarSpec = RegistrarSpec()
    endpoints: list[EndpointSpec] = []
    endpoint_base_address: IPvAnyAddress = IPv4Address("127.0.0.101")
    # loopback: every component the lab runs sits on 127.0.0.0/8 (or ::1); containers: on a
    # container network inside 198.18.0.0/15 (RFC 2544's benchmarking range).
    network: Literal["loopback", "containers"] = "loopback"
    # HOST:PORT where the supervisor accepts components that join it (--control connect:...):
    # the replicas of scalable endpoint groups. Beyond loopback it requires the lab's token.
    collector: str | None = Field(default=None, pattern=ATTACH_PATTERN)
    _index: _EndpointIndex = PrivateAttr()

    @model_validator(mode="after")
    def _check(self) -> LabConfig:
        self.domain = self.domain.lower().rstrip(".")
        names: set[str] = {"dns"}
        for peer in self.peers:
            if peer.name in names:
                raise ValueError(f"component name {peer.name!r} is used twice (or is reserved)")
            names.add(peer.name)
        addresses = [str(p.address) for p in self.peers]
        if len(set(addresses)) != len(addresses):
            raise ValueError("two peers share an address; give each peer its own 127.x.y.z")
        self._check_endpoints(names)
        self._check_expiry()
        self._check_addresses()
        # Building every component's config here makes each one's own checks part of loading
        # the lab, so a bad endpoint proxy or DNS record fails with the file, not at runtime.
        _derive("dns", self.dns_config)
        for index, peer in enumerate(self.peers):
            _derive(f"peers[{index}]", lambda name=peer.name: self.registrar_config(name))
        # One member per group stands for all: they differ only in AOR and address.
        for index in range(len(self.endpoints)):
            _derive(f"endpoints[{index}]", lambda index=index: self.group_config(index))
        return self

    def _check_endpoints(self, names: set[str]) -> None:
        cursor = int(self.endpoint_base_address)
        hosts: list[EndpointHostPlan] = []
        literal: dict[str, int] = {}
        patterns: list[tuple[re.Pattern[str], int]] = []
        ranges: dict[str, list[tuple[int, int, int]]] = {}
        for index, spec in enumerate(self.endpoints):
            where = f"endpoints[{index}]"
            spec.uri = spec.uri.removeprefix("sip:")
            grouped = PLACEHOLDER in spec.uri
            if spec.scalable:
                self._check_scalable(where, spec, index, names)
                span = (spec.first, spec.first + spec.max_replicas * spec.count_per_replica, index)
                for low, high, other in ranges.setdefault(spec.uri.lower(), []):
                    if low < span[1] and span[0] < high:
                        raise ValueError(f"{where} and endpoints[{other}] share AORs ({spec.uri})")
                ranges[spec.uri.lower()].append(span)
                continue
            if spec.count > 1 and not grouped:
                raise ValueError(f"{where}: a group of {spec.count} needs {{n}} in its uri")
            if spec.address is None:
                spec.address = ip_address(cursor)
            cursor += spec.addresses
            per_address = -(-spec.count // spec.addresses)
            if per_address > MAX_ENDPOINTS_PER_ADDRESS:
                raise ValueError(
                    f"{where}: {per_address} endpoints per address is more than the "
                    f"{MAX_ENDPOINTS_PER_ADDRESS} source ports an address has; raise 'addresses'"
                )
            count = spec.host_count()
            if count > spec.count or -(-spec.count // count) > MAX_ENDPOINTS_PER_HOST:
                raise ValueError(
                    f"{where}: {spec.count} endpoints over {count} host(s); a host runs "
                    f"1 to {MAX_ENDPOINTS_PER_HOST} endpoints (one open file each)"
                )
            if spec.attach is not None and count > 1:
                raise ValueError(f"{where}: an attached endpoint host is one host; hosts: 1")
            base = spec.name = spec.name or (spec.uri if spec.count == 1 else f"ep-{index + 1}")
            for shard in range(count):
                name = base if count == 1 else f"{base}.{shard + 1}"
                if name in names:
                    raise ValueError(f"component name {name!r} is used twice (or is reserved)")
                names.add(name)
                start, stop = shard * spec.count // count, (shard + 1) * spec.count // count
                hosts.append(EndpointHostPlan(name, index, start, stop - start))
            if grouped:
                span = (spec.first, spec.first + spec.count, index)
                for low, high, other in ranges.setdefault(spec.uri.lower(), []):
                    if low < span[1] and span[0] < high:
                        raise ValueError(f"{where} and endpoints[{other}] share AORs ({spec.uri})")
                ranges[spec.uri.lower()].append(span)
                patterns.append((pattern_regex(spec.uri), index))
            else:
                aor = spec.uri.lower()
                if aor in literal:
                    raise ValueError(f"{where}: endpoint {spec.uri} is listed twice")
                literal[aor] = index
        scalable = [(pattern_regex(s.uri), s) for s in self.endpoints if s.scalable]
        for aor, index in literal.items():
            if self._in_pattern(aor, patterns) is not None or any(
                (found := regex.fullmatch(aor))
                and 0 <= int(found.group(1)) - s.first < s.max_replicas * s.count_per_replica
                for regex, s in scalable
            ):
                raise ValueError(f"endpoints[{index}]: {aor} is also a member of a group")
        self._index = _EndpointIndex(
            hosts, literal, patterns, {h.name: i for i, h in enumerate(hosts)}
        )

    def _check_scalable(self, where: str, spec: EndpointSpec, index: int, names: set[str]) -> None:
        if PLACEHOLDER not in spec.uri:
            raise ValueError(f"{where}: a scalable group needs {{n}} in its uri")
        if spec.attach is not None or spec.address is not None or spec.hosts is not None:
            raise ValueError(
                f"{where}: a scalable group's replicas join the lab (address, attach and hosts "
                "are theirs to say)"
            )
        if self.collector is None:
            raise ValueError(f"{where}: a scalable group needs the lab's 'collector: HOST:PORT'")
        spec.name = spec.name or f"ep-{index + 1}"
        for k in (1, spec.max_replicas):
            if self.replica_name(spec, k) in names:
                raise ValueError(f"component name {self.replica_name(spec, k)!r} is used twice")
        names.add(spec.name)

    @staticmethod
    def replica_name(spec: EndpointSpec, k: int) -> str:
        return f"{spec.name}-{k}"

    def scalable_groups(self) -> dict[str, int]:
        """Scalable groups by name -> their index in ``endpoints``."""
        return {s.name: i for i, s in enumerate(self.endpoints) if s.scalable and s.name}

    def replica_config(self, group: int, k: int, address: str) -> HostConfig:
        """What replica ``k`` (from 1) of scalable group ``group`` runs: its slice, on the
        address it connected from."""
        spec = self.endpoints[group]
        per = spec.count_per_replica
        config = self.group_config(group, (k - 1) * per, per, address)
        return HostConfig(name=self.replica_name(spec, k), groups=[config])

    def _in_pattern(
        self, aor: str, patterns: list[tuple[re.Pattern[str], int]]
    ) -> tuple[int, int] | None:
        """(group, member) of a patterned AOR, or None."""
        for regex, index in patterns:
            match = regex.fullmatch(aor)
            if match is not None:
                spec = self.endpoints[index]
                member = int(match.group(1)) - spec.first
                if 0 <= member < spec.count and spec.aor(member).lower() == aor.lower():
                    return index, member
        return None

    def _check_expiry(self) -> None:
        reg = self.registrar
        if reg.min_expires > reg.max_expires:
            raise ValueError(
                f"registrar.min_expires ({reg.min_expires}) is above registrar.max_expires "
                f"({reg.max_expires})"
            )
        if not reg.min_expires <= reg.default_expires <= reg.max_expires:
            raise ValueError(
                f"registrar.default_expires ({reg.default_expires}) must lie between "
                f"min_expires ({reg.min_expires}) and max_expires ({reg.max_expires})"
            )

    def _check_addresses(self) -> None:
        dns = self.dns
        for index, peer in enumerate(self.peers):
            ports = {peer.udp_port, peer.tcp_port, peer.tls_port}
            if peer.address == dns.address and dns.port in ports:
                raise ValueError(
                    f"dns listens on {peer.address} port {dns.port}, which peers[{index}] "
                    f"({peer.name}) uses too; give the DNS server its own address or port"
                )
        placed: list[tuple[str, IPvAnyAddress]] = []
        if dns.attach is None:
            placed.append(("dns.address", dns.address))
        placed += [
            (f"peers[{i}].address", p.address)
            for i, p in enumerate(self.peers)
            if not p.external and p.attach is None
        ]
        for i, e in enumerate(self.endpoints):
            if e.address is not None and e.attach is None:
                last = ip_address(int(e.address) + min(e.addresses, e.count) - 1)
                placed += [(f"endpoints[{i}].address", e.address), (f"endpoints[{i}]", last)]
        for where, address in placed:
            if self.network == "loopback" and not address.is_loopback:
                raise ValueError(
                    f"{where}: {address} is not a loopback address; a lab on this host runs "
                    "on 127.0.0.0/8 (or ::1). Use 'network: containers' for a container "
                    "network, or 'external: true' for a registrar the lab does not run"
                )
            if self.network == "containers" and address not in CONTAINER_NETWORK:
                raise ValueError(
                    f"{where}: {address} is outside {CONTAINER_NETWORK}, the range container "
                    "labs use"
                )

    # -- what each component is told -------------------------------------------------

    def component_names(self) -> list[str]:
        return ["dns", *(p.name for p in self.peers), *(self.endpoint_names())]

    def endpoint_names(self) -> list[str]:
        """The endpoint hosts' component names (one per process)."""
        return [host.name for host in self._index.hosts]

    def endpoint_hosts(self) -> list[EndpointHostPlan]:
        return list(self._index.hosts)

    def endpoint_count(self) -> int:
        return sum(spec.count for spec in self.endpoints if not spec.scalable)

    def endpoint_members(self) -> Iterator[tuple[str, str, str, str]]:
        """Every endpoint as (name, AOR, host component, address), in host order. The name is
        the host's for an endpoint alone in its host (as before groups), else the AOR."""
        for host in self._index.hosts:
            spec = self.endpoints[host.group]
            alone = spec.count == 1
            base = int(spec.address or 0)
            pool = [str(ip_address(base + i)) for i in range(min(spec.addresses, spec.count))]
            for member in range(host.start, host.start + host.count):
                aor = spec.aor(member)
                yield (host.name if alone else aor), aor, host.name, pool[member % len(pool)]

    def endpoint_addresses(self) -> set[str]:
        """Every address an endpoint the lab runs sits on."""
        found = set()
        for spec in self.endpoints:
            if spec.attach is None and spec.address is not None:
                base = int(spec.address)
                found |= {str(ip_address(base + i)) for i in range(min(spec.addresses, spec.count))}
        return found

    def find_endpoint(self, name: str) -> tuple[str, str] | None:
        """(host component, AOR) of the endpoint named by its AOR or its own component name."""
        found = self._locate(name)
        if found is None:
            return None
        host, member = found
        return host.name, self.endpoints[host.group].aor(member)

    def _locate(self, name: str) -> tuple[EndpointHostPlan, int] | None:
        """The host of an endpoint and its member number in its group."""
        index = self._index
        if name in index.names:
            host = index.hosts[index.names[name]]
            return (host, host.start) if host.count == 1 else None
        key = name.removeprefix("sip:").lower()
        found = (index.literal[key], 0) if key in index.literal else None
        found = found or self._in_pattern(key, index.patterns)
        if found is None:
            return None
        group, member = found
        for host in index.hosts:
            if host.group == group and host.start <= member < host.start + host.count:
                return host, member
        return None

    def peer(self, name: str) -> PeerSpec:
        for peer in self.peers:
            if peer.name == name:
                return peer
        raise KeyError(name)

    def dns_address(self) -> str:
        address = self.dns.address
        host = f"[{address}]" if address.version == 6 else str(address)
        return f"{host}:{self.dns.port}"

    def dns_config(self) -> DnsServerConfig:
        records = self.dns.records
        if records is None:
            records = [] if self.dns.zone_file is not None else self.seed_records()
        zone = ZoneConfig(
            origin=self.domain,
            ttl=self.dns.ttl,
            file=self.dns.zone_file,
            records=records,
            rotation=self.dns.rotation,
            allow_update=self.dns.allow_update,
            tsig=self.dns.tsig,
        )
        return DnsServerConfig(
            name="dns",
            address=self.dns.address,
            port=self.dns.port,
            zones=[zone, *self.dns.zones],
            events=self.dns.events,
            event_sample=self.dns.event_sample,
            metrics=self.dns.metrics_address(),
        )

    def seed_records(self) -> list[RecordConfig]:
        """The seed guide's zone: every SRV name it sets up, for every peer with that service
        (``_sips._tcp``, ``_sip._tcp``, ``_sip._udp`` and the three H.323 names), one A per
        peer, and the round-robin cluster name."""
        ttl = self.dns.ttl

        def record(name: str, rtype: str, data: str) -> RecordConfig:
            return RecordConfig(name=name, type=rtype, ttl=ttl, data=data)

        records = [record("ns1", _a_type(self.dns.address), str(self.dns.address))]
        services: list[tuple[str, Callable[[PeerSpec], int | None]]] = [
            ("_sips._tcp", lambda p: p.tls_port),
            ("_sip._tcp", lambda p: p.tcp_port),
            ("_sip._udp", lambda p: p.udp_port),
            ("_h323ls._udp", lambda p: H323_RAS_PORT),
            ("_h323cs._tcp", lambda p: H323_CS_PORT),
            ("_h323rs._udp", lambda p: H323_RAS_PORT),
        ]
        for service, port_of in services:
            for peer in self.peers:
                port = port_of(peer)
                if port:
                    records.append(record(service, "SRV", f"10 10 {port} {peer.name}"))
        for peer in self.peers:
            records.append(record(peer.name, _a_type(peer.address), str(peer.address)))
        for peer in self.peers:
            records.append(record(self.dns.cluster_name, _a_type(peer.address), str(peer.address)))
        return records

    def peer_tls_names(self, name: str) -> tuple[list[str], list[str]]:
        """What a peer's certificate names: its DNS name, the cluster name, the SIP domain
        (DNS names) and its address (IP)."""
        peer = self.peer(name)
        dns_names = [
            f"{peer.name}.{self.domain}",
            f"{self.dns.cluster_name}.{self.domain}",
            self.domain,
            peer.name,
        ]
        return dns_names, [str(peer.address)]

    def registrar_config(
        self, name: str, tls: IssuedCert | None = None, ca: Path | None = None
    ) -> RegistrarConfig:
        """A peer's config; ``tls`` is its certificate from the lab CA (``ca``), if made."""
        peer = self.peer(name)
        reg = self.registrar
        metrics = None
        if peer.metrics_port is not None:
            host = f"[{peer.address}]" if peer.address.version == 6 else str(peer.address)
            metrics = f"{host}:{peer.metrics_port}"
        return RegistrarConfig(
            name=peer.name,
            address=peer.address,
            udp_port=peer.udp_port,
            tcp_port=peer.tcp_port,
            tls_port=peer.tls_port,
            domains=[self.domain],
            min_expires=reg.min_expires,
            max_expires=reg.max_expires,
            default_expires=reg.default_expires,
            refresh=reg.refresh,
            seed=reg.seed,
            capacity=peer.capacity or reg.capacity,
            flow_timer=reg.flow_timer,
            auth=reg.auth,
            maintenance=peer.maintenance,
            tls_cert=tls.cert if tls else None,
            tls_key=tls.key if tls else None,
            tls_client_auth=reg.tls_client_auth if ca else "none",
            tls_client_ca=ca if reg.tls_client_auth != "none" else None,
            metrics=metrics,
            # The peer link: every other peer the lab runs (an external one has no link).
            cluster=[
                ClusterPeer(name=other.name, address=other.address)
                for other in self.peers
                if other.name != peer.name and not other.external
            ],
        )

    def group_config(
        self, group: int, start: int = 0, count: int | None = None, address: str | None = None
    ) -> GroupConfig:
        """Group ``group`` (its members ``start`` to ``start + count``) for an endpoint host;
        ``address``: a replica's own (a scalable group has none until one joins)."""
        spec = self.endpoints[group]
        settings: dict[str, object] = {k: getattr(spec, k) for k in ENDPOINT_SETTINGS}
        settings["proxy"] = spec.proxy or self.domain
        settings["dns"] = [self.dns_address()]
        return GroupConfig(
            uri=spec.uri,
            first=spec.first,
            start=start,
            count=(spec.count_per_replica if spec.scalable else spec.count - start)
            if count is None
            else count,
            address=address or spec.address or _ANY_ADDRESS,
            addresses=spec.addresses,
            jitter=spec.start_jitter(),
            resolve=spec.resolve,
            settings=settings,
        )

    def host_config(self, name: str, ca: Path | None = None) -> HostConfig:
        """What the endpoint host ``name`` is told: its slice of its group. ``ca``: the lab
        CA, which endpoints with ``tls_verify`` and no ``ca_file`` of their own trust."""
        index = self._index
        if name not in index.names:
            raise KeyError(name)
        host = index.hosts[index.names[name]]
        group = self.group_config(host.group, host.start, host.count)
        if (
            ca is not None
            and group.settings.get("tls_verify")
            and not group.settings.get("ca_file")
        ):
            group.settings["ca_file"] = str(ca)
        return HostConfig(name=host.name, groups=[group])

    def endpoint_attach(self, name: str) -> str | None:
        return self.endpoints[self._index.hosts[self._index.names[name]].group].attach

    def endpoint_config(self, name: str) -> EndpointConfig:
        """One endpoint's settings, by its AOR (or its component name when alone)."""
        found = self._locate(name)
        if found is None:
            raise KeyError(name)
        host, member = found
        return self.group_config(host.group, member, 1).member(0)

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True)
        return yaml.safe_dump(data, sort_keys=False)


# Where a scalable group's members are checked before any replica (and its address) exists.
_ANY_ADDRESS = "0.0.0.0"


def _derive(where: str, build: Callable[[], object]) -> None:
    """Build a component's config; its errors name their place in the lab file."""
    try:
        build()
    except ValidationError as exc:
        raise ValueError(describe(exc, where)) from None


def _a_type(address: IPvAnyAddress) -> Literal["A", "AAAA"]:
    return "A" if address.version == 4 else "AAAA"


def default_lab() -> LabConfig:
    """The seed's lab on loopback (DESIGN.md §4)."""
    return LabConfig(
        name="seed",
        domain="uctest.local",
        peers=[
            PeerSpec(name="exp1", address=IPv4Address("127.0.0.11")),
            PeerSpec(name="exp2", address=IPv4Address("127.0.0.12")),
        ],
        endpoints=[EndpointSpec(uri="1001@uctest.local", proxy="uctest.local")],
    )


def parse_lab(data: object, source: str, base: Path | None = None) -> LabConfig:
    """Validate a lab mapping; file paths in it are relative to ``base`` (the file's folder)."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: a lab file must be a YAML mapping (name:, domain:, peers:, ...)"
        )
    if base is not None:
        _anchor_paths(data, base)
    try:
        return LabConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe(exc, source)) from None


def load_lab(path: Path) -> LabConfig:
    """Read and validate a lab file; any problem is a ConfigError with one line to show."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read lab file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    return parse_lab(data, str(path), path.parent)


def _anchor_paths(data: dict[str, object], base: Path) -> None:
    """Zone file paths in a lab file mean "next to the lab file", wherever siplab runs."""
    dns = data.get("dns")
    if not isinstance(dns, dict):
        return
    if isinstance(dns.get("zone_file"), str):
        dns["zone_file"] = str(base / dns["zone_file"])
    for zone in dns.get("zones") or []:
        if isinstance(zone, dict) and isinstance(zone.get("file"), str):
            zone["file"] = str(base / zone["file"])
