"""RFC 3263 §4 target location for the endpoint: which address, port and transport to try, in order.

The ordering is pure (``plan_targets`` takes DNS answers and a random source and returns targets),
so it is tested without sockets; ``Resolver`` is a thin dnspython adapter that fetches the answers.

Strategy numbers follow RoomOS's DnsLocator log lines (see the seed): 1 = TLS via ``_sips._tcp``
SRV, 2 = TCP via ``_sip._tcp``, 3 = UDP via ``_sip._udp``, 4 = "unspec" via A records of the proxy
name, 0 = a numeric IP configured directly.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import re
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar, cast

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

Transport = Literal["udp", "tcp", "tls"]
Family = Literal["A", "AAAA"]
_T = TypeVar("_T")

# Service name -> (RoomOS strategy number, transport), in the order RoomOS tries them.
SRV_SERVICES: Final[dict[str, tuple[int, Transport]]] = {
    "_sips._tcp": (1, "tls"),
    "_sip._tcp": (2, "tcp"),
    "_sip._udp": (3, "udp"),
}
# RFC 3263 §4.1: NAPTR services for SIP and the transport each one names.
NAPTR_SERVICES: Final[dict[str, tuple[int, Transport]]] = {
    "SIPS+D2T": (1, "tls"),
    "SIP+D2T": (2, "tcp"),
    "SIP+D2U": (3, "udp"),
}
STRATEGY_A: Final = 4
STRATEGY_NUMERIC: Final = 0

# RFC 3263 §4.1: with no transport configured and no SRV to choose one, a sip: URI uses UDP.
AUTO_FALLBACK_TRANSPORT: Final[Transport] = "udp"

_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def default_port(transport: Transport) -> int:
    return 5061 if transport == "tls" else 5060


@dataclass(frozen=True, slots=True)
class Target:
    strategy: int
    transport: Transport
    host: str
    port: int
    explicit_port: bool
    # The name the address was found under (the SRV target, the proxy's host name, or the
    # address itself): what a TLS certificate must match (RFC 5922 §4). Not part of identity.
    name: str = field(default="", compare=False)

    def display(self) -> str:
        """The target as RoomOS prints it: A-record targets without a port unless one was set."""
        if not self.explicit_port:
            return self.host
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def label(self) -> str:
        # A-record and numeric targets came from no transport-specific record; RoomOS says "unspec".
        if self.strategy in (STRATEGY_A, STRATEGY_NUMERIC):
            return "unspec"
        return self.transport


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str


def _is_unavailable(record: SrvRecord) -> bool:
    # RFC 2782: a target of "." means the service is decidedly not available at this domain.
    return record.target in (".", "")


def order_srv(records: Sequence[SrvRecord], rng: random.Random) -> list[SrvRecord]:
    """RFC 2782 ordering: ascending priority, weighted random selection within a priority."""
    usable_records = [r for r in records if not _is_unavailable(r)]
    ordered: list[SrvRecord] = []
    for priority in sorted({r.priority for r in usable_records}):
        group = [r for r in usable_records if r.priority == priority]
        # Weight-0 entries first, so they are picked only when the draw is exactly 0: the RFC's
        # "very small chance" rather than never.
        remaining = [r for r in group if r.weight == 0] + [r for r in group if r.weight != 0]
        while remaining:
            pick = rng.randint(0, sum(r.weight for r in remaining))
            running = 0
            for index, record in enumerate(remaining):
                running += record.weight
                if running >= pick:
                    ordered.append(remaining.pop(index))
                    break
    return ordered


@dataclass(frozen=True, slots=True)
class NaptrRecord:
    order: int
    preference: int
    flags: str
    service: str
    replacement: str


def order_naptr(records: Sequence[NaptrRecord]) -> list[tuple[str, int, Transport]]:
    """RFC 3263 §4.1: the SIP NAPTR records that lead to SRV ("s" flag, a known service), by
    order then preference, as (SRV name, strategy, transport)."""
    usable_records = [
        r for r in records if r.flags.lower() == "s" and r.service.upper() in NAPTR_SERVICES
    ]
    usable_records.sort(key=lambda r: (r.order, r.preference))
    return [(_key(r.replacement), *NAPTR_SERVICES[r.service.upper()]) for r in usable_records]


@dataclass(frozen=True, slots=True)
class ProxyAddress:
    host: str
    port: int | None

    @property
    def is_numeric(self) -> bool:
        return _is_ip(self.host)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _parse_port(text: str, original: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"bad port {text!r} in proxy address {original!r} (expected 1-65535)")
    return int(text)


def parse_proxy(text: str) -> ProxyAddress:
    """Parse a configured proxy: a host name, IPv4, IPv6 (``[v6]`` with a port), optional port."""
    stripped = text.strip()
    if not stripped:
        raise ValueError("empty proxy address")
    if stripped.startswith("["):
        close = stripped.find("]")
        if close == -1:
            raise ValueError(f"missing ']' in proxy address {text!r}")
        host, rest = stripped[1:close], stripped[close + 1 :]
        if not _is_ip(host) or ":" not in host:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address in {text!r}")
        if not rest:
            return ProxyAddress(host, None)
        if not rest.startswith(":"):
            raise ValueError(f"unexpected {rest!r} after ']' in proxy address {text!r}")
        return ProxyAddress(host, _parse_port(rest[1:], text))
    if stripped.count(":") > 1:
        # Several colons and no brackets: only a bare IPv6 address (without port) makes sense.
        if _is_ip(stripped):
            return ProxyAddress(stripped, None)
        raise ValueError(f"bad proxy address {text!r} (write IPv6 with a port as [addr]:port)")
    host, sep, port_text = stripped.partition(":")
    port = _parse_port(port_text, text) if sep else None
    if not _is_ip(host):
        name = host.removesuffix(".")
        if len(name) > 253 or not all(_HOST_LABEL.fullmatch(p) for p in name.split(".")):
            raise ValueError(f"bad host name {host!r} in proxy address {text!r}")
    return ProxyAddress(host, port)


def _key(name: str) -> str:
    # DNS names compare case-insensitively and dnspython hands back absolute names ("x.local.").
    return name.rstrip(".").lower()


def plan_targets(
    proxy: ProxyAddress,
    *,
    transport: Transport | Literal["auto"],
    srv: Mapping[str, Sequence[SrvRecord]],
    addresses: Mapping[str, Sequence[str]],
    rng: random.Random,
    naptr: Sequence[NaptrRecord] = (),
) -> list[Target]:
    """All targets for ``proxy`` in RoomOS's strategy order (filter them with ``usable``).

    With ``transport="auto"`` and NAPTR records (RFC 3263 §4.1), their order and preference
    decide the transports; ``srv`` then holds the SRV answers by the NAPTR replacement names."""
    fallback: Transport = AUTO_FALLBACK_TRANSPORT if transport == "auto" else transport
    if proxy.is_numeric:
        port = proxy.port or default_port(fallback)
        return [
            Target(STRATEGY_NUMERIC, fallback, proxy.host, port, proxy.port is not None, proxy.host)
        ]
    by_name = {_key(name): list(addrs) for name, addrs in addresses.items()}
    services = list(SRV_SERVICES.items())
    ordered = order_naptr(naptr) if transport == "auto" and proxy.port is None else []
    if ordered:
        services = [(name, (strategy, t)) for name, strategy, t in ordered]
    # RFC 3263 §4.2: an explicit port means no SRV lookup, and A is used only when no SRV exists
    # ("." records still count as existing: they say the service is not offered).
    if proxy.port is None and any(srv.get(service) for service, _ in services):
        targets: list[Target] = []
        for service, (strategy, service_transport) in services:
            for record in order_srv(srv.get(service, ()), rng):
                name = _key(record.target)
                targets.extend(
                    Target(strategy, service_transport, address, record.port, True, name)
                    for address in by_name.get(name, ())
                )
        return targets
    port = proxy.port or default_port(fallback)
    host = _key(proxy.host)
    return [
        Target(STRATEGY_A, fallback, address, port, proxy.port is not None, host)
        for address in by_name.get(host, ())
    ]


def usable(target: Target, transport: Transport | Literal["auto"]) -> bool:
    """Whether an endpoint configured with ``transport`` may use ``target``."""
    return transport == "auto" or target.transport == transport


@dataclass(frozen=True, slots=True)
class LookupResult:
    """Raw DNS answers for one proxy: SRV records by service name, addresses by host name."""

    srv: dict[str, list[SrvRecord]]
    addresses: dict[str, list[str]]
    naptr: list[NaptrRecord] = field(default_factory=list)


class LocateError(Exception):
    """DNS could not be consulted (timeout, no server answering); distinct from "no records"."""


class Resolver:
    """Async DNS lookups for ``plan_targets``, over dnspython.

    No cache of its own: an endpoint host hands it a caching, coalescing dnspython resolver
    (``dns_resolver``, see endpoint/resolver_cache.py); without one every lookup goes to the
    server, so a round-robin A name gives the server's next rotation each time.
    """

    def __init__(
        self,
        nameservers: Sequence[tuple[str, int]],
        *,
        timeout: float = 2.0,
        lifetime: float = 5.0,
        dns_resolver: dns.asyncresolver.Resolver | None = None,
    ) -> None:
        if not nameservers:
            raise ValueError("at least one DNS server is needed")
        listed = ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in nameservers)
        self._servers = f"DNS server {listed}" if len(nameservers) == 1 else f"DNS servers {listed}"
        # configure=False: never read /etc/resolv.conf, so no search domains and no cache.
        self._resolver = dns_resolver or dns.asyncresolver.Resolver(configure=False)
        self._resolver.nameservers = [
            dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers
        ]
        self._resolver.timeout = timeout
        self._resolver.lifetime = lifetime

    async def _query(self, name: str, rdtype: str) -> dns.resolver.Answer | None:
        """One query; ``None`` when the name or the type does not exist."""
        try:
            return await self._resolver.resolve(dns.name.from_text(name), rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.exception.Timeout:
            raise LocateError(f"{self._servers} did not answer for {_key(name)} {rdtype}") from None
        except dns.resolver.NoNameservers as exc:
            raise LocateError(
                f"{self._servers} gave no usable answer for {_key(name)} {rdtype}: {exc}"
            ) from None

    async def _addresses(
        self, name: str, families: Sequence[Family], glue: Mapping[tuple[str, str], list[str]]
    ) -> list[str]:
        found: list[str] = []
        for family in families:
            if (name, family) in glue:
                found.extend(glue[name, family])
                continue
            answer = await self._query(name, family)
            if answer is not None:
                found.extend(rdata.address for rdata in answer)
        return found

    async def lookup(
        self,
        proxy: ProxyAddress,
        *,
        families: Sequence[Family] = ("A",),
        naptr: bool = False,
    ) -> LookupResult:
        """The answers ``plan_targets`` needs for ``proxy`` (RFC 3263 §4): NAPTR first when
        ``naptr`` (DefaultTransport Auto), then SRV, then addresses."""
        if proxy.is_numeric:
            return LookupResult({}, {})
        srv: dict[str, list[SrvRecord]] = {}
        # Addresses carried in the SRV answers' additional section (real servers add them), by
        # (host, family): they save a query per target.
        glue: dict[tuple[str, str], list[str]] = {}
        naptr_records: list[NaptrRecord] = []
        if proxy.port is None and naptr:
            answer = await self._query(proxy.host, "NAPTR")
            if answer is not None:
                naptr_records = [
                    NaptrRecord(
                        r.order,
                        r.preference,
                        r.flags.decode(),
                        r.service.decode(),
                        r.replacement.to_text(),
                    )
                    for r in answer
                ]
        if proxy.port is None:
            # With usable NAPTR records, their replacements are the SRV names to ask for.
            via_naptr = [name for name, _, _ in order_naptr(naptr_records)]
            services = via_naptr or [f"{s}.{proxy.host}" for s in SRV_SERVICES]
            answers = await _gather(self._query(name, "SRV") for name in services)
            for name, answer in zip(services, answers, strict=True):
                if answer is None:
                    continue
                # Keyed as plan_targets reads them: the service label, or the NAPTR name.
                service = name if via_naptr else name.removesuffix(f".{proxy.host}")
                srv[service] = [
                    SrvRecord(r.priority, r.weight, r.port, r.target.to_text()) for r in answer
                ]
                for rrset in answer.response.additional:
                    if rrset.rdtype not in (dns.rdatatype.A, dns.rdatatype.AAAA):
                        continue
                    key = (_key(rrset.name.to_text()), dns.rdatatype.to_text(rrset.rdtype))
                    # Each SRV answer (_sips, _sip...) carries the same glue: keep it once.
                    glue.setdefault(key, [rdata.address for rdata in rrset])
        if any(srv.values()):
            names = sorted({_key(r.target) for records in srv.values() for r in records} - {""})
        else:
            names = [_key(proxy.host)]
        found = await _gather(self._addresses(name, families, glue) for name in names)
        return LookupResult(srv, dict(zip(names, found, strict=True)), naptr_records)

    async def locate(
        self,
        proxy: ProxyAddress,
        *,
        transport: Transport | Literal["auto"],
        rng: random.Random,
        families: Sequence[Family] = ("A",),
    ) -> list[Target]:
        result = await self.lookup(proxy, families=families, naptr=transport == "auto")
        return plan_targets(
            proxy,
            transport=transport,
            srv=result.srv,
            addresses=result.addresses,
            rng=rng,
            naptr=result.naptr,
        )


async def _gather(coros: Iterable[Coroutine[Any, Any, _T]]) -> list[_T]:
    """Run independent queries concurrently; let them all finish before raising the first error,
    so no query task is left running with an unretrieved exception."""
    results = await asyncio.gather(*coros, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return cast(list[_T], results)
