"""Labs for integration tests: each test gets its own loopback /24, so labs run side by side.

Teardown stops the lab with ``siplab down`` and then checks, for every test, that no process
the lab started is alive and nothing listens on the lab's addresses any more. A process that
survived is killed (by the PID the lab recorded) and the test errors, so a leak is never silent.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil
import pytest

from emulator.testing import RunningLab, running_lab

_blocks = itertools.count(1)


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker.removeprefix("gw") or 0)


def allocate_prefix() -> str:
    """127.<100+worker>.<n>: unique per test and per xdist worker."""
    block = next(_blocks)
    if block > 250:
        raise RuntimeError("out of loopback blocks for this worker")
    return f"127.{100 + _worker_index()}.{block}"


def lab_dict(prefix: str, name: str, **overrides: Any) -> dict[str, Any]:
    """The seed's lab on ``prefix``.x, with short registration times for tests."""
    lab: dict[str, Any] = {
        "name": name,
        "domain": "uctest.local",
        "dns": {"address": f"{prefix}.10", "port": 1053, "ttl": 5},
        "peers": [
            {"name": "exp1", "address": f"{prefix}.11"},
            {"name": "exp2", "address": f"{prefix}.12"},
        ],
        "registrar": {"min_expires": 1, "max_expires": 4, "default_expires": 4},
        "endpoints": [
            {
                "uri": "1001@uctest.local",
                "proxy": "uctest.local",
                "transport": "tcp",
                "address": f"{prefix}.101",
                "retry_base": 1,
                "retry_max": 4,
            }
        ],
    }
    lab.update(overrides)
    return lab


def listening_on(prefix: str) -> list[str]:
    found = []
    for conn in psutil.net_connections(kind="inet"):
        if not conn.laddr or not str(conn.laddr.ip).startswith(prefix + "."):
            continue
        if conn.status in (psutil.CONN_LISTEN, psutil.CONN_NONE):
            found.append(f"{conn.laddr.ip}:{conn.laddr.port} pid={conn.pid}")
    return found


def assert_lab_gone(lab: RunningLab, pids: set[int], prefix: str) -> None:
    alive = [
        pid
        for pid in pids
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)  # ours: recorded by the lab when it started them
    sockets = listening_on(prefix)
    assert not alive, f"lab {lab.name} left processes running: {alive}"
    assert not sockets, f"lab {lab.name} left sockets listening: {sockets}"


def started_pids(running: RunningLab) -> set[int]:
    """Every PID the lab started, from its event file (it outlives the control plane)."""
    events = running.state_dir / running.name / "events.jsonl"
    lines = events.read_text().splitlines() if events.exists() else []
    pids = {
        int(event["pid"])
        for event in map(json.loads, lines)
        if event.get("kind") == "process.started"
    }
    return pids


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[Callable[..., RunningLab]]:
    """``make_lab(endpoints=..., registrar=...)`` starts a lab on a fresh /24 and returns it.

    A keyword replaces that key of the seed layout; a callable gets the /24 prefix first.
    """
    started: list[tuple[RunningLab, str, int]] = []
    with ExitStack() as stack:

        def start(**overrides: Any) -> RunningLab:
            prefix = allocate_prefix()
            name = f"t{prefix.replace('.', '-')}"
            lab = lab_dict(prefix, name)
            for key, value in overrides.items():
                lab[key] = value(prefix) if callable(value) else value
            workdir = tmp_path / name
            workdir.mkdir()
            running = stack.enter_context(running_lab(lab, workdir))
            started.append((running, prefix, running.handle.pid))
            return running

        yield start
    for running, prefix, supervisor_pid in started:
        assert_lab_gone(running, started_pids(running) | {supervisor_pid}, prefix)
