"""What watching a lab costs under SIP load: the supervisor's CPU per REGISTER against the peer's.

    python bench/events/run.py                     # 1,000 REGISTER/s for 20 s, ~40 s in all
    python bench/events/run.py --rate 1000 --duration 30
    python bench/events/run.py --self-check        # seconds: 200/s for 2 s, counts checked

A lab (DNS, one peer ``exp1``, no endpoint; registrar max 60 s) is started as a user starts
one, ``siplab up --detach LABFILE`` with a temporary ``SIPLAB_STATE_DIR``, and stopped with
``siplab down``. SIPp (Debian's sip-tester) sends UDP REGISTERs at a fixed rate, each from a new
user (``u<n>@uctest.local``, Expires: 60, bench/events/register.xml), to the peer. The CPU
(psutil ``cpu_times``, user + system) of the peer's process and of the lab's supervisor (its PID
from ``$SIPLAB_STATE_DIR/<lab>/lab.json``) is read before and after the load; the events are
counted from the lab's ``events.jsonl``. Printed: CPU per REGISTER of each, the ratio
supervisor / peer (target <= 0.1), and the supervisor's CPU per event it handled.

Addresses: one claimed loopback /24 (emulator.lab.addresses). Every process started here is
stopped by PID; the temporary directory is removed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchlab import (  # noqa: E402  (bench/benchlab.py)
    DetachedLab,
    arguments,
    cpu_seconds,
    run_benchmark,
    sipp_load,
    verdict,
)

from emulator.lab.addresses import next_block  # noqa: E402

PREFIX = next_block().prefix  # a loopback /24 nobody else here holds
PEER = f"{PREFIX}.11"
CLIENT = f"{PREFIX}.100"
DOMAIN = "uctest.local"


def lab_dict() -> dict[str, object]:
    return {
        "name": "bench-events",
        "domain": DOMAIN,
        "dns": {"address": f"{PREFIX}.10", "port": 1053, "metrics_port": None},
        "peers": [{"name": "exp1", "address": PEER, "tcp_port": None, "tls_port": None}],
        "registrar": {"min_expires": 1, "max_expires": 60, "default_expires": 60},
    }


def sipp(rate: int, count: int, duration: float) -> subprocess.CompletedProcess[str]:
    argv = [
        shutil.which("sipp") or "sipp",
        "-sf",
        str(HERE / "register.xml"),
        "-key",
        "domain",
        DOMAIN,
        "-t",
        "u1",
        "-i",
        CLIENT,
        "-p",
        "5060",
        *sipp_load(rate, count),
        "-timeout",
        f"{int(duration + 30)}s",
        "-nostdin",
        "-trace_err",
        "-error_file",
        "/dev/null",
        f"{PEER}:5060",
    ]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def register_count(lab: DetachedLab) -> tuple[int, int]:
    """(register.answered in stats events, register.answered events) from exp1, from the log."""
    counted = emitted = 0
    with lab.events_path.open(encoding="utf-8") as handle:
        for line in handle:
            if '"exp1"' not in line:
                continue
            event = json.loads(line)
            if event.get("component") != "exp1":
                continue
            if event["kind"] == "stats":
                counted += event["counts"].get("register.answered", 0)
            elif event["kind"] == "register.answered":
                emitted += 1
    return counted, emitted


def event_lines(lab: DetachedLab) -> int:
    with lab.events_path.open("rb") as handle:
        return sum(1 for _ in handle)


def benchmark(args: argparse.Namespace) -> int:
    if shutil.which("sipp") is None:
        print("bench/events: 'sipp' not found: apt-get install -y sip-tester", file=sys.stderr)
        return 2
    count = args.rate * args.duration
    with DetachedLab(lab_dict()) as lab:
        assert lab.supervisor_pid is not None
        peer_pid = lab.component_pids()["exp1"]
        lines_before = event_lines(lab)
        peer_before, sup_before = cpu_seconds(peer_pid), cpu_seconds(lab.supervisor_pid)
        started = time.monotonic()
        done = sipp(args.rate, count, args.duration)
        wall = time.monotonic() - started
        time.sleep(2.5)  # the supervisor catches up; the peer's last stats event (1 s timer)
        peer_cpu = cpu_seconds(peer_pid) - peer_before
        sup_cpu = cpu_seconds(lab.supervisor_pid) - sup_before
        events = event_lines(lab) - lines_before
        counted, emitted = register_count(lab)
        kinds = lab.count_events()
    if done.returncode not in (0, 1):
        print(f"bench/events: sipp failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        return 1
    print(
        f"SIPp UDP REGISTER, unique users, Expires 60: {count} at {args.rate}/s "
        f"({wall:.1f} s wall; sipp exit {done.returncode})"
    )
    print(f"register.answered: {counted} counted in stats events, {emitted} emitted as events")
    print(
        f"lab events during the load: {events} "
        f"(binding.added {kinds.get('binding.added', 0)}, stats {kinds.get('stats', 0)} in all)"
    )
    print()
    print(f"| {'process':<12} | {'CPU s':>7} | {'CPU ms / REGISTER':>17} |")
    print(f"|{'-' * 14}|{'-' * 8}:|{'-' * 18}:|")
    for name, cpu in (("peer (exp1)", peer_cpu), ("supervisor", sup_cpu)):
        print(f"| {name:<12} | {cpu:>7.2f} | {1000 * cpu / count:>17.4f} |")
    print()
    ratio = sup_cpu / peer_cpu if peer_cpu else float("inf")
    print(f"supervisor / peer CPU = {ratio:.3f}  (target <= 0.1)")
    if events:
        print(f"supervisor CPU per event = {1e6 * sup_cpu / events:.1f} us ({events} events)")
    if args.self_check:
        problems = []
        if done.returncode != 0:
            problems.append(f"sipp: some REGISTERs failed (exit {done.returncode})")
        if counted != count:
            problems.append(f"stats count {counted} REGISTERs answered, SIPp sent {count}")
        if kinds.get("binding.added", 0) != count:
            problems.append(f"{kinds.get('binding.added', 0)} binding.added for {count} users")
        return verdict(problems)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--rate", type=int, default=1000, help="REGISTERs per second (1000)")
    parser.add_argument("--duration", type=int, default=20, help="seconds of load (20)")
    parser.add_argument(
        "--self-check",
        action="store_true",
        help="200/s for 2 s: every REGISTER answered, counted and its binding reported",
    )
    args = parser.parse_args(argv)
    if args.self_check:
        args.rate, args.duration = 200, 2
    return run_benchmark("bench/events", benchmark, args)


if __name__ == "__main__":
    sys.exit(main())
