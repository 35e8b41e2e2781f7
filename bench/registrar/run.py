"""Our registrar peer against Kamailio under the same SIPp REGISTER load, rate stepped up.

    python bench/registrar/run.py                  # the whole ladder, ~20 minutes
    python bench/registrar/run.py --duration 4 --scenarios new --transports udp
    python bench/registrar/run.py --lab            # our peer inside a lab (siplab up --detach)
    python bench/registrar/run.py --self-check     # seconds: 200/s for 2 s each, all checked

Servers, both on one loopback /24 from ``emulator.lab.addresses.next_block()``, both started
afresh for each scenario and transport (so no binding of an earlier ladder expires during a
later one):

* ours: ``python -m registrar --address .11 --domain uctest.local --min-expires 1
  --max-expires 3600`` as a user starts it (events at their default setting, written to a file),
  or with ``--lab`` the peer ``exp1`` of a lab started with ``siplab up --detach``;
* Kamailio (Debian's package): ``kamailio -f bench/registrar/kamailio.cfg -DD -E`` on .12 only,
  usrloc in memory, with a temporary runtime directory; stopped by PID.

Load: SIPp (Debian's sip-tester) from .100, one REGISTER per call, over UDP and over TCP (one
connection, ``-t t1``), two scenarios: ``new`` (a user never seen before each time,
register-new.xml) and ``refresh`` (users registered beforehand, register-refresh.xml). For each
scenario, transport and server the rate climbs a ladder (1000, 2000, 3000, ... REGISTER/s, each
step ``--duration`` seconds) until a step is not held. A step is *held* when fewer than 1% of
its REGISTERs failed (no 200 within 4 s), fewer than 1% needed a retransmission (UDP: the
server fell half a second behind or dropped it), and SIPp got through the step in at most 10%
more than its length (the server kept up). Printed for each: the highest rate held, the CPU per
REGISTER at that rate (user + system of every process of the server, from psutil; with --lab
also the lab supervisor's), SIPp's own CPU (when it is near a whole core the reference is
SIPp-bound: its figure is a lower bound), and ours / Kamailio.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE.parent))

from benchlab import (  # noqa: E402  (bench/benchlab.py)
    DetachedLab,
    arguments,
    cpu_seconds,
    run_benchmark,
    sipp_load,
    verdict,
)

from emulator.lab.addresses import Block, next_block  # noqa: E402

DOMAIN = "uctest.local"
# Up to where SIPp itself runs out of CPU on 2 cores: Kamailio's TCP refreshes held 100,000.
# Rungs about 10% apart from 10,000 to 30,000, where this machine's figures fall (so a rate,
# and a ratio of two, is read to about 10%), wider above.
LADDER = [
    1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000, 11000, 12000, 13500, 15000,
    16500, 18000, 20000, 22500, 25000, 27500, 30000, 35000, 40000, 45000, 50000, 60000, 70000,
    80000, 90000, 100000, 120000,
]  # fmt: skip
SCENARIOS = ("new", "refresh")
SERVERS = ("ours", "floor", "kamailio")
TRANSPORTS = ("udp", "tcp")
FAIL_LIMIT = 0.01  # failed (or, over UDP, retransmitted) REGISTERs of a held step: < 1%
SLACK = 1.10  # a held step ends within 10% of its length (plus a fixed half second)
REFRESH_USERS = 2000
KAMAILIO_CFG = HERE / "kamailio.cfg"


@dataclass
class Step:
    rate: int
    sent: int
    ok: int
    failed: int
    retransmissions: int
    wall: float
    duration: int
    server_cpu: float
    supervisor_cpu: float | None
    sipp_cpu: float

    @property
    def held(self) -> bool:
        return (
            self.failed < FAIL_LIMIT * self.sent
            and self.retransmissions < FAIL_LIMIT * self.sent
            and self.ok + self.failed >= self.sent
            and self.wall <= self.duration * SLACK + 0.5
        )

    def per_register(self, cpu: float | None) -> float | None:
        return None if cpu is None or not self.ok else 1000 * cpu / self.ok


class Server:
    """A registrar under test: where it listens, and the CPU its processes have used."""

    name: str
    address: str
    supervisor_pid: int | None = None

    def pids(self) -> list[int]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def failure(self) -> str:
        """The end of its log, for a server that exited."""
        raise NotImplementedError

    def cpu(self) -> float:
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(psutil.NoSuchProcess):
                process = psutil.Process(pid)
                for each in (process, *process.children(recursive=True)):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        times = each.cpu_times()
                        total += times.user + times.system
        return total

    def supervisor_cpu(self) -> float | None:
        return None if self.supervisor_pid is None else cpu_seconds(self.supervisor_pid)


class Ours(Server):
    """``python -m registrar`` standalone; its events go to a file, as a user's would."""

    def __init__(self, address: str, tmp: Path) -> None:
        self.name, self.address = "ours", address
        self.events = tmp / "ours-events.jsonl"
        self._log = tmp / "ours-stderr.log"
        argv = [
            sys.executable,
            "-m",
            "registrar",
            "--address",
            address,
            "--domain",
            DOMAIN,
            "--min-expires",
            "1",
            "--max-expires",
            "3600",
        ]
        with self.events.open("wb") as out, self._log.open("wb") as err:
            self.proc = subprocess.Popen(
                argv, cwd=REPO, stdout=out, stderr=err, stdin=subprocess.DEVNULL
            )

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def describe(self) -> str:
        return "python -m registrar (standalone, events to a file)"

    def stop(self) -> None:
        _stop(self.proc)

    def failure(self) -> str:
        return self._log.read_text(errors="replace")[-800:]


