"""A Prometheus ``/metrics`` listener for one component's collector (DNS server, registrar).

Components count with plain integers on their hot paths; a collector turns them into metric
families when Prometheus asks. The HTTP listener is prometheus_client's own (a daemon thread)
with a private registry: only that collector's metrics, none of the process-global defaults.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer


def parse_address(text: str) -> tuple[str, int]:
    """``"127.0.0.10:9153"`` (or ``"[::1]:9153"``) -> host, port; ValueError if malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected ADDRESS:PORT such as 127.0.0.10:9153, got {text!r}")
    return host.strip("[]"), int(port)


class MetricsListener:
    """prometheus_client's HTTP server for one collector, stopped by ``close``."""

    def __init__(self, collector: Collector, address: str) -> None:
        host, port = parse_address(address)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self._httpd: WSGIServer
        self._thread: threading.Thread
        self._httpd, self._thread = start_http_server(port, host, registry=self.registry)
        self.host = host
        self.port: int = self._httpd.server_address[1]

    def close(self) -> None:
        self._httpd.shutdown()  # stops serve_forever (waits for it, bounded by its 0.5 s poll)
        self._httpd.server_close()
        self._thread.join(timeout=5)
