"""The lab model: which components exist, where they listen, and what each one is told.

A lab file (YAML) is validated here, once, into a :class:`LabConfig`; every component gets its
own typed configuration derived from it (``dns_config``, ``registrar_config``,
``endpoint_config``). With no file, :func:`default_lab` reproduces the seed: DNS for
``uctest.local``, peers ``exp1``/``exp2`` and endpoint ``1001@uctest.local`` over TCP.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, ip_address
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    ValidationError,
    model_validator,
)

from dnsserver.config import DnsServerConfig, RecordConfig, TsigKeyConfig, ZoneConfig
from emulator.validation import ConfigError, describe
from endpoint.config import EndpointConfig, RegistrationSettings
from registrar.ca import IssuedCert
from registrar.config import AuthConfig, RegistrarConfig

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


class EndpointSpec(_Model, RegistrationSettings):
    uri: str
    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    proxy: str | None = Field(default=None, description="default: the lab's domain (SRV)")
    transport: Literal["tcp", "udp", "tls", "auto"] = "tcp"
    address: IPvAnyAddress | None = None
    expires: int = Field(default=3600, ge=1)
    refresh_ratio: float = Field(default=0.9, gt=0, lt=1)
    t1: float = Field(default=0.5, gt=0, le=10)
    retry_base: float = Field(default=30.0, gt=0)
    retry_max: float = Field(default=1800.0, gt=0)
    failed_memory: float = Field(default=60.0, ge=0)
    attach: str | None = Field(default=None, pattern=ATTACH_PATTERN)


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
        for index, spec in enumerate(self.endpoints):
            if spec.address is None:
                spec.address = ip_address(int(self.endpoint_base_address) + index)
            if spec.name is None:
                spec.name = spec.uri.removeprefix("sip:")
            if spec.name in names:
                raise ValueError(f"component name {spec.name!r} is used twice (or is reserved)")
            names.add(spec.name)
        self._check_expiry()
        self._check_addresses()
        # Building every component's config here makes each one's own checks part of loading
        # the lab, so a bad endpoint proxy or DNS record fails with the file, not at runtime.
        _derive("dns", self.dns_config)
        for index, peer in enumerate(self.peers):
            _derive(f"peers[{index}]", lambda name=peer.name: self.registrar_config(name))
        for index, spec in enumerate(self.endpoints):
            _derive(f"endpoints[{index}]", lambda name=spec.name: self.endpoint_config(name))
        return self

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
        placed += [
            (f"endpoints[{i}].address", e.address)
            for i, e in enumerate(self.endpoints)
            if e.address is not None and e.attach is None
        ]
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
        return [spec.name for spec in self.endpoints if spec.name is not None]

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
        )

    def endpoint_config(self, name: str) -> EndpointConfig:
        for spec in self.endpoints:
            if spec.name == name:
                return EndpointConfig(
                    name=name,
                    uri=spec.uri,
                    proxy=spec.proxy or self.domain,
                    transport=spec.transport,
                    address=spec.address,
                    dns=[self.dns_address()],
                    expires=spec.expires,
                    refresh_ratio=spec.refresh_ratio,
                    t1=spec.t1,
                    retry_base=spec.retry_base,
                    retry_max=spec.retry_max,
                    failed_memory=spec.failed_memory,
                    **spec.settings(),
                )
        raise KeyError(name)

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True)
        return yaml.safe_dump(data, sort_keys=False)


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
