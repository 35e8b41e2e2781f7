"""An endpoint's settings: the RoomOS ``SIP`` configuration that matters for registration."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    ValidationError,
    field_validator,
    model_validator,
)

from emulator.validation import describe
from endpoint.locator import parse_proxy

# Settings that may be changed at run time with the ``set`` control op (RoomOS lets the user
# change these while the device runs; a change restarts the locator).
SETTABLE: frozenset[str] = frozenset(
    {
        "proxy",
        "proxy2",
        "proxy3",
        "proxy4",
        "transport",
        "outbound",
        "keepalive",
        "keepalive_interval",
        "pong_timeout",
        "tls_verify",
        "ca_file",
        "username",
        "password",
        "expires",
    }
)


class RegistrationSettings(BaseModel):
    """The RoomOS ``SIP`` settings that decide failover, shared by the lab file's endpoint
    entries and the endpoint's own configuration."""

    # Proxy[2..4] Address. With Outbound Off RoomOS uses Proxy[1] only (the seed: "specifying
    # peers as SIP Proxy 1, 2, 3 and 4 ... provides no redundancy; it works only with SIP
    # Outbound enabled").
    proxy2: str | None = None
    proxy3: str | None = None
    proxy4: str | None = None
    # RFC 5626: one flow per proxy (two to the one proxy's first targets when only Proxy[1] is
    # set), each with its own reg-id, all registered at once.
    outbound: bool = False
    # RFC 5626 §4.4 keep-alives on a registered flow: CRLF ping/pong on TCP/TLS, OPTIONS on UDP.
    # 10 s suits a lab (RFC 5626 suggests 95-120 s on the Internet); off is the seed's endpoint,
    # which notices a silent peer only at its next refresh.
    keepalive: bool = True
    keepalive_interval: float = Field(default=10.0, gt=0)
    pong_timeout: float = Field(default=10.0, gt=0)
    tls_verify: bool = False
    # PEM file of the CAs to trust when tls_verify is on (the lab's CA: <run dir>/ca.pem);
    # none: the system's trust store.
    ca_file: Path | None = None
    # SIP Authentication UserName / Password, answered to a 401 or 407 challenge.
    username: str | None = Field(default=None, min_length=1)
    password: str | None = None

    @field_validator("proxy2", "proxy3", "proxy4")
    @classmethod
    def _check_more_proxies(cls, value: str | None) -> str | None:
        if value is not None:
            parse_proxy(value)
        return value

    def settings(self) -> dict[str, Any]:
        """These settings as keyword arguments for another model that has them."""
        return {name: getattr(self, name) for name in RegistrationSettings.model_fields}


class EndpointConfig(RegistrationSettings):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
    uri: str = Field(description="AOR as RoomOS shows it: user@domain")
    proxy: str = Field(description="Proxy[1] Address: a domain (SRV), a name (A), or an IP")
    transport: Literal["tcp", "udp", "tls", "auto"] = "tcp"
    address: IPvAnyAddress = Field(description="the endpoint's own address")
    dns: list[str] = Field(min_length=1, description="DNS servers as ip:port")
    expires: int = Field(default=3600, ge=1, description="expiry asked for; the registrar decides")
    # Refresh when this share of the granted expiry has passed (60 s granted -> refresh at 54 s).
    refresh_ratio: float = Field(default=0.9, gt=0, lt=1)
    t1: float = Field(default=0.5, gt=0, le=10)
    # RFC 5626 §4.5 flow-recovery backoff when every target has failed: base * 2^n, capped,
    # times a random factor in [0.5, 1].
    retry_base: float = Field(default=30.0, gt=0)
    retry_max: float = Field(default=1800.0, gt=0)
    # A target that failed goes to the end of the list for this long, so a dead peer is not
    # the first one retried (RoomOS and baresip retry it first).
    failed_memory: float = Field(default=60.0, ge=0)

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, value: str) -> str:
        value = value.removeprefix("sip:")
        user, sep, domain = value.partition("@")
        if not sep or not user or not domain:
            raise ValueError("uri must look like user@domain, e.g. 1001@uctest.local")
        return value

    @field_validator("proxy")
    @classmethod
    def _check_proxy(cls, value: str) -> str:
        parse_proxy(value)
        return value

    @field_validator("dns")
    @classmethod
    def _check_dns(cls, value: list[str]) -> list[str]:
        for server in value:
            parse_host_port(server)
        return value

    @model_validator(mode="after")
    def _check_retry(self) -> EndpointConfig:
        if self.retry_base > self.retry_max:
            raise ValueError("retry_base must not exceed retry_max")
        return self

    @property
    def domain(self) -> str:
        return self.uri.partition("@")[2]

    @property
    def proxies(self) -> list[str]:
        """Proxy[1..4] as configured, in order."""
        return [p for p in (self.proxy, self.proxy2, self.proxy3, self.proxy4) if p]

    def changed(self, updates: dict[str, Any]) -> EndpointConfig:
        """A copy with ``updates`` applied and validated; only ``SETTABLE`` names."""
        unknown = sorted(set(updates) - SETTABLE)
        if unknown:
            raise ValueError(
                f"cannot set {', '.join(unknown)} (settable: {', '.join(sorted(SETTABLE))})"
            )
        try:
            return EndpointConfig.model_validate({**self.model_dump(), **updates})
        except ValidationError as exc:
            raise ValueError(describe(exc, "set")) from None

    def dns_servers(self) -> list[tuple[str, int]]:
        return [parse_host_port(server) for server in self.dns]


def parse_host_port(text: str, default_port: int = 53) -> tuple[str, int]:
    """``127.0.0.10:1053``, ``[::1]:1053`` or a bare address."""
    host, port = text, default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = _port(rest.removeprefix(":"), text)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(port_text, text)
    try:
        ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r} is not an ip:port address") from None
    return host, port


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{whole!r} has a bad port")
    return int(text)
