"""The ``siplab`` commands a user types, against real labs."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulator.lab.testing import TestLab, leftovers
from tests.labs import fresh_lab_dict

pytestmark = pytest.mark.integration


def write_lab(path: Path, lab: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(lab, sort_keys=False), encoding="utf-8")
    return path


def recorded_pids(state: Path, name: str) -> set[int]:
    """Every PID a lab started, from the event file it leaves in its state directory."""
    events = state / name / "events.jsonl"
    lines = events.read_text(encoding="utf-8").splitlines() if events.exists() else []
    return {int(e["pid"]) for e in map(json.loads, lines) if e["kind"] == "process.started"}


def lab_addresses(lab: dict[str, Any]) -> set[str]:
    addresses = {str(peer["address"]) for peer in lab["peers"]}
    addresses |= {str(e["address"]) for e in lab.get("endpoints", []) if "address" in e}
    return addresses | {str(lab["dns"]["address"])}


def siplab(state_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emulator.lab.cli", *args],
        env={**os.environ, "SIPLAB_STATE_DIR": str(state_dir)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_status_json_has_the_documented_shape(make_lab: Callable[..., TestLab]) -> None:
    lab = make_lab()
    result = lab.siplab("status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["dns"]["address"].endswith(":1053")
    assert [p["name"] for p in status["peers"]] == ["exp1", "exp2"]
    for peer in status["peers"]:
        assert {"name", "address", "state", "registrations"} <= peer.keys()
        assert peer["state"] == "active"
    (endpoint,) = status["endpoints"]
    assert {"uri", "state", "registrar", "transport"} <= endpoint.keys()
    assert endpoint["uri"] == "1001@uctest.local"
    assert endpoint["state"] == "Registered"
    assert endpoint["transport"] == "TCP"
    host, port = endpoint["registrar"].rsplit(":", 1)
    assert port == "5060"
    registered_peer = next(p for p in status["peers"] if p["address"] == host)
    assert registered_peer["registrations"] == 1

    table = lab.siplab("status")
    assert table.returncode == 0
    assert "Registered" in table.stdout
    assert "exp1" in table.stdout

    bindings = lab.siplab("bindings", registered_peer["name"], "--json")
    assert bindings.returncode == 0, bindings.stderr
    (binding,) = json.loads(bindings.stdout)["bindings"]
    assert binding["aor"] == "1001@uctest.local"
    assert binding["source"].startswith("tcp ")
    assert 0 < binding["expires"] <= 4


def test_maintenance_kill_and_start_change_the_peer_state(
    make_lab: Callable[..., TestLab],
) -> None:
    lab = make_lab()

    def peer_state(name: str) -> str:
        return next(p["state"] for p in lab.status()["peers"] if p["name"] == name)

    assert lab.siplab("maintenance", "exp2", "on").returncode == 0
    assert peer_state("exp2") == "maintenance"
    assert lab.siplab("maintenance", "exp2", "off").returncode == 0
    assert peer_state("exp2") == "active"

    seq = lab.seq()
    killed = lab.siplab("kill", "exp2")
    assert killed.returncode == 0, killed.stderr
    exited = lab.until(
        lambda e: e["component"] == "exp2" and e["kind"] == "process.exited",
        since=seq,
        timeout=10,
        what="exp2 exit",
    )
    assert exited["signal"] == "SIGKILL"
    assert peer_state("exp2") == "stopped"

    started = lab.siplab("start", "exp2")
    assert started.returncode == 0, started.stderr
    assert peer_state("exp2") == "active"
    again = lab.siplab("start", "exp2")
    assert again.returncode != 0
    assert "already running" in again.stderr


def test_control_errors_are_one_line(make_lab: Callable[..., TestLab]) -> None:
    lab = make_lab()
    for args, expected in [
        (("maintenance", "nosuch", "on"), "'nosuch' is not a peer"),
        (("kill", "nosuch"), "no component named 'nosuch'"),
        (("maintenance", "exp1", "maybe"), "Invalid value"),
    ]:
        result = lab.siplab(*args)
        assert result.returncode != 0
        assert expected in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("peers: [{name: exp1, address: 127.0.0.300}]\n", "peers[0].address"),
        ("peers: []\n", "peers"),
        ("peers: [{name: a, address: 127.0.9.1}]\nendpoints: [{uri: nodomain}]\n", "endpoints[0]"),
        ("peers: [{name: a, address: 127.0.9.1}]\nbogus: 1\n", "bogus"),
        ("peers: [\n", "not valid YAML"),
        (
            "peers: [{name: a, address: 127.0.9.1}]\n"
            "dns: {records: [{name: _sip._tcp, type: SRV, data: '10 10 x'}]}\n",
            "dns.records[0]",
        ),
        ("- just\n- a list\n", "must be a YAML mapping"),
    ],
)
def test_invalid_lab_file_gets_one_line(tmp_path: Path, content: str, expected: str) -> None:
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text(content)
    result = siplab(tmp_path / "state", "up", "--detach", str(lab_file))
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "state").exists() or not list((tmp_path / "state").glob("*/lab.json"))


def test_missing_lab_file_and_no_running_lab(tmp_path: Path) -> None:
    missing = siplab(tmp_path, "up", str(tmp_path / "nope.yaml"))
    assert missing.returncode != 0
    assert "cannot read lab file" in missing.stderr
    for command in (("status",), ("down",), ("kill", "exp1")):
        result = siplab(tmp_path, *command)
        assert result.returncode != 0
        assert "no lab is running" in result.stderr


def test_two_labs_side_by_side(make_lab: Callable[..., TestLab]) -> None:
    one = make_lab()
    two = make_lab()
    assert one.root != two.root
    for lab in (one, two):
        assert lab.endpoint()["state"] == "Registered"
    addresses = {one.status()["dns"]["address"], two.status()["dns"]["address"]}
    assert len(addresses) == 2


def test_several_labs_need_lab_option(tmp_path: Path) -> None:
    state = tmp_path / "state"
    labs: list[dict[str, Any]] = []
    try:
        for _ in range(2):
            lab = fresh_lab_dict(endpoints=[])
            lab_file = write_lab(tmp_path / f"{lab['name']}.yaml", lab)
            result = siplab(state, "up", "--detach", str(lab_file))
            assert result.returncode == 0, result.stderr
            assert f"'siplab down {lab['name']}'" in result.stdout
            labs.append(lab)
        ambiguous = siplab(state, "status")
        assert ambiguous.returncode != 0
        assert "pick one with --lab" in ambiguous.stderr
        assert siplab(state, "status", "--lab", labs[0]["name"]).returncode == 0
        listing = siplab(state, "labs")
        assert all(lab["name"] in listing.stdout for lab in labs)
        again = siplab(state, "up", "--detach", str(tmp_path / f"{labs[0]['name']}.yaml"))
        assert again.returncode != 0
        assert "already running" in again.stderr
        # A script stops exactly the lab it started, by the name 'up' printed, with others up.
        pids = recorded_pids(state, labs[0]["name"])
        stopped = siplab(state, "down", labs[0]["name"])
        assert stopped.returncode == 0, stopped.stderr
        assert leftovers(pids, lab_addresses(labs[0])) == []
        assert siplab(state, "status").returncode == 0  # the other one still runs, alone now
    finally:
        for lab in labs:
            pids = recorded_pids(state, lab["name"])
            siplab(state, "down", lab["name"])
            assert leftovers(pids, lab_addresses(lab)) == []


def test_foreground_up_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    lab = fresh_lab_dict()
    lab_file = write_lab(tmp_path / "lab.yaml", lab)
    state = tmp_path / "state"
    process = subprocess.Popen(
        [sys.executable, "-m", "emulator.lab.cli", "up", str(lab_file)],
        env={**os.environ, "SIPLAB_STATE_DIR": str(state)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        assert process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 30
        while not any("is up" in line for line in output):
            assert time.monotonic() < deadline, "".join(output)
            if selector.select(timeout=deadline - time.monotonic()):
                line = process.stdout.readline()
                assert line, "siplab up exited early:\n" + "".join(output)
                output.append(line)
        assert any("Registered to" in line for line in output)
        pids = recorded_pids(state, lab["name"]) | {process.pid}
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=30)
        output.append(rest)
        assert process.returncode == 0, "".join(output)
        assert f"lab {lab['name']!r} stopped" in rest
        assert leftovers(pids, lab_addresses(lab)) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_control_plane_answers_bad_requests_with_json_errors(
    make_lab: Callable[..., TestLab],
) -> None:
    lab = make_lab()
    base = lab.handle.control

    def call(method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(base + path, data=body, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    cases = [
        ("POST", "/faults/maintenance", b"not json", 400),
        ("POST", "/faults/maintenance", b"[1, 2]", 400),
        ("POST", "/faults/maintenance", b'{"target": "exp1", "on": "yes"}', 409),
        ("POST", "/faults/kill", b"{}", 400),
        ("POST", "/faults/explode", b'{"target": "exp1"}', 409),
        ("POST", "/faults/kill", b'{"target": "nosuch"}', 409),
        ("GET", "/events?since=abc", None, 400),
        ("GET", "/wait?until=forever", None, 400),
        ("POST", "/components/exp1/explode", b"{}", 404),
        ("POST", "/components/exp1/ops/shutdown", b"{}", 409),
        ("POST", "/components/dns/ops/nosuch", b"{}", 409),
        ("POST", "/components/dns/ops/add", b'{"records": "x"}', 409),
    ]
    for method, path, body, status in cases:
        code, payload = call(method, path, body)
        assert code == status, (path, payload)
        assert payload["error"], path
    # The lab is unharmed.
    assert call("GET", "/status")[1]["endpoints"][0]["state"] == "Registered"
    assert all(p["state"] == "active" for p in lab.status()["peers"])
