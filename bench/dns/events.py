"""What watching costs: our DNS server with its DEFAULT event setting, standalone and inside a
lab, against ``--events off`` and NSD, under dnsperf, interleaved.

    python bench/dns/events.py                       # ~2.5 minutes: 3 rounds x 4 servers x 8 s
    python bench/dns/events.py --duration 20 --rounds 5
    python bench/dns/events.py --self-check          # seconds: 1 round of 1 s, sanity checks

The four sides, each started as a user would:

* ``python -m dnsserver --zone uctest.local.zone --listen 127.62.56.1:1053`` (default events,
  ``auto``), its stdout a pipe this script drains;
* the same with ``--events off``;
* the DNS server of a lab started with ``siplab up --detach LABFILE`` (default events; the lab's
  supervisor reads them and writes ``events.jsonl``), stopped with ``siplab down``;
* NSD, on the same zone.

Same zone (bench/dns/run.py's), same query file, same dnsperf parameters, A B C D A B C D ...
Each q/s is printed, then the median of each side and its ratio to NSD (target: >= 0.8x for
both default-config sides). Everything listens on 127.62.56.0/24; every process started here is
stopped by PID and the temporary directories are removed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from benchlab import DetachedLab, arguments, cpu_seconds, run_benchmark, verdict  # noqa: E402  (bench/benchlab.py)
from run import (  # noqa: E402  (bench/dns/run.py)
    NET,
    ORIGIN,
    PEERS,
    PORT,
    RECORDS,
    TTL,
    Server,
    check_all,
    dnsperf,
    dnsperf_arguments,
    nsd_version,
    print_table,
    require_tools,
    start,
    stop,
    write_inputs,
)

STANDALONE, OFF, NSD, LAB = (f"{NET}.{host}" for host in (1, 2, 3, 4))


def lab_dict() -> dict[str, object]:
    """Two peers, no endpoint; the DNS server serves exactly the benchmark's records."""
    return {
        "name": "bench-dns-events",
        "domain": ORIGIN,
        "dns": {
            "address": LAB,
            "port": PORT,
            "ttl": TTL,
            "metrics_port": None,
            "records": [
                {"name": name, "type": rtype, "ttl": TTL, "data": data}
                for name, rtype, data in RECORDS
            ],
        },
        "peers": [
            {"name": f"exp{index}", "address": address}
            for index, address in enumerate(PEERS, start=1)
        ],
    }


def benchmark(args: argparse.Namespace) -> int:
    require_tools()
    nsd = shutil.which("nsd") or "/usr/sbin/nsd"
    tmp = Path(tempfile.mkdtemp(prefix="siplab-dnsevents-"))
    servers: list[Server] = []
    try:
        paths = write_inputs(tmp, "auto")  # NSD listens on NSD (run.py's third address)
        ours = [sys.executable, "-m", "dnsserver", "--zone", str(paths["zone"]), "--listen"]
        standalone = Server(
            "ours standalone (default events)", STANDALONE, [*ours, f"{STANDALONE}:{PORT}"]
        )
        off = Server(
            "ours standalone (--events off)", OFF, [*ours, f"{OFF}:{PORT}", "--events", "off"]
        )
        nsd_server = Server(f"NSD {nsd_version(nsd)}", NSD, [nsd, "-d", "-c", str(paths["nsd"])])
        in_lab = Server("ours in a lab (default events)", LAB, [])
        with DetachedLab(lab_dict()) as lab:
            in_lab.pid = lab.component_pids()["dns"]
            assert lab.supervisor_pid is not None
            servers = [standalone, in_lab, off, nsd_server]
            start(standalone, b'"ready"')
            start(off, b'"ready"')
            start(nsd_server, None)
            check_all(servers)
            print(
                f"dnsperf -l {args.duration} -c {args.clients} -T {args.threads} "
                f"-q {args.outstanding} -t 2, {args.rounds} rounds, interleaved",
                flush=True,
            )
            supervisor_cpu = 0.0
            for number in range(1, args.rounds + 1):
                for server in servers:
                    before = cpu_seconds(lab.supervisor_pid)
                    result = dnsperf(server, args, paths["queries"])
                    if server is in_lab:
                        supervisor_cpu += cpu_seconds(lab.supervisor_pid) - before
                    server.rounds.append(result)
                    print(
                        f"round {number}: {server.name:<34} {result['qps']:>9.0f} q/s, "
                        f"lost {result['lost']:.0f}, server CPU {result['cpu']:.2f} s",
                        flush=True,
                    )
            time.sleep(1.5)  # the last stats events: one per governor window
            lab_events = lab.count_events()
        results = print_table(servers)
        nsd_qps = results[nsd_server.name]["qps"]
        print()
        for server in (standalone, in_lab, off):
            ratio = results[server.name]["qps"] / nsd_qps
            target = "  (target >= 0.8x)" if server is not off else ""
            print(f"{server.name:<34} / NSD = {ratio:.2f}x{target}")
        lab_queries = sum(r["completed"] for r in in_lab.rounds)
        print()
        print(
            f"standalone default: {standalone.events} event lines for "
            f"{sum(r['completed'] for r in standalone.rounds):.0f} queries"
        )
        print(
            f"in the lab: {lab_events.get('dns.query', 0)} dns.query + "
            f"{lab_events.get('stats', 0)} stats events for {lab_queries:.0f} queries; "
            f"supervisor CPU {supervisor_cpu:.2f} s during the lab's rounds"
        )
        return check_ratios(args, results, nsd_server, standalone, in_lab, lab_events)
    finally:
        for server in servers:
            stop(server.process)
        shutil.rmtree(tmp, ignore_errors=True)


def check_ratios(
    args: argparse.Namespace,
    results: dict[str, dict[str, float]],
    nsd_server: Server,
    standalone: Server,
    in_lab: Server,
    lab_events: dict[str, int],
) -> int:
    """--self-check: every side answered, and the governed sides reported their counts."""
    if not args.self_check:
        return 0
    problems = [name for name, result in results.items() if result["qps"] <= 0]
    if not lab_events.get("stats"):
        problems.append("no stats event in the lab's events.jsonl")
    if standalone.events == 0:
        problems.append("no event lines from the standalone server")
    return verdict(problems)


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    dnsperf_arguments(parser, "A B C D")
    parser.add_argument(
        "--self-check",
        action="store_true",
        help="1 round of 1 s: every side answers and the default sides report stats",
    )
    args = parser.parse_args(argv)
    if args.self_check:
        args.duration, args.rounds = 1, 1
    return run_benchmark("bench/dns/events", benchmark, args)


if __name__ == "__main__":
    sys.exit(main())
