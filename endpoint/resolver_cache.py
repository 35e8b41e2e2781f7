"""One DNS resolver for many endpoints: a TTL-honouring cache and coalescing of identical
queries in flight, so that a mass failover of thousands of endpoints asks the DNS server a
handful of questions, not four per endpoint.

The cache is dnspython's own (:class:`dns.resolver.Cache`: positive answers, NODATA and
NXDOMAIN, each kept for its TTL, the negative ones for the SOA minimum). What is added here:

* coalescing: the same (name, type) asked while a query for it is on the wire waits for that
  query's answer instead of sending its own;
* a bound on queries on the wire at once (each is a socket), so that endpoints resolving
  independently cannot run the process out of file descriptors.

:class:`locator.Resolver` takes one of these in place of its plain dnspython resolver; an
endpoint host shares one among its endpoints, or gives each endpoint its own (``resolve:
independent``: as separate devices would, each with its own cache and its own queries).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import dns.asyncresolver
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.resolver

from endpoint.locator import Resolver

# Queries on the wire at once per resolver (each holds a UDP socket while it waits).
MAX_IN_FLIGHT = 128


class _Cache(dns.resolver.Cache):
    """dnspython's TTL cache on an injectable clock (dnspython reads ``time.time``)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(cleaning_interval=60.0)
        self._clock = clock

    def get(self, key: Any) -> dns.resolver.Answer | None:
        with self.lock:
            self._maybe_clean()
            value = self.data.get(key)
            if value is None or value.expiration <= self._clock():
                self.statistics.misses += 1
                return None
            self.statistics.hits += 1
            return value


class CachingDnsResolver(dns.asyncresolver.Resolver):
    """A dnspython async resolver that caches for the TTL and coalesces identical queries."""

    def __init__(
        self, *, clock: Callable[[], float] = time.time, max_in_flight: int = MAX_IN_FLIGHT
    ) -> None:
        super().__init__(configure=False)  # no /etc/resolv.conf: no search list, no cache there
        self.cache = _Cache(clock)
        self._in_flight: dict[tuple[str, str], asyncio.Future[dns.resolver.Answer]] = {}
        self._slots = asyncio.Semaphore(max_in_flight)
        self.misses = 0  # resolutions with no positive answer cached (sent, or NXDOMAIN cached)
        self.coalesced = 0  # resolutions answered by another one's query in flight

    async def resolve(  # type: ignore[override]
        self,
        qname: dns.name.Name | str,
        rdtype: dns.rdatatype.RdataType | str = dns.rdatatype.A,
        **kwargs: Any,
    ) -> dns.resolver.Answer:
        name = dns.name.from_text(qname) if isinstance(qname, str) else qname
        rtype = dns.rdatatype.RdataType.make(rdtype)
        key = (name.to_text().lower(), dns.rdatatype.to_text(rtype))
        pending = self._in_flight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._resolve_once(name, rtype, kwargs))
            self._in_flight[key] = pending
            pending.add_done_callback(lambda done: self._finished(key, done))
        else:
            self.coalesced += 1
        # shield: one waiter giving up (its endpoint stopped) must not cancel the others' query.
        return await asyncio.shield(pending)

    def _finished(self, key: tuple[str, str], done: asyncio.Future[dns.resolver.Answer]) -> None:
        self._in_flight.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have gone

    async def _resolve_once(
        self, name: dns.name.Name, rtype: dns.rdatatype.RdataType, kwargs: dict[str, Any]
    ) -> dns.resolver.Answer:
        cached = self.cache.get((name, rtype, dns.rdataclass.IN))
        if cached is None or cached.rrset is None:
            # A miss (or a cached NODATA, which dnspython raises from its cache): to the wire,
            # within the bound. dnspython consults the cache again and fills it.
            async with self._slots:
                if cached is None:
                    self.misses += 1
                return await super().resolve(name, rtype, **kwargs)
        return cached


def shared_resolver(
    nameservers: Sequence[tuple[str, int]], *, clock: Callable[[], float] = time.time
) -> Resolver:
    """A locator resolver over a fresh caching, coalescing dnspython resolver."""
    return Resolver(nameservers, dns_resolver=CachingDnsResolver(clock=clock))
