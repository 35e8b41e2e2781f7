"""The lab runtime: its channel across processes, its health check, its life cycle, its CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import psutil
import pytest
import yaml

from emulator.lab.ops import load_source
from emulator.lab.testing import TestLab
from tests.labs import allocate_prefix, fresh_lab_dict

pytestmark = pytest.mark.integration


def query(lab: TestLab, name: str, rdtype: str) -> dns.message.Message:
    host, port = lab.status()["dns"]["address"].rsplit(":", 1)
    return dns.query.udp(dns.message.make_query(name, rdtype), host, port=int(port), timeout=2)


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def test_supervisor_killed_leaves_no_component(siplab_lab: Any) -> None:
    lab = siplab_lab(fresh_lab_dict())
    children = [psutil.Process(pid) for pid in lab.started_pids() - {lab.handle.pid}]
    assert len(children) == 4  # dns, exp1, exp2, the endpoint
    os.kill(lab.handle.pid, signal.SIGKILL)
    # Each child sees its control channel close and stops on its own.
    gone, alive = psutil.wait_procs(children, timeout=15)
    assert alive == [], [p.pid for p in alive]
    assert len(gone) == 4


def test_a_component_over_the_socket_channel_joins_the_lab(
    siplab_lab: Any, own_processes: list[subprocess.Popen[bytes]]
) -> None:
    prefix = allocate_prefix()
    port = free_port(f"{prefix}.13")
    lab_dict = fresh_lab_dict(
        peers=[
            {"name": "exp1", "address": f"{prefix}.11"},
            {"name": "exp3", "address": f"{prefix}.13", "attach": f"{prefix}.13:{port}"},
        ],
        dns={"address": f"{prefix}.10", "port": 1053, "ttl": 5},
        endpoints=[],
    )
    config = load_source(lab_dict).registrar_config("exp3").model_dump_json()
    own_processes.append(
        subprocess.Popen(
            [
                *(sys.executable, "-m", "registrar", "--config-json", config),
                *("--control", f"listen:{prefix}.13:{port}"),
            ],
            stdout=subprocess.DEVNULL,
        )
    )
    lab = siplab_lab(lab_dict)
    events = lab.siplab("events", "--format", "json")
    ready = [json.loads(line) for line in events.stdout.splitlines()]
    assert any(e["component"] == "exp3" and e["kind"] == "ready" for e in ready)
    assert any(e["component"] == "exp3" and e["kind"] == "component.joined" for e in ready)
    status = {p["name"]: p for p in lab.status()["peers"]}
    assert status["exp3"]["state"] == "active"
    assert status["exp3"]["attached"] == f"{prefix}.13:{port}"
    assert lab.bindings("exp3")["registrations"] == 0
    refused = lab.siplab("kill", "exp3")
    assert refused.returncode != 0
    assert "runs elsewhere" in refused.stderr
    # No signal can reach it, so a pause silences it in-process instead, and says so.
    paused = lab.siplab("pause", "exp3")
    assert paused.returncode == 0, paused.stderr
    assert {p["name"]: p["state"] for p in lab.status()["peers"]}["exp3"] == "paused"
    assert lab.bindings("exp3")["link"]["partition"] is not None
    assert lab.siplab("resume", "exp3").returncode == 0
    assert {p["name"]: p["state"] for p in lab.status()["peers"]}["exp3"] == "active"
    since = lab.seq()
    assert lab.siplab("stop", "exp3").returncode == 0
    lab.until(
        lambda e: e["component"] == "exp3" and e["kind"] == "component.left",
        since=since,
        timeout=10,
    )
    assert own_processes[0].wait(timeout=10) == 0


STAND_IN = textwrap.dedent(
    """
    import asyncio, json, sys, time
    async def serve(reader, writer):
        await reader.readline()  # the lab's hello
        ready = {"t": time.time(), "component": "exp3", "kind": "ready", "address": sys.argv[1]}
        writer.write(json.dumps(ready).encode() + b"\\n")
        while await reader.readline():  # reads every request, answers none
            pass
    async def main():
        server = await asyncio.start_server(serve, sys.argv[1], int(sys.argv[2]))
        await server.serve_forever()
    asyncio.run(main())
    """
)


def test_a_component_that_stops_answering_shows_unresponsive(
    siplab_lab: Any, own_processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    prefix = allocate_prefix()
    port = free_port(f"{prefix}.13")
    script = tmp_path / "silent.py"
    script.write_text(STAND_IN)
    own_processes.append(subprocess.Popen([sys.executable, str(script), f"{prefix}.13", str(port)]))
    lab = siplab_lab(
        fresh_lab_dict(
            peers=[
                {"name": "exp1", "address": f"{prefix}.11"},
                {"name": "exp3", "address": f"{prefix}.13", "attach": f"{prefix}.13:{port}"},
            ],
            dns={"address": f"{prefix}.10", "port": 1053, "ttl": 5},
            endpoints=[],
        )
    )
    lab.until(
        lambda e: e["component"] == "exp3" and e["kind"] == "component.unresponsive" and e["on"],
        since=0,
        timeout=5,
    )
    assert {p["name"]: p["state"] for p in lab.status()["peers"]}["exp3"] == "unresponsive"
    # Asking it something fails within the lab's control timeout, in one line.
    result = lab.siplab("bindings", "exp3")
    assert result.returncode != 0
    assert "did not answer" in result.stderr


def test_a_lab_that_cannot_start_leaves_nothing_running(tmp_path: Path) -> None:
    lab = fresh_lab_dict()
    host = lab["dns"]["address"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((host, 1053))
        lab_file = tmp_path / "lab.yaml"
        lab_file.write_text(yaml.safe_dump(lab))
        result = subprocess.run(
            [sys.executable, "-m", "emulator.lab.cli", "up", "--detach", str(lab_file)],
            env={**os.environ, "SIPLAB_STATE_DIR": str(tmp_path / "state")},
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    assert result.returncode == 1
    assert "cannot listen on" in result.stderr
    assert "Traceback" not in result.stderr
    config = str(tmp_path / "state")
    survivors = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if config in " ".join(p.info["cmdline"] or [])
    ]
    assert survivors == []


def test_events_outlive_the_lab_and_roomos_windows_name_the_pid(
    make_lab: Callable[..., TestLab],
) -> None:
    lab = make_lab()
    endpoint_pid = lab.endpoint()["pid"]
    since = lab.seq()
    assert lab.siplab("maintenance", lab.peer_of(), "on").returncode == 0
    lab.until(
        lambda e: e["kind"] == "registration.state" and e["state"] == "Registered",
        since=since,
        timeout=10,
    )
    window = lab.siplab("events", "--format", "roomos", "--since", str(since))
    assert window.returncode == 0, window.stderr
    lines = window.stdout.splitlines()
    assert lines
    assert all(f"main[{endpoint_pid}]:" in line for line in lines), lines
    lab.down()
    stopped = lab.siplab("events", "--format", "roomos")
    assert stopped.returncode == 0, stopped.stderr
    assert "is not running" in stopped.stderr
    assert "Registration Status: 'Registered'" in stopped.stdout


def test_dns_faults_and_errors_read_as_one_line(make_lab: Callable[..., TestLab]) -> None:
    lab = make_lab()
    fault = lab.siplab("dns", "fault", "servfail", "--name", "exp1")
    assert fault.returncode == 0, fault.stderr
    assert query(lab, "exp1.uctest.local", "A").rcode() == dns.rcode.SERVFAIL
    assert query(lab, "exp2.uctest.local", "A").rcode() == dns.rcode.NOERROR
    human = lab.siplab("events").stdout
    (line,) = [x for x in human.splitlines() if "fault:" in x]
    assert "None" not in line
    assert "dns.servfail" in line
    assert "exp1.uctest.local" in line
    bad = lab.siplab("dns", "add", "exp9", "A", "999.1.1.1")
    assert bad.returncode != 0
    assert "999.1.1.1" in bad.stderr
    assert "http" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_fixture_keeps_zone_file_paths_relative_to_the_lab_file(
    siplab_lab: Any, tmp_path: Path
) -> None:
    lab = fresh_lab_dict()
    prefix = lab["dns"]["address"].rsplit(".", 1)[0]
    folder = tmp_path / "labs"
    folder.mkdir()
    (folder / "uctest.zone").write_text(
        textwrap.dedent(
            f"""\
            $ORIGIN uctest.local.
            $TTL 5
            _sip._tcp SRV 10 10 5060 exp1
            exp1 A {prefix}.11
            exp2 A {prefix}.12
            marker TXT "from the zone file"
            """
        )
    )
    lab["dns"]["zone_file"] = "uctest.zone"
    (folder / "lab.yaml").write_text(yaml.safe_dump(lab))
    running = siplab_lab(folder / "lab.yaml")
    answer = query(running, "marker.uctest.local", "TXT")
    assert '"from the zone file"' in answer.answer[0].to_text()
