"""A lab started the way a user starts one, for the benchmarks: ``siplab up --detach LABFILE``.

The lab's state (its ``lab.json``, ``events.jsonl``, ``supervisor.log``) goes to a temporary
``SIPLAB_STATE_DIR`` that is removed afterwards; the lab is stopped with ``siplab down`` and,
should that fail, its supervisor and components are killed by PID. Component PIDs come from the
lab's own ``process.started`` events.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]


class DetachedLab:
    def __init__(self, lab: dict[str, Any], *, timeout: float = 60.0) -> None:
        self.name: str = lab["name"]
        self._lab = lab
        self._timeout = timeout
        self.tmp = Path(tempfile.mkdtemp(prefix=f"siplab-bench-{self.name}-"))
        self.env = {**os.environ, "SIPLAB_STATE_DIR": str(self.tmp / "state")}
        self.supervisor_pid: int | None = None
        self._pids: list[int] = []

    def siplab(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "emulator.lab.cli", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    @property
    def run_dir(self) -> Path:
        return self.tmp / "state" / self.name

    @property
    def events_path(self) -> Path:
        return self.run_dir / "events.jsonl"

    def __enter__(self) -> DetachedLab:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        lab_file = self.tmp / "lab.json"  # YAML is a superset of JSON
        lab_file.write_text(json.dumps(self._lab), encoding="utf-8")
        done = self.siplab(
            "up", "--detach", "--timeout", "20", str(lab_file), timeout=self._timeout
        )
        handle = self.run_dir / "lab.json"
        if handle.exists():
            self.supervisor_pid = int(json.loads(handle.read_text(encoding="utf-8"))["pid"])
            self._pids = [self.supervisor_pid, *self.component_pids().values()]
        if done.returncode not in (0, 3):  # 3: up, but some endpoint is not registered
            raise RuntimeError(f"siplab up failed ({done.returncode}): {done.stderr.strip()}")
        if self.supervisor_pid is None:
            raise RuntimeError(f"no {handle} after 'siplab up --detach'")

    def component_pids(self) -> dict[str, int]:
        """{component: pid} from the lab's ``process.started`` events."""
        pids: dict[str, int] = {}
        with contextlib.suppress(OSError), self.events_path.open(encoding="utf-8") as handle:
            for line in handle:
                if '"process.started"' in line:
                    event = json.loads(line)
                    pids[event["component"]] = int(event["pid"])
        return pids

    def count_events(self) -> dict[str, int]:
        """Events in the lab's events.jsonl, by kind (the file is written in batches)."""
        counts: dict[str, int] = {}
        with contextlib.suppress(OSError), self.events_path.open(encoding="utf-8") as handle:
            for line in handle:
                with contextlib.suppress(ValueError):
                    kind = json.loads(line).get("kind", "?")
                    counts[kind] = counts.get(kind, 0) + 1
        return counts

    def stop(self) -> None:
        try:
            if self.supervisor_pid is not None and psutil.pid_exists(self.supervisor_pid):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.siplab("down", "--lab", self.name, timeout=30)
            deadline = time.monotonic() + 10
            for pid in self._pids:
                while psutil.pid_exists(pid) and _is_ours(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if psutil.pid_exists(pid) and _is_ours(pid):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _is_ours(pid: int) -> bool:
    """A live (not zombie) process of this lab: guards against a recycled PID."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        cmdline = " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return "emulator.lab.cli" in cmdline or "--config-json" in cmdline


def cpu_seconds(pid: int) -> float:
    """user + system CPU of one process (psutil), 0 if it is gone."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def run_benchmark(name: str, benchmark: Callable[[argparse.Namespace], int], args: Any) -> int:
    """A benchmark's exit status: 1 with one line for a failure, 130 on Ctrl-C."""
    try:
        return benchmark(args)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's argument parser: its docstring's first paragraph is the description."""
    return argparse.ArgumentParser(
        description=doc.split("\n\n")[0] if doc else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def verdict(problems: list[str]) -> int:
    """A self-check's last line and exit status."""
    if problems:
        print("self-check FAILED: " + "; ".join(problems))
        return 1
    print("self-check passed")
    return 0


def sipp_load(rate: int, count: int) -> list[str]:
    """SIPp's options for ``count`` calls at ``rate`` per second (``-rp 1000``: per 1000 ms),
    with as many calls open at once as one second brings, so that a slow server shows as
    failures rather than as SIPp holding back."""
    return ["-r", str(rate), "-rp", "1000", "-m", str(count), "-l", str(max(rate, 100))]
