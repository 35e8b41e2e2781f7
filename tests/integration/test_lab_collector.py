"""Replicas join the lab: endpoint hosts started with ``--config-from-lab --control
connect:...`` (what ``docker compose up --scale endpoint=N`` runs), each given its own slice of
the lab's scalable group, seen leaving when they die, and their slot given to the next one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from emulator.channel import TOKEN_ENV
from tests.labs import fresh_lab_dict

pytestmark = pytest.mark.integration

PER_REPLICA = 3
COLLECTOR_PORT = 7071


@pytest.fixture
def replicas(own_processes: list[subprocess.Popen[bytes]]) -> list[subprocess.Popen[bytes]]:
    """Endpoint hosts the test starts (the lab did not): killed by PID afterwards."""
    return own_processes


def scalable_lab() -> dict[str, Any]:
    group = {
        "uri": "{n}@uctest.local",
        "scalable": True,
        "count_per_replica": PER_REPLICA,
        "retry_base": 1,
        "retry_max": 4,
    }
    return fresh_lab_dict(
        endpoints=[group], collector=lambda prefix: f"{prefix}.5:{COLLECTOR_PORT}"
    )


def replica(collector: str, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "endpoint", "--config-from-lab"]
    command += ["--control", f"connect:{collector}", *extra]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL)


def registered(lab: Any) -> dict[str, str]:
    """AOR -> host of every Registered endpoint, as 'siplab status' shows them."""
    return {e["uri"]: e["host"] for e in lab.status()["endpoints"] if e["state"] == "Registered"}


def until_registered(lab: Any, count: int) -> dict[str, str]:
    lab.until(lambda e: len(registered(lab)) >= count, timeout=30, since=0)
    return registered(lab)


def test_replicas_join_get_distinct_slices_and_leave(siplab_lab: Any, replicas: list[Any]) -> None:
    spec = scalable_lab()
    lab = siplab_lab(spec)
    collector = spec["collector"]
    replicas += [replica(collector), replica(collector)]

    found = until_registered(lab, 2 * PER_REPLICA)
    expected = {f"{1001 + i}@uctest.local" for i in range(2 * PER_REPLICA)}
    assert set(found) == expected
    hosts: dict[str, set[str]] = {}
    for aor, host in found.items():
        hosts.setdefault(host, set()).add(aor)
    assert set(hosts) == {"ep-1-1", "ep-1-2"}
    assert sorted(map(len, hosts.values())) == [PER_REPLICA, PER_REPLICA]
    joined = lab.events()
    assert {e["component"] for e in joined if e["kind"] == "component.joined"} == set(hosts)

    # The lab acts on a replica's endpoint by its AOR (the host runs on).
    one = min(hosts["ep-1-1"])
    since = lab.seq()
    lab.stop(one)
    lab.until(
        lambda e: e["kind"] == "registration.state" and e.get("aor") == one,
        since=since,
        timeout=10,
    )
    assert {e["uri"]: e for e in lab.status()["endpoints"]}[one]["state"] == "Inactive"
    lab.start(one)

    # A replica dies: it leaves the lab and its endpoints with it; the other stays registered.
    victim = replicas[0]
    since = lab.seq()
    victim.send_signal(signal.SIGKILL)
    left = lab.until(lambda e: e["kind"] == "component.left", since=since, timeout=10)
    gone = left["component"]
    status = {e["uri"]: e for e in lab.status()["endpoints"]}
    assert {status[aor]["state"] for aor in hosts[gone]} == {"Inactive"}
    assert {status[aor]["reason"] for aor in hosts[gone]} == {"left the lab"}

    # A new replica takes the free slot: the same members register again.
    replicas.append(replica(collector, "--name", "ep-1"))
    lab.until(
        lambda e: e["kind"] == "component.joined" and e["component"] == gone,
        since=since,
        timeout=30,
    )
    assert set(until_registered(lab, 2 * PER_REPLICA)) == expected


def test_a_joiner_without_the_lab_token_gets_no_slot(
    siplab_lab: Any, replicas: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "the-lab-token")  # the lab (started below) takes it
    spec = scalable_lab()
    lab = siplab_lab(spec)
    assert lab.status()["endpoints"] == []
    stranger = subprocess.Popen(
        [
            *(sys.executable, "-m", "endpoint", "--config-from-lab"),
            "--control",
            f"connect:{spec['collector']}",
        ],
        stdout=subprocess.DEVNULL,
        env={**os.environ, TOKEN_ENV: "not-the-lab-token"},
    )
    replicas.append(stranger)  # first: had the token check failed, it would hold slot 1
    replicas.append(replica(spec["collector"]))
    found = until_registered(lab, PER_REPLICA)
    assert set(found.values()) == {"ep-1-1"}
    joined = [e for e in lab.events() if e["kind"] == "component.joined"]
    assert [e["component"] for e in joined] == ["ep-1-1"]
    assert stranger.poll() is None  # refused, it keeps trying (a lab may restart)
