"""Failover latency of one endpoint, per fault: from the fault's first effect at the endpoint to
``Registered`` on another peer.

Faults, N trials each (the endpoint alternates between the two peers):
  * 503    -- ``maintenance on`` for the peer it is registered to; first effect: the 503 arrives
             (its ``sip.warning`` event); the next refresh is what meets it (granted 1 s)
  * lost   -- ``kill`` of that peer; first effect: the ``transport.lost`` event (the kernel's
             RST/FIN), then the peer is started again for the next trial
  * pause  -- ``pause`` (SIGSTOP) with keep-alives every 1 s and a 1 s pong timeout; first
             effect: the pong timeout (the ``Failed`` event); the detection time from the pause
             is printed too (bound: interval + pong timeout)

Times are the endpoint's own event timestamps. Prints median, p99 and max per fault.

    .venv/bin/python bench/endpoints/latency.py [--trials 100] [--faults 503,lost,pause]

Starts its own lab on a loopback /24 no one else holds (state in a temporary directory) and
always stops it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emulator.lab.addresses import next_block
from emulator.lab.sync import SyncLab

AOR = "1001@uctest.local"
Event = dict[str, Any]


def lab_dict(prefix: str) -> dict[str, object]:
    return {
        "name": "bench-failover",
        "dns": {"address": f"{prefix}.10", "port": 1053, "ttl": 1},
        "peers": [
            {"name": "exp1", "address": f"{prefix}.11"},
            {"name": "exp2", "address": f"{prefix}.12"},
        ],
        "registrar": {"min_expires": 1, "max_expires": 1, "default_expires": 1},
        "endpoints": [
            {
                "uri": AOR,
                "proxy": "uctest.local",
                "transport": "tcp",
                "address": f"{prefix}.101",
                "expires": 1,
                "keepalive_interval": 1.0,
                "pong_timeout": 1.0,
                "retry_base": 0.2,
                "retry_max": 1.0,
            }
        ],
    }


def kind(name: str, **fields: Any) -> Callable[[Event], bool]:
    def match(event: Event) -> bool:
        return event["kind"] == name and all(event.get(k) == v for k, v in fields.items())

    return match


def registered_elsewhere(address: str) -> Callable[[Event], bool]:
    def match(event: Event) -> bool:
        return (
            event["kind"] == "registration.state"
            and event["state"] == "Registered"
            and not str(event.get("registrar", "")).startswith(f"{address}:")
        )

    return match


def current_peer(lab: SyncLab) -> tuple[str, str]:
    status = lab.status()
    registrar = status["endpoints"][0]["registrar"]
    name = lab.peer_at(status, registrar)
    assert name is not None, status
    return name, registrar.rsplit(":", 1)[0]


def wait_registered(lab: SyncLab) -> None:
    lab.until(
        lambda _e: lab.status()["endpoints"][0]["state"] == "Registered", timeout=30, what="reg"
    )


def trial_503(lab: SyncLab) -> tuple[float, float | None]:
    peer, address = current_peer(lab)
    seq = int(lab.status()["seq"])
    lab.maintenance(peer, True)
    first = lab.until(kind("sip.warning", aor=AOR), since=seq, timeout=30, what="503")
    done = lab.until(registered_elsewhere(address), since=first["seq"], timeout=30, what="moved")
    lab.maintenance(peer, False)
    return done["t"] - first["t"], None


def trial_lost(lab: SyncLab) -> tuple[float, float | None]:
    peer, address = current_peer(lab)
    seq = int(lab.status()["seq"])
    lab.kill(peer)
    first = lab.until(kind("transport.lost", aor=AOR), since=seq, timeout=30, what="lost")
    done = lab.until(registered_elsewhere(address), since=first["seq"], timeout=30, what="moved")
    lab.start(peer)
    lab.until(kind("ready"), since=done["seq"], timeout=30, what="peer back")
    return done["t"] - first["t"], None


def trial_pause(lab: SyncLab) -> tuple[float, float | None]:
    peer, address = current_peer(lab)
    seq = int(lab.status()["seq"])
    lab.pause(peer)
    paused = lab.until(kind("process.paused"), since=seq, timeout=30, what="paused")
    first = lab.until(
        kind("registration.state", aor=AOR, state="Failed"), since=seq, timeout=30, what="Failed"
    )
    done = lab.until(registered_elsewhere(address), since=first["seq"], timeout=30, what="moved")
    lab.resume(peer)
    return done["t"] - first["t"], first["t"] - paused["t"]


TRIALS: dict[str, Callable[[SyncLab], tuple[float, float | None]]] = {
    "503": trial_503,
    "lost": trial_lost,
    "pause": trial_pause,
}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def report(name: str, values: list[float]) -> None:
    print(
        f"{name:<28} n={len(values):<4} median {statistics.median(values) * 1000:8.2f} ms"
        f"   p99 {percentile(values, 0.99) * 1000:8.2f} ms   max {max(values) * 1000:8.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--faults", default="503,lost,pause")
    args = parser.parse_args()
    faults = [f for f in args.faults.split(",") if f]
    with (
        tempfile.TemporaryDirectory(prefix="siplab-bench-failover-") as root,
        SyncLab.up(lab_dict(next_block().prefix), root=Path(root)) as lab,
    ):
        for fault in faults:
            latencies: list[float] = []
            detections: list[float] = []
            for _ in range(args.trials):
                wait_registered(lab)
                latency, detection = TRIALS[fault](lab)
                latencies.append(latency)
                if detection is not None:
                    detections.append(detection)
            report(f"{fault}: effect -> Registered", latencies)
            if detections:
                report(f"{fault}: pause -> Failed", detections)


if __name__ == "__main__":
    main()
