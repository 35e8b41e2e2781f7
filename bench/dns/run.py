"""Benchmark siplab's DNS server against dnslib's stock server and NSD, interleaved.

    python bench/dns/run.py                    # ~2 minutes: 3 rounds x 3 servers x 8 s
    python bench/dns/run.py --duration 20 --rounds 5 --clients 4
    python bench/dns/run.py --self-check       # no dnsperf/NSD needed: correctness under load

One zone (the seed's ``uctest.local``) is written in three forms: a ``DnsServerConfig`` for
``python -m dnsserver``, a master file that both NSD and dnslib's ``ZoneResolver`` load. One
query file (SRV ``_sip._tcp``/``_sips._tcp``, A for the peers, A for the rotating cluster name,
some NXDOMAIN) is replayed by dnsperf against each server in turn, A B C A B C ..., with the
same parameters. Server CPU comes from /proc/<pid>/stat (utime + stime, children included).

Servers listen only on one claimed loopback /24 (NET), port 1053. Every process started here
is killed by PID at the end, every wait is bounded, and the temporary directory is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from emulator.lab.addresses import next_block

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchlab import arguments, run_benchmark  # noqa: E402  (bench/benchlab.py)

PORT = 1053
ORIGIN = "uctest.local"
CLUSTER = f"habibexpc-cluster.{ORIGIN}"
TTL = 30
# A loopback /24 nobody else on this machine holds (emulator.lab.addresses): benchmarks and test
# runs side by side never share an address.
NET = next_block().prefix
PEERS = (f"{NET}.11", f"{NET}.12")
TICK = os.sysconf("SC_CLK_TCK")

# (name relative to the origin, type, data): the seed's zone, identical for all three servers.
RECORDS: list[tuple[str, str, str]] = [
    ("@", "SOA", f"ns1.{ORIGIN}. hostmaster.{ORIGIN}. 1 3600 600 86400 {TTL}"),
    ("@", "NS", f"ns1.{ORIGIN}."),
    ("ns1", "A", f"{NET}.1"),
]
for _index, _address in enumerate(PEERS, start=1):
    RECORDS += [
        ("_sips._tcp", "SRV", f"10 10 5061 exp{_index}.{ORIGIN}."),
        ("_sip._tcp", "SRV", f"10 10 5060 exp{_index}.{ORIGIN}."),
        (f"exp{_index}", "A", _address),
        ("habibexpc-cluster", "A", _address),
    ]

# The query mix, per 100 queries: what a lab of endpoints asks (RFC 3263 SRV first, then A).
MIX: list[tuple[str, str, int]] = [
    (f"_sip._tcp.{ORIGIN}", "SRV", 30),
    (f"_sips._tcp.{ORIGIN}", "SRV", 20),
    (f"exp1.{ORIGIN}", "A", 10),
    (f"exp2.{ORIGIN}", "A", 10),
    (CLUSTER, "A", 20),  # rotating: every answer starts one record further along
    (f"nosuch{{i}}.{ORIGIN}", "A", 10),  # NXDOMAIN, ten different names
]


@dataclass
class Server:
    name: str
    address: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    pid: int | None = None  # a process started elsewhere (a lab's DNS server), if no ``process``
    events: int = 0
    rounds: list[dict[str, float]] = field(default_factory=list)


def fail(message: str) -> None:
    print(f"bench/dns: {message}", file=sys.stderr)
    sys.exit(2)


def write_inputs(tmp: Path, events: str) -> dict[str, Path]:
    zone = tmp / f"{ORIGIN}.zone"
    lines = [f"$ORIGIN {ORIGIN}.", f"$TTL {TTL}"]
    lines += [f"{name:<20} {TTL} IN {rtype:<4} {data}" for name, rtype, data in RECORDS]
    zone.write_text("\n".join(lines) + "\n", encoding="utf-8")

    config = {
        "name": "dns-bench",
        "address": f"{NET}.1",
        "port": PORT,
        "events": events,
        "zones": [
            {
                "origin": ORIGIN,
                "ttl": TTL,
                "records": [
                    {"name": name, "type": rtype, "ttl": TTL, "data": data}
                    for name, rtype, data in RECORDS
                ],
            }
        ],
    }
    ours = tmp / "ours.json"
    ours.write_text(json.dumps(config), encoding="utf-8")

    nsd_conf = tmp / "nsd.conf"
    nsd_conf.write_text(
        f"""server:
    ip-address: {NET}.3
    port: {PORT}
    do-ip6: no
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "{tmp}"
    database: ""
    zonelistfile: "{tmp}/zone.list"
    xfrdfile: "{tmp}/xfrd.state"
    xfrdir: "{tmp}"
    pidfile: "{tmp}/nsd.pid"
    logfile: "{tmp}/nsd.log"
    verbosity: 0
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: {ORIGIN}
    zonefile: "{zone}"
