"""``docker compose up --scale endpoint=2`` runs a lab whose endpoint hosts join it (each given
its own slice of the group), ``siplab`` drives it from the host, and Docker's own verbs are seen
by the lab: ``kill`` and ``stop`` -> the peer left and the endpoints re-register on the other,
``start`` -> it rejoins, ``pause`` and ``network disconnect`` -> it is unresponsive and the
endpoints move back at their next refresh (Timer F bounds how long a REGISTER to a silent peer
waits), scaling down -> that replica and its endpoints leave the lab.

Run by ``make compose-test`` (tests/containers/run.sh), which starts a Docker engine, builds the
image and sets ``SIPLAB_COMPOSE_TEST=1``; elsewhere the test is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator.lab.ops import LabOps, LabTimeout
from emulator.lab.state import find_lab
from emulator.lab.sync import SyncLab

ROOT = Path(__file__).resolve().parents[2]
LAB_FILE = Path(__file__).with_name("lab.yaml")
REPLICAS = 2
PER_REPLICA = 2  # lab.yaml's count: each replica runs a group of two
ENDPOINTS = {f"{1001 + i}@uctest.local" for i in range(REPLICAS * PER_REPLICA)}
# The lab's user in its containers (compose.yaml's default SIPLAB_UID): it writes the state file.
CONTAINER_UID = 1000

pytestmark = [
    pytest.mark.containers,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        os.environ.get("SIPLAB_COMPOSE_TEST") != "1",
        reason="needs the Docker engine 'make compose-test' starts",
    ),
]

Status = dict[str, Any]


def compose_command() -> list[str]:
    found = shutil.which("docker-compose")
    return [found] if found else ["docker", "compose"]


class ComposeLab:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.state = work / "state"
        self.state.mkdir()
        if os.geteuid() == 0:
            os.chown(self.state, CONTAINER_UID, CONTAINER_UID)
        self.file = work / "compose.yaml"
        siplab = [sys.executable, "-m", "emulator.lab.cli"]
        self.file.write_text(self.run(*siplab, "compose", str(LAB_FILE)))
        self.env = {
            **os.environ,
            "SIPLAB_STATE_DIR": str(self.state),
            "SIPLAB_CONTROL_PORT": str(free_port()),
            "SIPLAB_UID": str(CONTAINER_UID),
            "SIPLAB_GID": str(CONTAINER_UID),
        }
        self.project = f"siplabtest{os.getpid()}"
        self.lab: SyncLab | None = None

    def run(self, *command: str, timeout: float = 60) -> str:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=getattr(self, "env", None),
            cwd=ROOT,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(command[:4])}... failed: {done.stderr[-2000:]}")
        return done.stdout

    def compose(self, *args: str, timeout: float = 120) -> str:
        base = [*compose_command(), "-p", self.project, "-f", str(self.file)]
        return self.run(*base, "--project-directory", str(ROOT), *args, timeout=timeout)

    def siplab(self, *args: str) -> str:
        return self.run(sys.executable, "-m", "emulator.lab.cli", *args, timeout=30)

    def status(self) -> Status:
        """What 'siplab status' on the host says."""
        return dict(json.loads(self.siplab("status", "--json")))

    def attach(self, timeout: float) -> SyncLab:
        deadline = time.monotonic() + timeout
        while not (self.state / "compose-test" / "lab.json").exists():
            assert time.monotonic() < deadline, "the lab service wrote no state file"
            time.sleep(0.2)  # a file from another container: nothing to wait on but the disk
        self.lab = SyncLab(find_lab("compose-test", self.state))
        return self.lab

    def until(self, what: str, predicate: Callable[[Status], bool], timeout: float) -> Status:
        """Wait (on the lab's events) until 'siplab status' satisfies ``predicate``."""
        assert self.lab is not None
        deadline = time.monotonic() + timeout
        since = self.lab.status()["seq"]
        while True:
            status = self.status()
            if predicate(status):
                return status
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"not {what} within {timeout:g} s: {json.dumps(status)}")
            try:
                event = self.lab.until(lambda e: True, since=since, timeout=min(remaining, 2.0))
                since = int(event["seq"]) + 1
            except LabTimeout:
                pass  # no event for a while: read the status again


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def registrars(status: Status) -> set[str | None]:
    return {LabOps.peer_at(status, e["registrar"]) for e in status["endpoints"]}


def all_on(peer: str) -> Callable[[Status], bool]:
    def check(status: Status) -> bool:
        states = {e["state"] for e in status["endpoints"]}
        return states == {"Registered"} and registrars(status) == {peer}

    return check


def peer_state(status: Status, name: str) -> str:
    return next(str(p["state"]) for p in status["peers"] if p["name"] == name)


@pytest.fixture
def compose_lab() -> Iterator[ComposeLab]:
    work = Path(tempfile.mkdtemp(prefix="siplab-compose-"))
    lab = ComposeLab(work)
    try:
        yield lab
    finally:
        lab.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", timeout=120)
        shutil.rmtree(work, ignore_errors=True)