class OursInLab(Server):
    """The peer ``exp1`` of a lab started with ``siplab up --detach`` (bench/benchlab.py)."""

    def __init__(self, block: Block) -> None:
        self.name, self.address = "ours", block.address(11)
        self.lab = DetachedLab(
            {
                "name": f"bench-registrar-{block.name}",
                "domain": DOMAIN,
                "dns": {"address": block.address(10), "port": 1053, "metrics_port": None},
                "peers": [{"name": "exp1", "address": self.address, "tls_port": None}],
                "registrar": {"min_expires": 1, "max_expires": 3600, "default_expires": 60},
            }
        )
        self.lab.start()
        self.supervisor_pid = self.lab.supervisor_pid

    def pids(self) -> list[int]:
        return [self.lab.component_pids()["exp1"]]

    def describe(self) -> str:
        return "peer exp1 in a lab (siplab up --detach)"

    def stop(self) -> None:
        self.lab.stop()

    def failure(self) -> str:
        return ""


class Floor(Server):
    """``bench/registrar/floor.py``: the least a CPython registrar does per REGISTER."""

    def __init__(self, address: str, tmp: Path) -> None:
        self.name, self.address = "floor", address
        self._log = tmp / "floor-stderr.log"
        argv = [sys.executable, str(HERE / "floor.py"), "--address", address]
        with self._log.open("wb") as err:
            self.proc = subprocess.Popen(
                argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL
            )

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def describe(self) -> str:
        return "bench/registrar/floor.py (frame, pick 7 headers, a dict, a 200; uvloop)"

    def stop(self) -> None:
        _stop(self.proc)

    def failure(self) -> str:
        return self._log.read_text(errors="replace")[-800:]


class Kamailio(Server):
    def __init__(self, address: str, tmp: Path) -> None:
        self.name, self.address = "kamailio", address
        run_dir = tmp / "kamailio"
        run_dir.mkdir(exist_ok=True)
        self._log = tmp / "kamailio.log"
        argv = [
            shutil.which("kamailio") or "/usr/sbin/kamailio",
            "-f",
            str(KAMAILIO_CFG),
            "-DD",  # foreground (its worker processes are still forked)
            "-E",  # log to stderr
            "-Y",
            str(run_dir),
            "-w",
            str(run_dir),
            "-l",
            f"udp:{address}:5060",
            "-l",
            f"tcp:{address}:5060",
            "-A",
            f'SIP_DOMAIN="{DOMAIN}"',
            # Shared memory holds usrloc: Kamailio's 64 MB default runs out after some 50,000
            # bindings (REGISTERs then get 500), well inside one ladder of new users.
            "-m",
            "1024",
        ]
        with self._log.open("wb") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def describe(self) -> str:
        version = subprocess.run(
            [self.proc.args[0], "-v"],
            capture_output=True,
            text=True,
            check=False,  # type: ignore[index]
        ).stdout.splitlines()
        name = version[0].removeprefix("version:").strip() if version else "kamailio"
        return f"{name}, {KAMAILIO_CFG.name}"

    def stop(self) -> None:
        _stop(self.proc)

    def failure(self) -> str:
        return self._log.read_text(errors="replace")[-800:]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM by PID, then SIGKILL (of it and any child it left) if it does not go."""
    if proc.poll() is not None:
        return
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                child.kill()


def wait_ready(server: Server, timeout: float = 20.0) -> None:
    """Until the server answers an OPTIONS over UDP and accepts a TCP connection."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((server.address.rsplit(".", 1)[0] + ".101", 0))
        udp.settimeout(0.25)
        _ask_options(server, udp, deadline)
    with socket.create_connection((server.address, 5060), timeout=5):
        pass


