"""A registrar peer's settings, validated where they enter (lab file or command line)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress, model_validator

Port = int


class RegistrarConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
    maintenance: bool = False

    @model_validator(mode="after")
    def _check(self) -> RegistrarConfig:
        if self.min_expires > self.max_expires:
            raise ValueError(
                f"min_expires ({self.min_expires}) is above max_expires ({self.max_expires})"
            )
        if not any((self.udp_port, self.tcp_port, self.tls_port)):
            raise ValueError("a registrar needs at least one of udp_port, tcp_port, tls_port")
        self.domains = [d.lower().rstrip(".") for d in self.domains]
        return self
