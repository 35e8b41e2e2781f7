"""A registrar peer's settings, validated where they enter (lab file or command line)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress, field_validator, model_validator

from emulator.sip.digest import ALGORITHMS

Port = int


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CredentialGroup(_Model):
    """Passwords for a group of endpoints: users matching ``users`` (a regular expression,
    whole name) get ``password`` with ``{user}`` replaced by their user part."""

    users: str = Field(min_length=1)
    password: str = Field(min_length=1)

    @field_validator("users")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"users {value!r} is not a regular expression: {exc}") from None
        return value


class AuthConfig(_Model):
    """Digest authentication of REGISTER (RFC 7616 / RFC 8760)."""

    realm: str | None = Field(default=None, description="default: the peer's first domain")
    # One challenge per algorithm, in this order (RFC 8760 §2.4: the preferred one first).
    algorithms: list[Literal["SHA-256", "MD5"]] = Field(default=["SHA-256", "MD5"], min_length=1)
    nonce_lifetime: float = Field(default=300.0, gt=0, description="seconds a nonce is good")
    users: dict[str, str] = {}
    groups: list[CredentialGroup] = []
    # This many failures from one source address within lockout_window locks it out for
    # lockout_time: every REGISTER from it gets 403 without a challenge.
    lockout_failures: int = Field(default=5, ge=1)
    lockout_window: float = Field(default=60.0, gt=0)
    lockout_time: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _known(self) -> AuthConfig:
        assert all(a in ALGORITHMS for a in self.algorithms)
        if not self.users and not self.groups:
            raise ValueError("auth needs users or groups (else nobody could register)")
        return self

    def password(self, user: str) -> str | None:
        if user in self.users:
            return self.users[user]
        for group in self.groups:
            if re.fullmatch(group.users, user):
                return group.password.replace("{user}", user)
        return None


class ClusterPeer(_Model):
    """Another peer of the cluster, whose peer link we connect to."""

    name: str = Field(min_length=1)
    address: IPvAnyAddress
    port: Port = Field(default=5070, ge=1, le=65535)


class RegistrarConfig(_Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    address: IPvAnyAddress
    udp_port: Port | None = Field(default=5060, ge=1, le=65535)
    tcp_port: Port | None = Field(default=5060, ge=1, le=65535)
    tls_port: Port | None = Field(default=5061, ge=1, le=65535)
    domains: list[str] = Field(min_length=1)
    # Expressway's defaults for the standard refresh strategy: it grants at most 60 s, so an
    # endpoint refreshes about once a minute, and it answers shorter requests with 423.
    min_expires: int = Field(default=45, ge=0)
    max_expires: int = Field(default=60, ge=1)
    default_expires: int = Field(default=60, ge=1)
    # Expressway's refresh strategies: "maximum" grants the lesser of the requested expiry and
    # max_expires; "variable" a random value between min_expires and that.
    refresh: Literal["maximum", "variable"] = "maximum"
    # Seed of the peer's randomness ("variable" expiries, tags, nonces) for repeatable runs.
    seed: int | None = None
    # New AORs past this many registered AORs are refused (Expressway sizing: 2,500, 5,000).
    capacity: int | None = Field(default=None, ge=1)
    # RFC 5626 §4.4.1: the keep-alive interval suggested to outbound clients, in seconds.
    flow_timer: int = Field(default=120, ge=1)
    auth: AuthConfig | None = None
    maintenance: bool = False
    # TLS: the peer's certificate chain and key (PEM). Without them the peer makes a throwaway
    # certificate for its address, which no client can verify.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Mutual TLS: client certificates are checked against this CA file.
    tls_client_auth: Literal["none", "optional", "required"] = "none"
    tls_client_ca: Path | None = None
    # Prometheus /metrics as HOST:PORT; None: no listener.
    metrics: str | None = None
    # The peer link (registrar/peerlink.py) on this peer's address: bindings shared with the
    # other peers of the cluster. None: no link, this peer knows only its own bindings.
    cluster_port: Port | None = Field(default=5070, ge=1, le=65535)
    cluster: list[ClusterPeer] = []
    # Seconds between pings on a peer link; a link silent for three of them is down.
    cluster_heartbeat: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> RegistrarConfig:
        if self.min_expires > self.max_expires:
            raise ValueError(
                f"min_expires ({self.min_expires}) is above max_expires ({self.max_expires})"
            )
        if not any((self.udp_port, self.tcp_port, self.tls_port)):
            raise ValueError("a registrar needs at least one of udp_port, tcp_port, tls_port")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_client_auth != "none" and self.tls_client_ca is None:
            raise ValueError(f"tls_client_auth {self.tls_client_auth!r} needs tls_client_ca")
        self.domains = [d.lower().rstrip(".") for d in self.domains]
        return self

    @property
    def realm(self) -> str:
        return (self.auth and self.auth.realm) or self.domains[0]