def _ask_options(server: Server, udp: socket.socket, deadline: float) -> None:
    host, port = udp.getsockname()
    options = (
        f"OPTIONS sip:{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bKready{os.getpid()}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:ready@{DOMAIN}>;tag=ready\r\n"
        f"To: <sip:{DOMAIN}>\r\n"
        f"Call-ID: ready-{os.getpid()}@bench\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    while True:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} did not answer on {server.address}:5060")
        proc = getattr(server, "proc", None)
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited: {server.failure()}")
        udp.sendto(options, (server.address, 5060))
        try:
            if udp.recv(65535).startswith(b"SIP/2.0 200"):
                return
        except TimeoutError:
            continue


class SippFailed(RuntimeError):
    """SIPp itself stopped (at the top of the ladder: out of CPU, or its connection broke)."""


def sipp(
    scenario: str,
    server: Server,
    transport: str,
    rate: int,
    count: int,
    client: str,
    tmp: Path,
    *,
    prefix: str = "",
    users: Path | None = None,
) -> tuple[dict[str, str], float, float]:
    """One SIPp run; returns its last cumulative statistics row, wall seconds and its CPU."""
    stat = tmp / "sipp-stat.csv"
    stat.unlink(missing_ok=True)
    argv = [
        shutil.which("sipp") or "sipp",
        "-sf",
        str(HERE / f"register-{scenario}.xml"),
        "-key",
        "domain",
        DOMAIN,
        "-key",
        "prefix",
        prefix or "u",
        "-t",
        "u1" if transport == "udp" else "t1",
        "-i",
        client,
        *sipp_load(rate, count),
        "-timeout",
        f"{count // rate + 60}s",
        "-nostdin",
        "-trace_stat",
        "-stf",
        str(stat),
        "-fd",
        "3600",
        "-trace_err",
        "-error_file",
        str(tmp / "sipp-errors.log"),
        f"{server.address}:5060",
    ]
    if users is not None:
        argv[3:3] = ["-inf", str(users)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=count // rate + 90,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode not in (0, 1) or not stat.exists():
        raise SippFailed(f"sipp failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    with stat.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    if not rows:
        raise RuntimeError(f"sipp wrote no statistics ({stat})")
    return rows[-1], wall, cpu


def step(
    scenario: str,
    server: Server,
    transport: str,
    rate: int,
    duration: int,
    client: str,
    tmp: Path,
    *,
    prefix: str = "",
    users: Path | None = None,
) -> Step:
    count = rate * duration
    cpu_before, sup_before = server.cpu(), server.supervisor_cpu()
    row, wall, sipp_cpu = sipp(
        scenario, server, transport, rate, count, client, tmp, prefix=prefix, users=users
    )
    sup_after = server.supervisor_cpu()
    return Step(
        rate=rate,
        sent=int(row["OutgoingCall(C)"]),
        ok=int(row["SuccessfulCall(C)"]),
        failed=int(row["FailedCall(C)"]),
        retransmissions=int(row["Retransmissions(C)"]),
        wall=wall,
        duration=duration,
        server_cpu=server.cpu() - cpu_before,
        supervisor_cpu=None if sup_before is None or sup_after is None else sup_after - sup_before,
        sipp_cpu=sipp_cpu,
    )


def ladder(
    scenario: str,
    server: Server,
    transport: str,
    rates: list[int],
    duration: int,
    client: str,
    tmp: Path,
    users: Path,
    log: bool,
) -> tuple[Step | None, list[Step]]:
    """Climb until a step is not held; returns the highest held step and every step run."""
    best: Step | None = None
    steps: list[Step] = []
    for index, rate in enumerate(rates):
        prefix = f"{server.name[0]}{transport}{index}x"  # new users on every step
        try:
            result = step(
                scenario,
                server,
                transport,
                rate,
                duration,
                client,
                tmp,
                prefix=prefix,
                users=users if scenario == "refresh" else None,
            )
        except SippFailed as exc:
            if not steps:
                raise
            # The load generator, not the server, gave out: the last step held stays the
            # figure, marked as the top of what could be measured.
            print(f"  {scenario:<7} {transport} {server.name:<8} {rate:>6}/s: {exc}", flush=True)
            print("  the ladder stops at the last rate held", flush=True)
            break
        steps.append(result)
        if log:
            print(
                f"  {scenario:<7} {transport} {server.name:<8} {rate:>6}/s: "
                f"{result.ok}/{result.sent} ok, {result.failed} failed, "
                f"{result.retransmissions} retransmitted, {result.wall:.1f} s, "
                f"{result.per_register(result.server_cpu) or 0:.3f} ms CPU/REGISTER, "
                f"SIPp {100 * result.sipp_cpu / result.wall:.0f}% CPU"
                + ("" if result.held else "  <- not held"),
                flush=True,
            )
        if not result.held:
            break
        best = result
    return best, steps


def register_users(server: Server, count: int, client: str, tmp: Path, users: Path) -> None:
    """Every refresh-scenario user gets its binding first, at a gentle rate."""
    row, _, _ = sipp("refresh", server, "udp", min(1000, count), count, client, tmp, users=users)
    if int(row["SuccessfulCall(C)"]) != count:
        raise RuntimeError(f"{server.name}: registering the refresh users failed")


def write_users(path: Path, count: int) -> None:
    lines = ["SEQUENTIAL", *(f"r{n}" for n in range(1, count + 1))]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")


@contextlib.contextmanager
def servers(names: list[str], block: Block, tmp: Path, in_lab: bool) -> Iterator[list[Server]]:
    """The servers asked for, in the order of SERVERS, each on its own address of the block."""
    started: list[Server] = []
    try:
        for name in SERVERS:
            if name not in names:
                continue
            if name == "ours":
                started.append(OursInLab(block) if in_lab else Ours(block.address(11), tmp))
            elif name == "kamailio":
                started.append(Kamailio(block.address(12), tmp))
            else:
                started.append(Floor(block.address(13), tmp))
        for server in started:
            wait_ready(server)
        yield started
    finally:
        for server in reversed(started):
            server.stop()


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def benchmark(args: argparse.Namespace) -> int:
    for tool in ("sipp", "kamailio") if "kamailio" in args.servers else ("sipp",):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            package = "sip-tester" if tool == "sipp" else "kamailio"
            print(f"bench/registrar: '{tool}' not found: apt-get install -y {package}")
            return 2
    block = next_block()
    client = block.address(100)
    tmp = Path(tempfile.mkdtemp(prefix="siplab-bench-registrar-"))
    users = tmp / "users.csv"
    write_users(users, args.users)
    results: dict[tuple[str, str, str], tuple[Step | None, list[Step]]] = {}
    events: list[int] = []
    try:
        for number, (scenario, transport) in enumerate(
            (scenario, transport) for scenario in args.scenarios for transport in args.transports
        ):
            # Fresh servers for each scenario and transport: no binding of an earlier ladder
            # expires (and costs its server) during this one.
            with servers(args.servers, block, tmp, args.lab) as started:
                if number == 0:
                    print(f"machine: {os.cpu_count()} CPUs, {_cpu_model()}; load {_load()}")
                    for server in started:
                        print(f"{server.name + ':':<9} {server.describe()} on {server.address}")
                    print(
                        f"SIPp from {client}; steps of {args.duration} s; rates {args.rates}; "
                        f"refresh users {args.users}"
                    )
                for server in started:
                    if scenario == "refresh":
                        register_users(server, args.users, client, tmp, users)
                    results[(scenario, transport, server.name)] = ladder(
                        scenario,
                        server,
                        transport,
                        args.rates,
                        args.duration,
                        client,
                        tmp,
                        users,
                        not args.quiet,
                    )
                    if isinstance(server, Ours):
                        events.append(_count_lines(server.events))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(report(results, args))
    if events:
        print(f"\nevents written by our peer: {sum(events)} ({', '.join(map(str, events))})")
    if args.self_check:
        return self_check(results, args)
    return 0


def report(
    results: dict[tuple[str, str, str], tuple[Step | None, list[Step]]],
    args: argparse.Namespace,
) -> str:
    lines = [
        "| scenario | transport | server | highest rate held (REGISTER/s) "
        "| CPU ms / REGISTER | supervisor ms / REGISTER | SIPp CPU | / Kamailio |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for scenario in args.scenarios:
        for transport in args.transports:
            kam, kam_steps = results.get((scenario, transport, "kamailio"), (None, []))
            for name in SERVERS:
                if (scenario, transport, name) not in results:
                    continue
                best, steps = results[(scenario, transport, name)]
                ratio = ""
                if name != "kamailio" and best is not None and kam is not None:
                    # Kamailio held the top of its ladder and this one did not: Kamailio's
                    # rate is a floor, so the ratio is a ceiling.
                    capped_below = kam is kam_steps[-1] and best is not steps[-1]
                    ratio = ("<= " if capped_below else "") + f"{best.rate / kam.rate:.2f}"
                capped = best is not None and best is steps[-1]
                rate = "none" if best is None else f"{best.rate}{'+' if capped else ''}"
                sipp_share = None if best is None else 100 * best.sipp_cpu / best.wall
                lines.append(
                    f"| {scenario} | {transport} | {name} | {rate} "
                    f"| {fmt(best and best.per_register(best.server_cpu), '.3f')} "
                    f"| {fmt(best and best.per_register(best.supervisor_cpu), '.3f')} "
                    f"| {fmt(sipp_share, '.0f')}% | {ratio} |"
                )
    lines.append("")
    lines.append(
        "'+': the top of the ladder was held, or SIPp gave out above it (the server may hold "
        "more; a ratio against it is marked <=). Held: < 1% failed, "
        "< 1% retransmitted, the step done within 10% of its length."
    )
    return "\n".join(lines)


def self_check(
    results: dict[tuple[str, str, str], tuple[Step | None, list[Step]]],
    args: argparse.Namespace,
) -> int:
    problems = []
    for (scenario, transport, name), (best, steps) in results.items():
        for each in steps:
            if each.ok != each.sent or each.failed:
                problems.append(
                    f"{name} {scenario}/{transport} at {each.rate}/s: {each.ok} of {each.sent} ok"
                )
        if best is None:
            problems.append(f"{name} {scenario}/{transport}: no step held")
    return verdict(problems)


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--duration", type=int, default=6, help="seconds per step (6)")
    parser.add_argument(
        "--rates",
        type=lambda text: [int(x) for x in text.split(",")],
        default=LADDER,
        help="the ladder, comma-separated REGISTER/s",
    )
    parser.add_argument("--scenarios", type=lambda text: text.split(","), default=list(SCENARIOS))
    parser.add_argument("--transports", type=lambda text: text.split(","), default=list(TRANSPORTS))
    parser.add_argument(
        "--users", type=int, default=REFRESH_USERS, help="users of the refresh scenario"
    )
    parser.add_argument(
        "--servers",
        type=lambda text: text.split(","),
        default=["ours", "kamailio"],
        help="of ours, floor (bench/registrar/floor.py) and kamailio; default ours,kamailio",
    )
    parser.add_argument("--lab", action="store_true", help="our peer inside a lab")
    parser.add_argument("--quiet", action="store_true", help="no line per step")
    parser.add_argument(
        "--self-check",
        action="store_true",
        help="200/s for 2 s per scenario, transport and server: every REGISTER answered",
    )
    args = parser.parse_args(argv)
    if args.self_check:
        args.rates, args.duration, args.users = [200], 2, 200
    bad = (
        set(args.scenarios) - set(SCENARIOS)
        or set(args.transports) - set(TRANSPORTS)
        or set(args.servers) - set(SERVERS)
    )
    if bad:
        parser.error(f"unknown: {', '.join(sorted(bad))}")
    return run_benchmark("bench/registrar", benchmark, args)


if __name__ == "__main__":
    sys.exit(main())