""",
        encoding="utf-8",
    )

    rng = random.Random(5060)
    queries: list[str] = []
    for name, rtype, count in MIX:
        queries += [f"{name.format(i=i)} {rtype}" for i in range(count)]
    rng.shuffle(queries)
    query_file = tmp / "queries.txt"
    query_file.write_text("\n".join(queries) + "\n", encoding="utf-8")
    return {"zone": zone, "ours": ours, "nsd": nsd_conf, "queries": query_file}


# -- processes --------------------------------------------------------------------------------


def tree_cpu(pid: int) -> float:
    """utime + stime (seconds) of ``pid`` and its descendants, from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = int(fields[11]) + int(fields[12])
    total, wanted = 0, {pid}
    changed = True
    while changed:
        changed = False
        for child, parent in parents.items():
            if parent in wanted and child not in wanted:
                wanted.add(child)
                changed = True
    for member in wanted:
        total += times.get(member, 0)
    return total / TICK


def start(server: Server, ready_line: bytes | None, timeout: float = 15.0) -> None:
    """Start ``server``; wait (bounded) until it says it is ready or answers a query."""
    server.process = subprocess.Popen(
        server.argv,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    process = server.process
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    if ready_line is not None:
        line = b""
        while ready_line not in line:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{server.name} did not start: {stderr_of(process)}")
            line = process.stdout.readline()
    threading.Thread(target=drain, args=(server,), daemon=True).start()
    while not answers(server.address):
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"{server.name} does not answer: {stderr_of(process)}")
        time.sleep(0.1)


def drain(server: Server) -> None:
    """Read the server's stdout (events) so it never blocks; count the lines."""
    assert server.process is not None
    assert server.process.stdout is not None
    for _line in server.process.stdout:
        server.events += 1


def stderr_of(process: subprocess.Popen[bytes]) -> str:
    if process.poll() is None:
        return "(still running)"
    assert process.stderr is not None
    return process.stderr.read().decode(errors="replace").strip()[-500:]


