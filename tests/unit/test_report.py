"""Failover reports from hand-written event lists, with exact expected numbers."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from emulator.lab import timeline
from emulator.lab.report import (
    EventFileError,
    build_report,
    load_events,
    nearest_rank,
    write_outputs,
)

EXP1, EXP2 = "127.63.9.11", "127.63.9.12"
ADDRESS = {"exp1": EXP1, "exp2": EXP2}


def ev(t: float, component: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"t": t, "component": component, "kind": kind, **fields}


def reg(t: float, aor: str, state: str, peer: str | None = None, expires: int | None = None):
    registrar = f"{ADDRESS[peer]}:5060" if peer else None
    return ev(
        t, aor, "registration.state", aor=aor, state=state, registrar=registrar, expires=expires
    )


def lab_start() -> list[dict[str, Any]]:
    return [
        ev(0.0, "exp1", "process.started", module="registrar", pid=1),
        ev(0.0, "exp2", "process.started", module="registrar", pid=2),
        ev(0.5, "exp1", "ready", address=EXP1, listeners=["tcp:5060"]),
        ev(0.5, "exp2", "ready", address=EXP2, listeners=["tcp:5060"]),
        # An endpoint's ready also has an address: it must not make the endpoint a peer.
        ev(0.6, "a@x", "ready", address="127.63.9.101", uri="a@x"),
    ]


def fault(t: float, name: str, target: str, **fields: Any) -> dict[str, Any]:
    return ev(t, "supervisor", "fault.applied", fault=name, target=target, **fields)


def kill_events() -> list[dict[str, Any]]:
    return [
        *lab_start(),
        reg(1.0, "a@x", "Registered", "exp1", 60),
        reg(1.0, "b@x", "Registered", "exp1", 60),
        reg(1.0, "c@x", "Registered", "exp2", 60),
        fault(10.0, "kill", "exp1"),
        ev(10.0, "exp1", "process.exited", pid=1),
        reg(10.25, "a@x", "Failed"),
        reg(10.5, "b@x", "Failed"),
        reg(11.0, "a@x", "Registering"),
        reg(11.5, "a@x", "Registered", "exp2", 60),
        fault(20.0, "start", "exp1"),
    ]


def test_kill_run_has_exact_times_and_a_gap_equal_to_recovery() -> None:
    report = build_report(kill_events())
    assert len(report.runs) == 1  # the restoration ("start") is not a run
    run = report.runs[0]
    assert (run.fault, run.target, run.fault_at, run.restored_at) == ("kill", "exp1", 10.0, 20.0)
    a, b, c = run.records
    assert (a.aor, a.affected, a.peer) == ("a@x", True, "exp1")
    assert (a.detection, a.recovery, a.gap, a.recovered_to) == (0.25, 1.5, 1.5, "exp2")
    assert (b.detection, b.recovery, b.gap) == (0.5, None, None)
    assert (c.affected, c.peer, c.detection, c.recovery, c.gap) == (False, "exp2", None, None, None)
    assert [r.aor for r in report.not_recovered] == ["b@x"]
    detection = report.summary["detection"]
    assert (detection.count, detection.median, detection.p90, detection.max) == (2, 0.25, 0.5, 0.5)
    assert (report.summary["recovery"].count, report.summary["gap"].max) == (1, 1.5)


def test_maintenance_gap_counts_only_time_after_the_old_binding_expired() -> None:
    events = [
        *lab_start(),
        reg(1.0, "a@x", "Registered", "exp1", 4),
        ev(4.0, "a@x", "registration.refreshed", aor="a@x", expires=4),  # a's binding: until 8.0
        reg(4.5, "b@x", "Registered", "exp1", 2),  # b's binding: until 6.5
        fault(5.0, "maintenance", "exp1", on=True),
        reg(7.0, "b@x", "Failed"),
        reg(7.5, "a@x", "Failed"),
        reg(7.75, "a@x", "Registered", "exp2", 4),
        reg(8.0, "b@x", "Registered", "exp2", 4),
        fault(9.0, "maintenance", "exp1", on=False),
    ]
    report = build_report(events)
    assert len(report.runs) == 1  # maintenance off is a restoration
    run = report.runs[0]
    assert run.restored_at == 9.0
    a, b = run.records
    assert (a.detection, a.recovery, a.expiry, a.gap) == (2.5, 2.75, 3.0, 0.0)
    assert (b.detection, b.recovery, b.expiry, b.gap) == (2.0, 3.0, 1.5, 1.5)
    assert report.summary["gap"].max == 1.5
    assert report.not_recovered == []


def test_markers_bound_runs_and_a_move_after_the_end_marker_is_not_a_recovery() -> None:
    marker = {"scenario": "s1", "fault": "stop", "option": "srv"}
    events = [
        *lab_start(),
        reg(1.0, "a@x", "Registered", "exp1", 60),
        fault(2.0, "kill", "exp2"),  # before the scenario: not one of its runs
        fault(3.0, "start", "exp2"),
        ev(9.0, "supervisor", "scenario.run", run=1, phase="start", target="exp1", **marker),
        reg(9.5, "a@x", "Failed"),  # seen before the lab recorded the fault: detection 0
        fault(10.0, "stop", "exp1"),
        reg(11.0, "a@x", "Registered", "exp2", 60),
        ev(12.0, "supervisor", "scenario.run", run=1, phase="end", target="exp1", **marker),
        fault(12.5, "start", "exp1"),
        ev(20.0, "supervisor", "scenario.run", run=2, phase="start", target="exp2", **marker),
        fault(21.0, "stop", "exp2"),
        reg(21.5, "a@x", "Failed"),
        ev(25.0, "supervisor", "scenario.run", run=2, phase="end", target="exp2", **marker),
        reg(26.0, "a@x", "Registered", "exp1", 60),
    ]
    report = build_report(events)
    assert [(r.index, r.fault, r.target, r.option) for r in report.runs] == [
        (1, "stop", "exp1", "srv"),
        (2, "stop", "exp2", "srv"),
    ]
    first, second = (run.records[0] for run in report.runs)
    assert (first.detection, first.recovery, first.gap) == (0.0, 1.0, 1.0)
    assert report.runs[0].restored_at == 12.5
    assert (second.detection, second.recovery) == (0.5, None)
    assert build_report(events, scenario="other").runs == []
    assert len(build_report(events, scenario="s1").runs) == 2


def test_json_has_one_record_per_run_and_endpoint_and_text_names_the_lost() -> None:
    report = build_report(kill_events())
    data = json.loads(report.to_json())
    assert len(data["records"]) == 3
    assert data["summary"]["not_recovered"] == 1
    assert data["summary"]["percentiles"] == "nearest-rank"
    assert data["summary"]["recovery"] == {
        "count": 1,
        "median": 1.5,
        "p90": 1.5,
        "p99": 1.5,
        "max": 1.5,
    }
    text = report.render_text()
    assert "kill" in text
    assert "2/3" in text
    assert "1 affected endpoint(s) did not recover" in text
    assert "run 1 b@x" in text


def test_nearest_rank() -> None:
    values = [float(v) for v in range(1, 11)]
    assert [nearest_rank(values, p) for p in (50, 90, 99, 100)] == [5.0, 9.0, 10.0, 10.0]
    assert nearest_rank([3.0], 1) == 3.0


def test_no_faults_is_an_empty_report() -> None:
    report = build_report(lab_start())
    assert report.runs == []
    assert report.summary["recovery"].count == 0
    assert "nothing to report" in report.render_text()


def test_load_events_counts_bad_lines_and_names_missing_or_garbled_files(tmp_path: Path) -> None:
    with pytest.raises(EventFileError, match="no such event file"):
        load_events(tmp_path / "missing.jsonl")
    garbled = tmp_path / "garbled.jsonl"
    garbled.write_text("hello\n{not json\n")
    with pytest.raises(EventFileError, match="not an event log"):
        load_events(garbled)
    mixed = tmp_path / "events.jsonl"
    lines = [json.dumps(e) for e in kill_events()]
    lines.insert(2, '{"t": "soon", "component": "x", "kind": "y"}')
    mixed.write_text("\n".join(lines) + '\n{"t": 30.0, "compo')  # a torn last line
    events = load_events(mixed)
    assert len(events) == len(kill_events())
    assert (events.bad_lines, events.first_bad) == (2, 3)
    assert "2 line(s) of the event file were not events (first: line 3)" in (
        build_report(events).render_text()
    )


def test_timeline_intervals() -> None:
    line = timeline.build_timeline(kill_events())
    assert [(b.start, b.end, b.label) for b in line.peers["exp1"]] == [
        (0.0, 0.5, "starting"),
        (0.5, 10.0, "up"),
        (10.0, 20.0, "down"),
    ]
    assert [(b.start, b.end, b.label) for b in line.registrations["a@x"]] == [
        (1.0, 10.25, "exp1"),
        (11.5, 20.0, "exp2"),
    ]
    assert line.failures["b@x"] == [10.5]
    assert [(t, label) for t, label, _ in line.faults] == [
        (10.0, "kill exp1"),
        (20.0, "start exp1"),
    ]


def flow(t: float, aor: str, reg_id: int, state: str, peer: str) -> dict[str, Any]:
    """An Outbound flow's state; its registrar is named whatever the state, as the endpoint
    names its target."""
    registrar = f"{ADDRESS[peer]}:5060"
    return ev(t, aor, "registration.flow", aor=aor, reg_id=reg_id, state=state, registrar=registrar)


def outbound_kill_events() -> list[dict[str, Any]]:
    """o@x has flow 1 on exp1 and flow 2 on exp2; s@x, without Outbound, is on exp1."""
    overall = ev(1.1, "o@x", "registration.state", aor="o@x", state="Registered", reg_id=1)
    return [
        *lab_start(),
        flow(1.0, "o@x", 1, "Registered", "exp1"),
        {**overall, "registrar": f"{EXP1}:5060"},
        flow(1.2, "o@x", 2, "Registered", "exp2"),
        reg(1.0, "s@x", "Registered", "exp1", 60),
        fault(10.0, "kill", "exp1"),
        flow(10.25, "o@x", 1, "Failed", "exp1"),
        reg(10.5, "s@x", "Failed"),
        flow(11.0, "o@x", 1, "Registering", "exp1"),
        reg(12.0, "s@x", "Registered", "exp2", 60),
        fault(20.0, "start", "exp1"),
        flow(21.0, "o@x", 1, "Registered", "exp1"),
    ]


def test_outbound_endpoint_keeps_a_registration_through_the_kill() -> None:
    (run,) = build_report(outbound_kill_events()).runs
    o, s = run.records
    assert (o.aor, o.affected, o.peer) == ("o@x", True, "exp1")
    # Its flow to exp1 failed at 10.25; its flow to exp2 was registered all along.
    assert (o.detection, o.recovery, o.gap, o.recovered_to) == (0.25, 0.0, 0.0, "exp2")
    assert (s.detection, s.recovery, s.gap, s.recovered_to) == (0.5, 2.0, 2.0, "exp2")


def test_outbound_flow_failing_on_another_peer_is_not_detection() -> None:
    events = [e for e in outbound_kill_events() if e.get("reg_id") != 1 or e["t"] < 10]
    events.append(flow(10.5, "o@x", 2, "Failed", "exp2"))  # the other flow, on the survivor
    o = build_report(events).runs[0].records[0]
    assert (o.affected, o.detection, o.recovery) == (True, None, 0.0)


def test_outbound_timeline_shows_the_flow_still_registered() -> None:
    line = timeline.build_timeline(outbound_kill_events())
    assert [(b.start, b.end, b.label) for b in line.registrations["o@x"]] == [
        (1.0, 10.25, "exp1"),
        (10.25, 21.0, "exp2"),
        (21.0, 21.0, "exp1"),
    ]


def synthetic(endpoints: int, seed: int = 7) -> list[dict[str, Any]]:
    """A kill of exp1 with ``endpoints`` endpoints, most of which move to exp2."""
    rng = random.Random(seed)
    events = lab_start()
    for i in range(endpoints):
        aor = f"{1000 + i}@x"
        events.append(reg(1.0 + rng.random(), aor, "Registered", "exp1" if i % 3 else "exp2", 60))
    events.append(fault(10.0, "kill", "exp1"))
    for i in range(endpoints):
        if i % 3:
            events.append(reg(10.0 + rng.random() / 10, f"{1000 + i}@x", "Failed"))
            events.append(reg(10.5 + rng.expovariate(1.0), f"{1000 + i}@x", "Registered", "exp2"))
    events.append(fault(20.0, "start", "exp1"))
    return events


@pytest.mark.parametrize("endpoints", [5, timeline.LANE_LIMIT + 1])
def test_timeline_png_is_a_png_of_the_expected_size(tmp_path: Path, endpoints: int) -> None:
    events = synthetic(endpoints)
    report = build_report(events)
    assert report.summary["recovery"].count == len([i for i in range(endpoints) if i % 3])
    paths = write_outputs(report, events, tmp_path / "out")
    data = paths["timeline"].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = pytest.importorskip("PIL.Image")
    with image.open(paths["timeline"]) as png:
        png.verify()
        assert png.size[0] == 1300  # 13 in at 100 dpi; the height follows the lanes
        assert png.size[1] > 300
    assert (
        json.loads(paths["report"].read_text())["summary"]["affected"]
        == report.summary["detection"].count
    )


def test_fault_labels_close_together_go_on_separate_levels() -> None:
    # 8% of a 20 s span is 1.6 s: a kill and its start 0.1 s later must not share a level.
    assert timeline._label_levels([0.0, 0.1, 10.0, 10.2, 10.3], 20.0) == [0, 1, 0, 1, 2]
    crowded = timeline._label_levels([i * 0.01 for i in range(10)], 20.0)
    assert max(crowded) == timeline.LABEL_LEVELS - 1  # bounded however many there are
