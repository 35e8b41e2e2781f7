"""Prometheus ``/metrics`` for a registrar peer: the core's plain counters, read at scrape time.

Metrics:

* ``siplab_registrar_requests_total{method,code}`` — requests answered (REGISTER, OPTIONS,
  other), by status code
* ``siplab_registrar_bindings_changes_total{change}`` — bindings added, refreshed, removed, expired
* ``siplab_registrar_auth_failures_total`` / ``siplab_registrar_lockouts_total`` — digest
  credentials refused, sources locked out
* ``siplab_registrar_refused_total{reason}`` — REGISTERs refused for capacity or lockout
* ``siplab_registrar_bindings`` / ``siplab_registrar_aors`` (gauges) — current bindings, AORs
* ``siplab_registrar_capacity`` (gauge) — the configured capacity in AORs, when there is one
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from registrar.core import RegistrarCore


class RegistrarCollector(Collector):
    """Reads a ``RegistrarCore``'s counters (called from the HTTP thread)."""

    def __init__(self, core: RegistrarCore) -> None:
        self._core = core

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        core = self._core
        # Counter.copy() is atomic enough under the GIL; the event loop may add keys meanwhile.
        answered, counts = core.answered.copy(), core.counts.copy()
        family = CounterMetricFamily(
            "siplab_registrar_requests", "Requests answered", labels=["method", "code"]
        )
        for (method, code), count in sorted(answered.items()):
            family.add_metric([method, str(code)], count)
        yield family
        family = CounterMetricFamily(
            "siplab_registrar_bindings_changes", "Binding changes", labels=["change"]
        )
        for change in ("added", "refreshed", "removed", "expired"):
            family.add_metric([change], counts[change])
        yield family
        yield CounterMetricFamily(
            "siplab_registrar_auth_failures",
            "Digest credentials refused",
            value=counts["auth_failed"],
        )
        yield CounterMetricFamily(
            "siplab_registrar_lockouts", "Sources locked out", value=counts["lockouts"]
        )
        family = CounterMetricFamily(
            "siplab_registrar_refused", "REGISTERs refused", labels=["reason"]
        )
        family.add_metric(["capacity"], counts["capacity_refused"])
        family.add_metric(["locked_out"], counts["locked_out"])
        yield family
        yield GaugeMetricFamily(
            "siplab_registrar_bindings", "Bindings held", value=len(core.bindings)
        )
        yield GaugeMetricFamily(
            "siplab_registrar_aors", "AORs registered", value=core.bindings.aors
        )
        if core.config.capacity is not None:
            yield GaugeMetricFamily(
                "siplab_registrar_capacity", "Capacity in AORs", value=core.config.capacity
            )