def stop(process: subprocess.Popen[bytes] | None) -> None:
    """Kill ``process`` (and its process group: NSD forks) by PID, and reap it."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def answers(address: str) -> bool:
    import dns.message
    import dns.query

    query = dns.message.make_query(f"exp1.{ORIGIN}", "A")
    try:
        dns.query.udp(query, address, port=PORT, timeout=0.3)
    except Exception:
        return False
    return True


def check_all(servers: list[Server]) -> None:
    """Every side gives the same answers before any is timed; RuntimeError names the first
    that does not."""
    for server in servers:
        problem = check_answers(server)
        if problem:
            raise RuntimeError(f"{server.name} answers differently: {problem}")


def check_answers(server: Server) -> str:
    """The same answers from every server: SRV with two targets, the cluster's two A
    records, NXDOMAIN. Returns '' when fine, else what differs."""
    import dns.message
    import dns.query
    import dns.rcode

    def ask(name: str, rtype: str) -> dns.message.Message:
        query = dns.message.make_query(name, rtype)
        return dns.query.udp(query, server.address, port=PORT, timeout=2)

    srv = ask(f"_sip._tcp.{ORIGIN}", "SRV")
    cluster = ask(CLUSTER, "A")
    missing = ask(f"nosuch0.{ORIGIN}", "A")
    problems = []
    if sum(len(rrset) for rrset in srv.answer) != 2:
        problems.append(f"SRV answer {srv.answer}")
    if sorted(r.to_text() for rrset in cluster.answer for r in rrset) != sorted(PEERS):
        problems.append(f"cluster answer {cluster.answer}")
    if missing.rcode() != dns.rcode.NXDOMAIN:
        problems.append(f"nosuch0 rcode {dns.rcode.to_text(missing.rcode())}")
    return "; ".join(problems)


DNSPERF_FIELDS = {
    "sent": r"Queries sent:\s+(\d+)",
    "completed": r"Queries completed:\s+(\d+)",
    "lost": r"Queries lost:\s+(\d+)",
    "qps": r"Queries per second:\s+([\d.]+)",
}


def dnsperf(server: Server, args: argparse.Namespace, query_file: Path) -> dict[str, float]:
    if server.process is not None:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited: {stderr_of(server.process)}")
        pid = server.process.pid
    else:
        assert server.pid is not None
        pid = server.pid
    argv = [
        "dnsperf",
        "-s",
        server.address,
        "-p",
        str(PORT),
        "-d",
        str(query_file),
        "-l",
        str(args.duration),
        "-c",
        str(args.clients),
        "-T",
        str(args.threads),
        "-q",
        str(args.outstanding),
        "-t",
        "2",
    ]
    cpu_before = tree_cpu(pid)
    own_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.monotonic()
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=args.duration + 30, check=False
    )
    wall = time.monotonic() - wall
    own_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = tree_cpu(pid) - cpu_before
    if done.returncode != 0:
        raise RuntimeError(f"dnsperf failed against {server.name}: {done.stderr.strip()}")
    result: dict[str, float] = {}
    for key, pattern in DNSPERF_FIELDS.items():
        match = re.search(pattern, done.stdout)
        if match is None:
            raise RuntimeError(f"cannot read {key!r} from dnsperf's output:\n{done.stdout}")
        result[key] = float(match.group(1))
    result["cpu"] = cpu
    result["wall"] = wall
    result["client_cpu"] = (own_after.ru_utime + own_after.ru_stime) - (
        own_before.ru_utime + own_before.ru_stime
    )
    return result


# -- the benchmark ----------------------------------------------------------------------------


def summary(server: Server) -> dict[str, float]:
    rounds = server.rounds
    sent = sum(r["sent"] for r in rounds)
    completed = sum(r["completed"] for r in rounds)
    return {
        "qps": statistics.median(r["qps"] for r in rounds),
        "lost": 100.0 * sum(r["lost"] for r in rounds) / sent if sent else 0.0,
        "cpu_per_1k": 1000.0 * sum(r["cpu"] for r in rounds) / completed if completed else 0.0,
        "cpu_share": 100.0 * sum(r["cpu"] for r in rounds) / sum(r["wall"] for r in rounds),
        "client_cpu": 100.0 * sum(r["client_cpu"] for r in rounds) / sum(r["wall"] for r in rounds),
    }


def print_table(servers: list[Server]) -> dict[str, dict[str, float]]:
    print()
    print(
        f"| {'server':<34} | {'qps (median)':>12} | {'rounds (qps)':<26} | {'lost %':>7} "
        f"| {'CPU s / 1k q':>12} | {'server CPU %':>12} | {'dnsperf CPU %':>13} |"
    )
    print(f"|{'-' * 36}|{'-' * 13}:|{'-' * 28}|{'-' * 8}:|{'-' * 13}:|{'-' * 13}:|{'-' * 14}:|")
    results = {}
    for server in servers:
        if not server.rounds:
            continue
        s = results[server.name] = summary(server)
        each = " ".join(f"{r['qps']:.0f}" for r in server.rounds)
        print(
            f"| {server.name:<34} | {s['qps']:>12.0f} | {each:<26} | {s['lost']:>7.2f} "
            f"| {s['cpu_per_1k']:>12.4f} | {s['cpu_share']:>12.0f} | {s['client_cpu']:>13.0f} |"
        )
    return results


def require_tools() -> None:
    for tool, package in (("dnsperf", "dnsperf"), ("nsd", "nsd")):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            fail(f"'{tool}' not found: install the Debian package: apt-get install -y {package}")


def benchmark(args: argparse.Namespace) -> int:
    require_tools()
    nsd = shutil.which("nsd") or "/usr/sbin/nsd"
    tmp = Path(tempfile.mkdtemp(prefix="siplab-dnsbench-"))
    servers: list[Server] = []
    try:
        paths = write_inputs(tmp, "off")
        ours_argv = [
            sys.executable,
            "-m",
            "dnsserver",
            "--config-json",
            paths["ours"].read_text(),
        ]
        ours = Server(
            "siplab dnsserver (--events off)", f"{NET}.1", [*ours_argv, "--events", "off"]
        )
        stock = Server(
            "dnslib DNSServer (thread/request)",
            f"{NET}.2",
            [
                sys.executable,
                str(HERE / "dnslib_server.py"),
                str(paths["zone"]),
                f"{NET}.2",
                str(PORT),
            ],
        )
        nsd_server = Server(
            "NSD " + nsd_version(nsd), f"{NET}.3", [nsd, "-d", "-c", str(paths["nsd"])]
        )
        sampled = Server(
            f"siplab dnsserver (--events sample/{args.event_sample})",
            f"{NET}.4",
            [
                sys.executable,
                "-m",
                "dnsserver",
                "--config-json",
                paths["ours"].read_text().replace(f"{NET}.1", f"{NET}.4"),
                "--events",
                "sample",
                "--event-sample",
                str(args.event_sample),
            ],
        )
        servers = [ours, stock, nsd_server]
        start(ours, b'"ready"')
        start(stock, b"ready")
        start(nsd_server, None)
        check_all(servers)
        print(
            f"dnsperf -l {args.duration} -c {args.clients} -T {args.threads} "
            f"-q {args.outstanding} -t 2, {args.rounds} rounds, {os.cpu_count()} CPUs; "
            f"query mix: {len(MIX)} kinds, 100 lines",
            flush=True,
        )
        for number in range(1, args.rounds + 1):
            for server in servers:
                result = dnsperf(server, args, paths["queries"])
                server.rounds.append(result)
                print(
                    f"round {number}: {server.name:<34} {result['qps']:>9.0f} q/s, "
                    f"lost {result['lost']:.0f}, server CPU {result['cpu']:.2f} s",
                    flush=True,
                )
        if args.event_sample_round:
            start(sampled, b'"ready"')
            servers.append(sampled)
            events_before = sampled.events
            result = dnsperf(sampled, args, paths["queries"])
            sampled.rounds.append(result)
            time.sleep(0.5)
            print(
                f"round 1: {sampled.name:<34} {result['qps']:>9.0f} q/s, lost {result['lost']:.0f},"
                f" {sampled.events - events_before} events",
                flush=True,
            )
        results = print_table(servers)
        ours_qps = results[ours.name]["qps"]
        stock_qps = results[stock.name]["qps"]
        nsd_qps = results[nsd_server.name]["qps"]
        print()
        print(f"ours / dnslib = {ours_qps / stock_qps:.1f}x   (target >= 30x)")
        print(f"ours / NSD    = {ours_qps / nsd_qps:.2f}x  (target >= 0.8x)")
        return 0
    finally:
        for server in servers:
            stop(server.process)
        shutil.rmtree(tmp, ignore_errors=True)


def nsd_version(nsd: str) -> str:
    try:
        done = subprocess.run([nsd, "-v"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    match = re.search(r"NSD version (\S+)", done.stdout + done.stderr)
    return match.group(1) if match else ""


def dnsperf_arguments(parser: argparse.ArgumentParser, sides: str) -> None:
    """The load both DNS benchmarks put on each side, in rounds of ``sides``."""
    parser.add_argument("--duration", type=int, default=8, help="seconds per dnsperf run (8)")
    parser.add_argument("--rounds", type=int, default=3, help=f"rounds of {sides} (3)")
    parser.add_argument("--clients", type=int, default=4, help="dnsperf -c: client sockets (4)")
    parser.add_argument("--threads", type=int, default=1, help="dnsperf -T: threads (1)")
    parser.add_argument(
        "--outstanding", type=int, default=200, help="dnsperf -q: queries in flight (200)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    dnsperf_arguments(parser, "A B C")
    parser.add_argument(
        "--event-sample", type=int, default=100, help="N for the --events sample round (100)"
    )
    parser.add_argument(
        "--no-event-sample-round",
        dest="event_sample_round",
        action="store_false",
        help="skip the extra round of our server with --events sample",
    )
    parser.add_argument(
        "--self-check",
        action="store_true",
        help="no dnsperf/NSD: fire queries at our server and check answers, rotation and "
        "invalidation under load",
    )
    parser.add_argument("--queries", type=int, default=5000, help="queries for --self-check")
    args = parser.parse_args(argv)
    if args.self_check:
        from selfcheck import self_check  # bench/dns/selfcheck.py

        return asyncio.run(self_check(args.queries))
    return run_benchmark("bench/dns", benchmark, args)


if __name__ == "__main__":
    sys.exit(main())
