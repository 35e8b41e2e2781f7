"""``siplab scenario failover`` and ``siplab report``, end to end on a real lab."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from PIL import Image

from tests.labs import fresh_lab_dict

pytestmark = pytest.mark.integration


def siplab(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emulator.lab.cli", *args],
        env={**os.environ, "SIPLAB_STATE_DIR": str(state)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def failover(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``siplab scenario failover --endpoints 2 ARGS`` on a fresh lab whose endpoints retry
    within seconds; state in tmp_path/state, outputs in tmp_path/out."""
    lab = fresh_lab_dict()
    prefix = lab["dns"]["address"].rsplit(".", 1)[0]
    lab["endpoint_base_address"] = f"{prefix}.101"
    lab["endpoints"] = [{"uri": "1001@uctest.local", "retry_base": 1, "retry_max": 2}]
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text(yaml.safe_dump(lab))
    result = siplab(
        tmp_path / "state", "scenario", "failover", "--lab", str(lab_file), "--endpoints", "2",
        "--out", str(tmp_path / "out"), *args,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_failover_scenario_writes_a_report_and_a_timeline(tmp_path: Path) -> None:
    result = failover(tmp_path, "--runs", "3", "--fault", "kill")
    assert "median" in result.stdout.lower()
    out, state = tmp_path / "out", tmp_path / "state"

    report = json.loads((out / "report.json").read_text())
    assert [run["index"] for run in report["runs"]] == [1, 2, 3]
    records = report["records"]
    assert len(records) == 3 * 2  # one per run and endpoint
    assert {r["aor"] for r in records} == {"1001@uctest.local", "1002@uctest.local"}
    affected = [r for r in records if r["affected"]]
    # SRV spreads the endpoints; the busiest peer is faulted, so each run moves at least one.
    assert {r["run"] for r in affected} == {1, 2, 3}
    for record in affected:
        assert 0 <= record["detection"] <= record["recovery"]
        assert record["gap"] == pytest.approx(record["recovery"])  # kill: lost at the fault
        assert record["recovered_to"] != record["peer"]
    for record in records:
        if not record["affected"]:
            assert record["detection"] is None
            assert record["recovery"] is None
    for metric in ("detection", "recovery", "gap"):
        summary = report["summary"][metric]
        assert summary["count"] == len(affected)
        assert summary["median"] <= summary["p90"] <= summary["p99"] <= summary["max"]
    with Image.open(out / "timeline.png") as picture:
        picture.verify()
        assert picture.format == "PNG"
        assert picture.size[0] > 600

    # The same summary from the recorded events, as a user would redo it later.
    (events,) = state.glob("*/events.jsonl")
    again = siplab(state, "report", str(events), "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    redone = json.loads((tmp_path / "again" / "report.json").read_text())
    assert redone["summary"]["recovery"] == report["summary"]["recovery"]
    assert not list(state.glob("*/lab.json"))  # the experiment's lab was stopped


def _kill_report(tmp_path: Path, option: str, runs: int, timeout: float) -> dict[str, Any]:
    failover(tmp_path, "--option", option, "--fault", "kill", "--runs", str(runs),
             "--timeout", str(timeout))  # fmt: skip
    return cast(dict[str, Any], json.loads((tmp_path / "out" / "report.json").read_text()))


def test_outbound_endpoints_lose_no_registration_when_a_peer_is_killed(tmp_path: Path) -> None:
    report = _kill_report(tmp_path, "outbound", runs=2, timeout=30)
    assert [run["option"] for run in report["runs"]] == ["outbound", "outbound"]
    records = report["records"]
    # Each endpoint has a flow on each peer, so every endpoint is affected in every run...
    assert len(records) == 4
    assert all(r["affected"] for r in records)
    for record in records:
        # ...notices the loss of its flow, and was registered on the other peer all along.
        assert record["detection"] is not None
        assert record["detection"] >= 0
        assert (record["recovery"], record["gap"]) == (0, 0)
        assert record["recovered_to"] != record["peer"]


def test_static_proxies_without_outbound_do_not_fail_over(tmp_path: Path) -> None:
    report = _kill_report(tmp_path, "static", runs=1, timeout=5)
    (run,) = report["runs"]
    assert run["target"] == "exp1"  # Proxy 1: every endpoint registers there and only there
    records = report["records"]
    assert len(records) == 2
    assert all(r["affected"] for r in records)
    for record in records:
        assert record["detection"] is not None  # it notices, and has nowhere to go
        assert (record["recovery"], record["gap"], record["recovered_to"]) == (None, None, None)
    assert report["summary"]["recovery"]["count"] == 0


def test_report_of_a_missing_file_is_one_line(tmp_path: Path) -> None:
    result = siplab(tmp_path, "report", str(tmp_path / "nope.jsonl"))
    assert result.returncode != 0
    assert "nope.jsonl" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