def test_docker_verbs_on_a_compose_lab_are_seen_by_siplab(compose_lab: ComposeLab) -> None:
    lab = compose_lab
    lab.compose("up", "-d", "--scale", f"endpoint={REPLICAS}", timeout=300)
    lab.attach(timeout=60)
    status = lab.until(
        f"{len(ENDPOINTS)} endpoints registered",
        lambda s: (
            len(s["endpoints"]) == len(ENDPOINTS)
            and {e["state"] for e in s["endpoints"]} == {"Registered"}
        ),
        timeout=60,
    )
    assert {e["uri"] for e in status["endpoints"]} == ENDPOINTS
    hosts = {f"endpoint-{k}" for k in range(1, REPLICAS + 1)}
    assert {e["host"] for e in status["endpoints"]} == hosts  # a slice each
    assert all(e["address"].startswith("198.18.") for e in status["endpoints"])
    first = LabOps.peer_at(status, status["endpoints"][0]["registrar"])
    assert first is not None
    other = next(p["name"] for p in status["peers"] if p["name"] != first)

    # Docker kills the peer: the kernel closes its connections, the lab sees it leave.
    lab.compose("kill", first)
    status = lab.until(f"all on {other}", all_on(other), timeout=30)
    assert peer_state(status, first) == "stopped"

    # Docker starts it again: the lab attaches again and it is active.
    lab.compose("start", first)
    lab.until(f"{first} back", lambda s: peer_state(s, first) == "active", timeout=60)

    # Docker freezes the survivor: silence; the endpoints notice at their next refresh (6 s
    # registrations) once Timer F (6.4 s) expires, and go back to the first peer.
    lab.compose("pause", other)
    status = lab.until(f"all back on {first}", all_on(first), timeout=90)
    assert peer_state(status, other) == "unresponsive"
    lab.compose("unpause", other)
    lab.until(f"{other} answering", lambda s: peer_state(s, other) == "active", timeout=30)

    # Docker stops the peer gracefully (SIGTERM through the init): it closes its connections
    # and leaves; the endpoints re-register on the other at once.
    lab.compose("stop", "-t", "5", first)
    status = lab.until(f"all on {other} after a stop", all_on(other), timeout=30)
    assert peer_state(status, first) == "stopped"
    lab.compose("start", first)
    lab.until(f"{first} back", lambda s: peer_state(s, first) == "active", timeout=60)

    # Docker cuts the survivor off the network, its sockets left open: silence both ways. The
    # lab finds it unresponsive and the endpoints go back to the first peer (refresh + Timer F).
    container = lab.compose("ps", "-q", other).strip()
    networks = json.loads(
        lab.run("docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}", container)
    )
    ((network, settings),) = networks.items()
    address = (settings.get("IPAMConfig") or {}).get("IPv4Address") or settings["IPAddress"]
    lab.run("docker", "network", "disconnect", network, container)
    status = lab.until(f"all on {first} after a disconnect", all_on(first), timeout=90)
    assert peer_state(status, other) == "unresponsive"
    lab.run("docker", "network", "connect", "--ip", address, network, container)
    lab.until(f"{other} reconnected", lambda s: peer_state(s, other) == "active", timeout=60)

    # The lab's own faults over the published control plane, with its token.
    assert lab.siplab("maintenance", other, "on").strip() == f"{other}: maintenance on"
    assert "maintenance" in peer_state(lab.status(), other)
    refused = subprocess.run(
        [sys.executable, "-m", "emulator.lab.cli", "kill", first],
        capture_output=True,
        text=True,
        env=lab.env,
        timeout=30,
        check=False,
    )
    assert refused.returncode == 1
    assert f"docker compose kill {first}" in refused.stderr
    lab.siplab("maintenance", other, "off")
    # siplab pause on a container: no signal reaches it, so it is silenced in-process.
    lab.siplab("pause", other)
    assert peer_state(lab.status(), other) == "paused"
    lab.siplab("resume", other)
    assert peer_state(lab.status(), other) == "active"
    roomos = lab.siplab("events", "--format", "roomos")
    assert "Registered as '1001@uctest.local'" in roomos

    # A scripted experiment on the running container lab (maintenance: the next refresh).
    out = lab.work / "failover"
    lab.run(
        *(sys.executable, "-m", "emulator.lab.cli", "scenario", "failover", "--running"),
        *("compose-test", "--fault", "maintenance", "--runs", "1", "--out", str(out)),
        timeout=120,
    )
    summary = json.loads((out / "report.json").read_text())["summary"]
    assert summary["affected"] >= 1
    assert summary["recovered"] == summary["affected"]

    # Scaling down stops a replica: it de-registers and leaves, its endpoints with it.
    lab.compose("up", "-d", "--no-recreate", "--scale", "endpoint=1", timeout=120)
    status = lab.until(
        "one replica left",
        lambda s: (
            {e["reason"] for e in s["endpoints"] if e["state"] != "Registered"} == {"left the lab"}
        ),
        timeout=60,
    )
    registered = [e for e in status["endpoints"] if e["state"] == "Registered"]
    assert len(registered) == PER_REPLICA
    assert len({e["host"] for e in registered}) == 1

    # 'siplab down' stops the supervisor (in its container) and its state file goes.
    lab.siplab("down")
    assert not (lab.state / "compose-test" / "lab.json").exists()
