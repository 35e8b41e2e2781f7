"""dnslib's own threaded ``DNSServer`` serving a master file: the benchmark's baseline.

    python bench/dns/dnslib_server.py ZONEFILE ADDRESS PORT

``ZoneResolver`` answers from the same master file NSD loads. The stock server starts a thread
per UDP request (``socketserver.ThreadingMixIn``), which is what the benchmark measures.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from dnslib.server import DNSLogger, DNSServer
from dnslib.zoneresolver import ZoneResolver


def main() -> None:
    zone_file, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    resolver = ZoneResolver(Path(zone_file).read_text(encoding="utf-8"), glob=False)
    logger = DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
    server = DNSServer(resolver, address=address, port=port, logger=logger)
    server.start_thread()
    print("ready", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while server.isAlive():
        time.sleep(0.5)


if __name__ == "__main__":
    main()
