"""How quickly the ``siplab`` CLI answers: ``--help``, and a fault from keystroke to event.

For each of N rounds it times, as whole processes:
  * ``siplab --help``                         (target: median <= 0.3 s)
  * ``siplab pause exp1`` -> its ``fault.applied`` event, measured from just before the
    process is started to the event's own timestamp (target: median <= 0.1 s); the resume
    after it is not timed
  * the reference: ``python -c pass``, the interpreter's floor, in the same rounds
and prints min / median / max and each median's ratio to the floor.

    .venv/bin/python bench/cli/latency.py [--rounds 20]

It starts its own lab on a loopback /24 no one else holds (state in a temporary directory) and
always stops it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from emulator.lab.addresses import next_block
from emulator.lab.sync import SyncLab


def lab_dict(prefix: str) -> dict[str, object]:
    return {
        "name": "bench-cli",
        "dns": {"address": f"{prefix}.10", "port": 1053},
        "peers": [
            {"name": "exp1", "address": f"{prefix}.11"},
            {"name": "exp2", "address": f"{prefix}.12"},
        ],
        "endpoints": [],
    }


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    start = time.time()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return start, time.time() - start


def report(name: str, values: list[float], floor: float | None) -> None:
    median = statistics.median(values)
    ratio = f"   x{median / floor:.2f} the floor" if floor else ""
    print(
        f"{name:<34} min {min(values) * 1000:7.1f} ms   median {median * 1000:7.1f} ms"
        f"   max {max(values) * 1000:7.1f} ms{ratio}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    siplab = [sys.executable, "-m", "emulator.lab.cli"]
    with tempfile.TemporaryDirectory(prefix="siplab-bench-cli-") as root:
        env = {**os.environ, "SIPLAB_STATE_DIR": root, "SIPLAB_LAB": "bench-cli"}
        floor, help_times, fault_times = [], [], []
        with SyncLab.up(lab_dict(next_block().prefix), root=Path(root)) as lab:
            for _ in range(args.rounds):
                floor.append(timed([sys.executable, "-c", "pass"], env)[1])
                help_times.append(timed([*siplab, "--help"], env)[1])
                since = int(lab.status()["seq"])
                start, _ = timed([*siplab, "pause", "exp1"], env)
                event = lab.until(
                    lambda e: e["kind"] == "fault.applied" and e["fault"] == "pause",
                    since=since,
                    timeout=10,
                )
                fault_times.append(event["t"] - start)
                lab.resume("exp1")
        base = statistics.median(floor)
        print(f"{args.rounds} rounds; python {sys.version.split()[0]}, {os.cpu_count()} cpus")
        report("python -c pass (the floor)", floor, None)
        report("siplab --help", help_times, base)
        report("siplab pause exp1 -> fault.applied", fault_times, base)


if __name__ == "__main__":
    main()
