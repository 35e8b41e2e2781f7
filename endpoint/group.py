"""An endpoint host's configuration: groups of endpoints described by a pattern, not listed.

A group is a URI pattern (``{n}@uctest.local``), the ``n`` of its first member, a slice of
members this host runs, an address pool (consecutive addresses, used in turn; one address
means many source ports), start-up jitter, and the settings every member shares. Members are
computed when needed (``aor(i)``, ``address(i)``, ``member(i)``), so a group of 25,000 is one
small object until the host builds its registrations.
"""

from __future__ import annotations

import re
from ipaddress import ip_address
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress, model_validator

from endpoint.config import EndpointConfig

PLACEHOLDER = "{n}"


def member_aor(pattern: str, n: int) -> str:
    return pattern.replace(PLACEHOLDER, str(n)).removeprefix("sip:")


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """Matches the AORs ``pattern`` makes; group 1 is ``n``."""
    head, _, tail = pattern.removeprefix("sip:").partition(PLACEHOLDER)
    return re.compile(re.escape(head) + r"([0-9]+)" + re.escape(tail), re.IGNORECASE)


class GroupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uri: str = Field(description="an AOR, or a pattern with {n} for groups of more than one")
    first: int = Field(default=1001, ge=0, description="n of the group's first member")
    start: int = Field(default=0, ge=0, description="first member (0-based) this host runs")
    count: int = Field(default=1, ge=1, description="members this host runs, from start")
    address: IPvAnyAddress = Field(description="the first address of the group's pool")
    addresses: int = Field(default=1, ge=1, description="pool size; member i uses i mod size")
    jitter: float = Field(default=0.0, ge=0, description="start-up spread, seconds")
    # shared: one TTL cache for the group, identical queries coalesced; independent: a cache per
    # endpoint (separate devices); uncached: every lookup goes to the DNS server.
    resolve: Literal["shared", "independent", "uncached"] = "shared"
    # The EndpointConfig fields every member shares (proxy, transport, timers...).
    settings: dict[str, Any] = {}

    @model_validator(mode="after")
    def _check(self) -> GroupConfig:
        if self.count > 1 and PLACEHOLDER not in self.uri:
            raise ValueError(f"a group of {self.count} needs {PLACEHOLDER} in its uri pattern")
        for reserved in ("name", "uri", "address"):
            if reserved in self.settings:
                raise ValueError(f"settings must not set {reserved!r}: the group computes it")
        self.member(0)  # every member is built the same way: one checks them all
        return self

    def aor(self, i: int) -> str:
        """The AOR of this host's ``i``-th member (0-based, within start..start+count)."""
        return member_aor(self.uri, self.first + self.start + i)

    def address_of(self, i: int) -> str:
        return str(ip_address(int(self.address) + (self.start + i) % self.addresses))

    def template(self) -> EndpointConfig:
        """Member 0's config; the others are copies with their own AOR and address."""
        aor = self.aor(0)
        return EndpointConfig.model_validate(
            {**self.settings, "name": aor, "uri": aor, "address": self.address_of(0)}
        )

    def member(self, i: int, template: EndpointConfig | None = None) -> EndpointConfig:
        base = template or self.template()
        if i == 0:
            return base
        aor = self.aor(i)
        # A copy, not a validation: the fields that differ are built from the validated ones.
        return base.model_copy(
            update={"name": aor, "uri": aor, "address": ip_address(self.address_of(i))}
        )


class HostConfig(BaseModel):
    """What ``python -m endpoint`` runs: one process, one or more groups."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
    groups: list[GroupConfig] = Field(min_length=1)
    # A graceful stop waits this long for the de-registrations (Expires: 0) to be answered.
    stop_timeout: float = Field(default=3.0, ge=0)
    # Connections being set up at once: a mass failover must not overflow the survivor's
    # listen backlog (a dropped SYN costs a 1 s retransmission).
    connect_concurrency: int = Field(default=64, ge=1)

    @property
    def size(self) -> int:
        return sum(group.count for group in self.groups)

    @classmethod
    def single(cls, config: EndpointConfig) -> HostConfig:
        """A host of one endpoint (``python -m endpoint --uri ...``)."""
        settings = config.model_dump(mode="json", exclude={"name", "uri", "address"})
        return cls(
            name=config.name,
            groups=[GroupConfig(uri=config.uri, address=config.address, settings=settings)],
        )
