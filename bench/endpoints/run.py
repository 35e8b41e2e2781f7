"""10,000 endpoints in one process: memory per endpoint, CPU per refresh, and a mass failover,
against SIPp registering the same users from one process (the reference, same run).

    python bench/endpoints/run.py                  # 10,000 endpoints, ~4 minutes in all
    python bench/endpoints/run.py --endpoints 2000 --expires 20
    python bench/endpoints/run.py --self-check     # 300 endpoints, checked, about a minute

1. A lab (DNS, peers exp1 and exp2, registrar granting ``--expires`` s) is started as a user
   starts one (``siplab up --detach``): one group of N endpoints ``u{n}@uctest.local`` over TCP
   in ONE host process (``ep-1``), plus one endpoint alone in a host of its own (``ep-2``), whose
   resident memory is the baseline of an empty host.
2. Once every endpoint is Registered (SRV 10/10: about half on each peer), the host's CPU (psutil
   user + system) is read over one refresh period (90 % of the granted expiry: every endpoint
   refreshes once in it, whatever its phase); refreshes are counted from the host's ``stats``
   events. Memory per endpoint = (RSS of ep-1 - RSS of ep-2) / N, which
   includes each endpoint's TCP connection (its socket, transport, protocol and framer).
3. The peer holding the most endpoints is killed (SIGKILL): the time from the kill to the last
   of its endpoints Registered on the survivor, and how many did not make it, from the lab's
   events. The survivor's own throughput is the limit: its REGISTERs per second are printed too.
4. The host is stopped (de-registering everyone); SIPp (Debian's sip-tester) then registers the
   same N users from one process over TCP, one connection per user (``-t tn``), refreshing on
   the same period; its RSS / N and CPU per refresh (N refreshes per period) are the reference.

Addresses: a /24 of this process's own loopback /16 (emulator.lab.addresses). Every process
started here is stopped by PID; the temporary directory is removed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))

from benchlab import DetachedLab, arguments, cpu_seconds, run_benchmark, verdict  # noqa: E402  (bench/benchlab.py)

from emulator.lab.addresses import next_block  # noqa: E402

DOMAIN = "uctest.local"


def lab_dict(prefix: str, name: str, count: int, expires: int) -> dict[str, Any]:
    return {
        "name": name,
        "domain": DOMAIN,
        "dns": {"address": f"{prefix}.10", "port": 1053, "metrics_port": None, "events": "off"},
        "peers": [
            {"name": "exp1", "address": f"{prefix}.11", "tls_port": None},
            {"name": "exp2", "address": f"{prefix}.12", "tls_port": None},
        ],
        "registrar": {"min_expires": 1, "max_expires": expires, "default_expires": expires},
        "endpoints": [
            {
                "uri": "u{n}@" + DOMAIN,
                "first": 1,
                "count": count,
                "hosts": 1,
                "name": "ep-1",
                "address": f"{prefix}.101",
                "expires": expires,
                "jitter": min(count / 1000, 10.0),
                "retry_base": 1,
                "retry_max": 4,
            },
            {"uri": "baseline@" + DOMAIN, "name": "ep-2", "address": f"{prefix}.102"},
        ],
    }


def status(lab: DetachedLab) -> dict[str, Any]:
    done = lab.siplab("status", "--lab", lab.name, "--json", timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"siplab status: {done.stderr.strip()}")
    return dict(json.loads(done.stdout))


def wait_for(lab: DetachedLab, ok: Any, timeout: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        current = status(lab)
        if ok(current):
            return current
        if time.monotonic() > deadline:
            counts = current.get("endpoint_counts")
            raise RuntimeError(f"{what} not reached within {timeout:g} s: {counts}")
        time.sleep(0.5)


def registered(count: int) -> Any:
    def ok(current: dict[str, Any]) -> bool:
        return bool(current["endpoint_counts"]["by_state"].get("Registered", 0) >= count)

    return ok


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def events(lab: DetachedLab) -> list[dict[str, Any]]:
    with lab.events_path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def counted(
    all_events: list[dict[str, Any]], component: str, kind: str, t0: float, t1: float
) -> int:
    return sum(
        e["counts"].get(kind, 0)
        for e in all_events
        if e["kind"] == "stats" and e["component"] == component and t0 < e["t"] <= t1
    )


def failover(lab: DetachedLab, count: int) -> dict[str, Any]:
    before = status(lab)
    peers = {p["address"]: p["name"] for p in before["peers"]}
    by_peer: dict[str, list[str]] = {}
    for e in before["endpoints"]:
        if e["host"] == "ep-1" and e["registrar"]:
            by_peer.setdefault(peers[e["registrar"].rpartition(":")[0]], []).append(e["uri"])
    victim = max(by_peer, key=lambda name: len(by_peer[name]))
    survivor = next(name for name in by_peer if name != victim)
    moved = set(by_peer[victim])
    done = lab.siplab("kill", victim, "--lab", lab.name)
    if done.returncode != 0:
        raise RuntimeError(f"siplab kill: {done.stderr.strip()}")
    survivor_address = next(a for a, n in peers.items() if n == survivor)

    def all_on_survivor(current: dict[str, Any]) -> bool:
        on = current["endpoint_counts"]["by_registrar"].get(f"{survivor_address}:5060", 0)
        return bool(on >= count)

    try:
        wait_for(lab, all_on_survivor, 180, f"all {count} endpoints on {survivor}")
    except RuntimeError as exc:
        print(f"failover: {exc}")
    time.sleep(1.0)  # the last events reach events.jsonl
    log = events(lab)
    killed = next(e["t"] for e in log if e["kind"] == "fault.applied" and e.get("target") == victim)
    last: dict[str, float] = {}
    for e in log:
        if (
            e["kind"] == "registration.state"
            and e["t"] >= killed
            and e.get("aor") in moved
            and e["state"] == "Registered"
            and str(e.get("registrar", "")).startswith(survivor_address + ":")
        ):
            last[e["aor"]] = e["t"]
    answered = counted(log, survivor, "register.answered", killed, killed + 600)
    took = max(last.values()) - killed if last else float("nan")
    return {
        "victim": victim,
        "survivor": survivor,
        "moved": len(moved),
        "arrived": len(last),
        "seconds": took,
        "survivor_rate": len(last) / took if last and took > 0 else float("nan"),
        "answered": answered,
    }


def run_sipp(prefix: str, peer: str, count: int, expires: int, window: float) -> dict[str, float]:
    refresh_ms = int(expires * 900)  # as our endpoints: at 90 % of the granted expiry
    ramp = max(count / 500, 1.0)
    argv = [
        shutil.which("sipp") or "sipp",
        "-sf",
        str(HERE / "register_refresh.xml"),
        "-key",
        "domain",
        DOMAIN,
        "-key",
        "expires",
        str(expires),
        "-d",
        str(refresh_ms),
        "-t",
        "tn",
        "-max_socket",
        str(count + 100),
        "-i",
        f"{prefix}.103",
        "-p",
        "0",
        "-r",
        "500",
        "-m",
        str(count),
        "-l",
        str(count),
        "-timeout",
        f"{int(ramp + expires + window + 30)}s",
        "-nostdin",
        "-trace_err",
        "-error_file",
        "/dev/null",
        f"{peer}:5060",
    ]
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        # Every user started and into its steady refresh period before measuring.
        time.sleep(ramp + expires * 0.9 + 2)
        if process.poll() is not None:
            assert process.stderr is not None
            raise RuntimeError(f"sipp ended early: {process.stderr.read().decode()[-400:]}")
        cpu0 = cpu_seconds(process.pid)
        time.sleep(window)
        cpu = cpu_seconds(process.pid) - cpu0
        memory = rss(process.pid)
    finally:
        process.kill()  # ours, by its PID
        process.wait(10)
    return {"rss": memory, "cpu": cpu, "refreshes": count * window / (expires * 0.9)}  # N / period


def benchmark(args: argparse.Namespace) -> int:
    if shutil.which("sipp") is None:
        print("bench/endpoints: 'sipp' not found: apt-get install -y sip-tester", file=sys.stderr)
        return 2
    block = next_block()
    prefix, n = block.prefix, args.endpoints
    lab_config = lab_dict(prefix, f"bench-ep{block.name}", n, args.expires)
    with DetachedLab(lab_config, timeout=120) as lab:
        started = time.monotonic()
        wait_for(lab, registered(n + 1), 60 + n / 100, "every endpoint Registered")
        print(f"{n} endpoints Registered {time.monotonic() - started:.1f} s after 'up' returned")
        pids = lab.component_pids()
        host, baseline = pids["ep-1"], pids["ep-2"]
        # One refresh period for the start-up jitter to become a steady refresh rate.
        time.sleep(args.expires * 0.9)
        t0, cpu0 = time.time(), cpu_seconds(host)
        time.sleep(args.window)
        t1, cpu = time.time(), cpu_seconds(host) - cpu0
        memory, base = rss(host), rss(baseline)
        time.sleep(1.5)  # the window's last stats event (1 s governor window)
        refreshes = counted(events(lab), "ep-1", "registration.refreshed", t0, t1 + 1)
        moved = failover(lab, n)
        if lab.siplab("stop", "ep-1", "--lab", lab.name, timeout=60).returncode != 0:
            raise RuntimeError("siplab stop ep-1 failed")
        survivor = next(
            p["address"] for p in status(lab)["peers"] if p["name"] == moved["survivor"]
        )
        sipp = run_sipp(prefix, survivor, n, args.expires, args.window)

    ours_kb = (memory - base) / n / 1024
    sipp_kb = sipp["rss"] / n / 1024
    ours_cpu = 1e6 * cpu / refreshes if refreshes else float("nan")
    sipp_cpu = 1e6 * sipp["cpu"] / sipp["refreshes"]
    print(f"\n{n} endpoints over TCP, one host process, registrar granting {args.expires} s")
    print(f"refresh window {args.window:g} s: {refreshes} refreshes counted ({cpu:.2f} CPU s)\n")
    print(f"| {'':<34} | {'siplab host':>12} | {'SIPp (-t tn)':>12} | {'ratio':>6} |")
    print(f"|{'-' * 36}|{'-' * 13}:|{'-' * 13}:|{'-' * 7}:|")
    print(
        f"| {'resident memory per endpoint, KB':<34} | {ours_kb:>12.1f} | {sipp_kb:>12.1f} | "
        f"{ours_kb / sipp_kb:>6.2f} |"
    )
    print(
        f"| {'CPU per refresh, us':<34} | {ours_cpu:>12.1f} | {sipp_cpu:>12.1f} | "
        f"{ours_cpu / sipp_cpu:>6.2f} |"
    )
    print(
        f"\nhost RSS {memory / 2**20:.1f} MiB, empty-host baseline {base / 2**20:.1f} MiB; "
        f"SIPp RSS {sipp['rss'] / 2**20:.1f} MiB (SIPp's own baseline not subtracted)"
    )
    print(
        f"kill {moved['victim']}: {moved['arrived']} of its {moved['moved']} endpoints "
        f"Registered on {moved['survivor']} after {moved['seconds']:.2f} s "
        f"({moved['survivor_rate']:.0f} moved/s; {moved['moved'] - moved['arrived']} lost)"
    )
    if args.self_check:
        problems = []
        if moved["arrived"] != moved["moved"]:
            problems.append(f"{moved['moved'] - moved['arrived']} endpoints did not move")
        if refreshes <= 0:
            problems.append("no refresh counted")
        return verdict(problems)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--endpoints", type=int, default=10_000, help="endpoints (10000)")
    parser.add_argument("--expires", type=int, default=30, help="granted expiry, s (30)")
    parser.add_argument(
        "--self-check", action="store_true", help="300 endpoints: every one moves on a kill"
    )
    args = parser.parse_args(argv)
    if args.self_check:
        args.endpoints, args.expires = 300, 10
    args.window = args.expires * 0.9  # one refresh period
    return run_benchmark("bench/endpoints", benchmark, args)


if __name__ == "__main__":
    sys.exit(main())
