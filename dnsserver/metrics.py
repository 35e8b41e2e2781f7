"""Prometheus ``/metrics`` for the DNS server: plain counters, read only at scrape time.

The server counts with plain integers (one ``+= 1`` per query, see ``DnsServer``); this
collector turns them into metric families when Prometheus asks, so counting costs nothing
extra on the hot path. The HTTP listener is prometheus_client's own (a daemon thread) with a
private registry: only these metrics, none of the process-global defaults.

Metrics (all counters):

* ``siplab_dns_queries_total{transport,rcode}`` — answered queries (TC answers included)
* ``siplab_dns_queries_by_type_total{qtype}`` — answered queries by question type
* ``siplab_dns_cache_hits_total{transport}`` / ``siplab_dns_cache_misses_total{transport}``
* ``siplab_dns_truncated_total{transport}`` — UDP answers sent with TC set
* ``siplab_dns_dropped_total`` — queries not answered (too short, a response, fault "down")
* ``siplab_dns_tcp_connections_total`` — TCP connections accepted
* ``siplab_dns_zone_changes_total`` — zone changes and faults (each clears the answer cache)
* ``siplab_dns_events_total`` — ``dns.query`` events written (see ``--events``)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from emulator.metrics import MetricsListener as SharedListener
from emulator.metrics import parse_address

if TYPE_CHECKING:
    from dnsserver.server import DnsServer

__all__ = ["DnsCollector", "MetricsListener", "parse_address"]


class DnsCollector(Collector):
    """Reads a ``DnsServer``'s counters at scrape time (called from the HTTP thread)."""

    def __init__(self, server: DnsServer) -> None:
        self._server = server

    def collect(self) -> Iterator[CounterMetricFamily]:
        server = self._server
        # dict.copy() is atomic under the GIL; the event loop may add keys meanwhile.
        cells = server.cells.copy()
        by_rcode: Counter[tuple[str, str]] = Counter()
        by_type: Counter[str] = Counter()
        hits: Counter[str] = Counter()
        misses: Counter[str] = Counter()
        truncated: Counter[str] = Counter()
        for (transport, qtype, rcode, was_truncated, cached), cell in cells.items():
            count = cell[0]
            by_rcode[transport, rcode] += count
            by_type[qtype or "NONE"] += count
            (hits if cached else misses)[transport] += count
            if was_truncated:
                truncated[transport] += count

        family = CounterMetricFamily(
            "siplab_dns_queries", "Queries answered", labels=["transport", "rcode"]
        )
        for (transport, rcode), count in sorted(by_rcode.items()):
            family.add_metric([transport, rcode], count)
        yield family
        family = CounterMetricFamily(
            "siplab_dns_queries_by_type", "Queries answered, by question type", labels=["qtype"]
        )
        for qtype, count in sorted(by_type.items()):
            family.add_metric([qtype], count)
        yield family
        for name, help_text, counts in (
            ("siplab_dns_cache_hits", "Answers sent from the answer cache", hits),
            ("siplab_dns_cache_misses", "Answers built afresh", misses),
            ("siplab_dns_truncated", "UDP answers sent with TC set", truncated),
        ):
            family = CounterMetricFamily(name, help_text, labels=["transport"])
            for transport in ("udp", "tcp"):
                family.add_metric([transport], counts[transport])
            yield family
        yield CounterMetricFamily(
            "siplab_dns_dropped", "Queries not answered", value=server.unanswered
        )
        yield CounterMetricFamily(
            "siplab_dns_tcp_connections", "TCP connections accepted", value=server.tcp_accepted
        )
        yield CounterMetricFamily(
            "siplab_dns_zone_changes",
            "Zone changes and faults applied (each clears the answer cache)",
            value=server.authority.changes,
        )
        yield CounterMetricFamily(
            "siplab_dns_events", "dns.query events written", value=server.events_written
        )


class MetricsListener(SharedListener):
    """The listener for one ``DnsServer``, stopped by ``close``."""

    def __init__(self, server: DnsServer, address: str) -> None:
        super().__init__(DnsCollector(server), address)
