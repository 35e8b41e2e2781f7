"""Failover reports: what each fault did to the lab's registrations, computed from its events.

A report is a pure function of an event list (the lab's ``events.jsonl`` or ``Lab.events()``);
the only I/O here is the explicit :func:`load_events` and :func:`write_outputs`.

**Runs.** If the log has ``scenario.run`` markers (``siplab`` scenarios write them), each
marked run is one run, from its ``start`` marker to its ``end`` marker. Otherwise every
``fault.applied`` that applies a fault (not a restoration: ``start``, ``resume``, ``heal`` or
maintenance ``on=false``) starts a run that lasts until the next fault.

**Per run and endpoint** (an endpoint is an AOR). An endpoint is *affected* when its last
``registration.state`` before the run started was ``Registered`` with a registrar on the
faulted peer (peers are named by their ``ready`` event's address); with Outbound On (RFC 5626),
when one of its flows was (``registration.flow``, :class:`LiveRegistrations`). All times are
seconds after the ``fault.applied`` event:

* detection: the endpoint's first ``Failed`` in the run (Outbound: its flow to the target's);
* recovery: its first ``Registered`` on another peer in the run (Outbound: 0 when another flow
  was already registered elsewhere);
* gap: how long no live binding existed for it anywhere. For kill, stop, pause and partition
  the old binding is unusable from the fault on, so the gap is the recovery time. For
  maintenance and impairment (and any other fault) the old peer keeps the binding, and routes
  to it, until the binding runs out at its last registration or refresh plus the granted
  expires, so the gap is ``max(0, recovery - expiry)``.

An endpoint can see a fault a moment before the lab records it (the kernel closes a killed
peer's sockets before the supervisor writes its event); such times count as 0. With markers
the "registered before" state is taken at the start marker, which is written before the fault,
so that race cannot misclassify an endpoint; a marker-less log takes it at the fault event.

Unaffected endpoints get a record with null times. An affected endpoint that does not register
on another peer within its run has null recovery and gap; it is counted as not recovered and
left out of the recovery and gap statistics (the text says how many).

**Statistics** use the nearest-rank percentile: the p-th percentile of n sorted values is the
value at rank ceil(p/100 * n), so every reported figure is a measured one (the median of an even
count is the lower middle value).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emulator.events import Event
from emulator.kinds import Kind
from emulator.lab.ops import RESTORE

# The restoration that undoes each fault (``Lab.restore`` and the scenario runner use it too).
RESTORE_OF = RESTORE  # what undoes each fault: one table, shared with the Lab API
RESTORATIONS = frozenset({"start", "resume", "heal"})
# Faults after which the old binding can no longer be reached; for the rest it lives until expiry.
BINDING_LOST = frozenset({"kill", "stop", "pause", "partition"})
METRICS = ("detection", "recovery", "gap")
PERCENTILES = "nearest-rank"


class EventFileError(Exception):
    """An event file could not be read; ``str()`` is one line naming the file and the problem."""


class EventList(list[dict[str, Any]]):
    """Events read from a file, with how many of its lines were not events."""

    def __init__(self, events: Iterable[dict[str, Any]], bad_lines: int = 0, first_bad: int = 0):
        super().__init__(events)
        self.bad_lines = bad_lines
        self.first_bad = first_bad  # 1-based line number of the first bad line (0: none)


def load_events(path: Path | str) -> EventList:
    """Read a lab's ``events.jsonl``. Lines that are not events are counted, not hidden."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise EventFileError(f"{path}: no such event file") from None
    except OSError as exc:
        raise EventFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    events: list[dict[str, Any]] = []
    bad = first_bad = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            events.append(Event.from_json(line).to_dict())
        except ValueError:
            bad += 1
            first_bad = first_bad or number
    if bad and not events:
        raise EventFileError(f"{path}: not an event log (none of its {bad} lines is an event)")
    return EventList(events, bad, first_bad)


# -- the report -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EndpointRecord:
    run: int
    aor: str
    endpoint: str  # the component that emitted its events
    affected: bool
    peer: str | None = None  # where it was registered when the run started
    detection: float | None = None
    recovery: float | None = None
    gap: float | None = None
    recovered_to: str | None = None
    expiry: float | None = None  # when the old binding ran out (expiry rule only)

    @property
    def recovered(self) -> bool:
        return self.recovery is not None


@dataclass(frozen=True, slots=True)
class Run:
    index: int  # 1-based, in time order
    fault: str
    target: str
    option: str | None
    scenario: str | None
    started_at: float  # the start marker, or the fault itself without markers
    fault_at: float
    end_at: float | None  # None: the run lasts to the end of the log
    restored_at: float | None
    gap_rule: str  # "binding lost at fault" | "binding lives until expiry"
    records: tuple[EndpointRecord, ...]

    @property
    def affected(self) -> list[EndpointRecord]:
        return [r for r in self.records if r.affected]


@dataclass(frozen=True, slots=True)
class MetricSummary:
    count: int
    median: float | None
    p90: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> MetricSummary:
        ordered = sorted(values)
        if not ordered:
            return cls(0, None, None, None, None)
        pick = lambda p: nearest_rank(ordered, p)  # noqa: E731
        return cls(len(ordered), pick(50), pick(90), pick(99), ordered[-1])


def nearest_rank(ordered: Sequence[float], percentile: float) -> float:
    """The value at rank ceil(p/100 * n) of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(percentile / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(slots=True)
class Report:
    runs: list[Run]
    summary: dict[str, MetricSummary]
    notes: list[str] = field(default_factory=list)

    @property
    def records(self) -> list[EndpointRecord]:
        return [record for run in self.runs for record in run.records]

    @property
    def not_recovered(self) -> list[EndpointRecord]:
        return [r for r in self.records if r.affected and not r.recovered]

    def to_dict(self) -> dict[str, Any]:
        affected = [r for r in self.records if r.affected]
        return {
            "runs": [
                {k: _round(v) for k, v in asdict(run).items() if k != "records"}
                | {"affected": len(run.affected)}
                for run in self.runs
            ],
            "records": [{k: _round(v) for k, v in asdict(r).items()} for r in self.records],
            "summary": {
                "affected": len(affected),
                "recovered": sum(r.recovered for r in affected),
                "not_recovered": len(self.not_recovered),
                "percentiles": PERCENTILES,
                "unit": "s",
                **{
                    name: {k: _round(v) for k, v in asdict(s).items()}
                    for name, s in self.summary.items()
                },
            },
            "notes": self.notes,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def render_text(self) -> str:
        if not self.runs:
            return "\n".join(["no fault in these events: nothing to report", *self.notes])
        options = sorted({run.option for run in self.runs if run.option})
        head = f"failover report: {len(self.runs)} run{'s' if len(self.runs) != 1 else ''}"
        head += f", option {', '.join(options)}" if options else ""
        rows = [
            [
                "RUN",
                "FAULT",
                "TARGET",
                "AFFECTED",
                "DETECTED",
                "RECOVERED",
                "RECOVERY MAX",
                "GAP MAX",
            ]
        ]
        for run in self.runs:
            affected = run.affected
            recoveries = [r.recovery for r in affected if r.recovery is not None]
            gaps = [r.gap for r in affected if r.gap is not None]
            rows.append(
                [
                    str(run.index),
                    run.fault,
                    run.target,
                    f"{len(affected)}/{len(run.records)}",
                    str(sum(r.detection is not None for r in affected)),
                    str(len(recoveries)),
                    _seconds(max(recoveries, default=None)),
                    _seconds(max(gaps, default=None)),
                ]
            )
        table = [["METRIC", "COUNT", "MEDIAN", "P90", "P99", "MAX"]]
        for name, s in self.summary.items():
            table.append(
                [name, str(s.count), *(_seconds(v) for v in (s.median, s.p90, s.p99, s.max))]
            )
        lines = [head, "", *_table(rows), "", *_table(table)]
        lines.append(f"(seconds after the fault; {PERCENTILES} percentiles)")
        missing = self.not_recovered
        if missing:
            shown = ", ".join(f"run {r.run} {r.aor}" for r in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            lines.append(
                f"{len(missing)} affected endpoint(s) did not recover within their run and are "
                f"not in the recovery/gap statistics: {shown}{more}"
            )
        return "\n".join([*lines, *self.notes])


def _round(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


# -- computing it -----------------------------------------------------------------------


def build_report(events: Sequence[Mapping[str, Any]], *, scenario: str | None = None) -> Report:
    """The report of every run in ``events``; of one scenario's runs if ``scenario`` is given."""
    ordered = sorted(events, key=lambda e: float(e["t"]))  # stable: equal times keep log order
    peers = peer_addresses(ordered)
    states = _registration_history(ordered)
    runs: list[Run] = []
    for index, window in enumerate(_windows(ordered, scenario), 1):
        target_host = peers.get(window.target)
        records = tuple(
            _record(index, aor, endpoint, window, target_host, peers)
            for aor, endpoint in sorted(states.items())
        )
        runs.append(window.run(index, records))
    summary = {
        name: MetricSummary.of(
            [v for run in runs for r in run.affected if (v := getattr(r, name)) is not None]
        )
        for name in METRICS
    }
    return Report(runs, summary, _notes(events, runs, peers))


def _notes(
    events: Sequence[Mapping[str, Any]], runs: list[Run], peers: dict[str, str]
) -> list[str]:
    notes = []
    bad = getattr(events, "bad_lines", 0)
    if bad:
        first = getattr(events, "first_bad", 0)
        notes.append(f"note: {bad} line(s) of the event file were not events (first: line {first})")
    if events and int(events[0].get("seq", 0) or 0) > 0:
        notes.append(
            f"note: the events start at seq {events[0]['seq']}; registrations made before it "
            "are unknown, so endpoints registered earlier may be missing from 'affected'"
        )
    for target in sorted({run.target for run in runs} - set(peers)):
        notes.append(f"note: fault target {target!r} is not a peer; no endpoint counts as affected")
    return notes


def peer_addresses(events: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Peer name -> IP, from the registrars' ``ready`` events (the last one wins)."""
    registrars: set[str] = set()
    addresses: dict[str, str] = {}
    for event in events:
        component = str(event.get("component"))
        kind = event.get("kind")
        if kind == Kind.PROCESS_STARTED and event.get("module") == "registrar":
            registrars.add(component)
        elif (
            kind == Kind.READY
            and isinstance(event.get("address"), str)
            and (component in registrars or event.get("listeners") is not None)
        ):
            registrars.add(component)
            addresses[component] = event["address"]
    return addresses


def registrar_host(registrar: Any) -> str | None:
    """The IP of an ``ip:port`` registrar field (IPv6 may be bracketed)."""
    if not isinstance(registrar, str) or not registrar:
        return None
    host = (
        registrar.rsplit(":", 1)[0] if registrar.count(":") == 1 or "]" in registrar else registrar
    )
    return host.strip("[]")


class LiveRegistrations:
    """Which registrars hold each AOR's live registration, followed event by event.

    Without Outbound an endpoint is registered with at most one registrar: the one its last
    ``registration.state`` names if that is ``Registered``. With Outbound On (RFC 5626; its
    events carry a ``reg_id``) each flow registers on its own, and its overall state stays
    ``Registered`` while any flow is: the registrars are those of its registered
    ``registration.flow``s, first flow first."""

    def __init__(self) -> None:
        self._flows: dict[str, dict[Any, str]] = defaultdict(dict)

    def apply(self, event: Mapping[str, Any]) -> tuple[str, ...] | None:
        """The hosts holding ``event``'s AOR after it; None if it changes nothing here."""
        kind, aor, state = event.get("kind"), event.get("aor"), event.get("state")
        if not isinstance(aor, str) or not isinstance(state, str):
            return None
        host = registrar_host(event.get("registrar")) if state == "Registered" else None
        if kind == Kind.REGISTRATION_STATE and event.get("reg_id") is None:
            return (host,) if host else ()
        if kind != Kind.REGISTRATION_FLOW:
            return None  # an Outbound endpoint's overall state: its flows tell more
        flows = self._flows[aor]
        if host:
            flows[event.get("reg_id")] = host
        else:
            flows.pop(event.get("reg_id"), None)
        return tuple(dict.fromkeys(flows[reg_id] for reg_id in sorted(flows, key=str)))


@dataclass(frozen=True, slots=True)
class _State:
    t: float
    state: str | None  # None: a refresh (the binding's life restarts)
    hosts: tuple[str, ...]  # registrars holding a live registration after this
    expires: float | None
    where: str | None = None  # an Outbound flow's registrar, for its Failed


@dataclass(slots=True)
class _Endpoint:
    component: str
    states: list[_State] = field(default_factory=list)


def _registration_history(events: Sequence[Mapping[str, Any]]) -> dict[str, _Endpoint]:
    """Each AOR's registration states and refreshes, in time order."""
    endpoints: dict[str, _Endpoint] = {}
    refreshes: dict[str, list[_State]] = defaultdict(list)
    live = LiveRegistrations()
    for event in events:
        aor = event.get("aor")
        if not isinstance(aor, str):
            continue
        kind = event.get("kind")
        expires = event.get("expires")
        expires = float(expires) if isinstance(expires, int | float) else None
        t = float(event["t"])
        if kind == Kind.REGISTRATION_REFRESHED:
            (endpoints[aor].states if aor in endpoints else refreshes[aor]).append(
                _State(t, None, (), expires)
            )
            continue
        hosts = live.apply(event)
        if hosts is None:
            continue
        endpoint = endpoints.setdefault(aor, _Endpoint(str(event.get("component"))))
        endpoint.states.extend(refreshes.pop(aor, ()))
        where = registrar_host(event.get("registrar")) if kind == Kind.REGISTRATION_FLOW else None
        endpoint.states.append(_State(t, event["state"], hosts, expires, where))
    return endpoints


@dataclass(frozen=True, slots=True)
class _Window:
    fault: str
    target: str
    option: str | None
    scenario: str | None
    started_at: float
    fault_at: float
    end_at: float | None
    restored_at: float | None

    def run(self, index: int, records: tuple[EndpointRecord, ...]) -> Run:
        rule = (
            "binding lost at fault" if self.fault in BINDING_LOST else "binding lives until expiry"
        )
        return Run(
            index,
            self.fault,
            self.target,
            self.option,
            self.scenario,
            self.started_at,
            self.fault_at,
            self.end_at,
            self.restored_at,
            rule,
            records,
        )


def is_restoration(event: Mapping[str, Any]) -> bool:
    fault = event.get("fault")
    return fault in RESTORATIONS or (fault == "maintenance" and event.get("on") is False)


def _faults(events: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [e for e in events if e.get("kind") == Kind.FAULT_APPLIED and not is_restoration(e)]


def _restored_at(
    events: Sequence[Mapping[str, Any]], target: str, after: float, before: float | None
) -> float | None:
    for e in events:
        t = float(e["t"])
        if before is not None and t >= before:
            return None
        if (
            t >= after
            and e.get("kind") == Kind.FAULT_APPLIED
            and e.get("target") == target
            and is_restoration(e)
        ):
            return t
    return None


def _windows(events: Sequence[Mapping[str, Any]], scenario: str | None) -> list[_Window]:
    markers = [e for e in events if e.get("kind") == Kind.SCENARIO_RUN]
    if scenario is not None:
        markers = [m for m in markers if m.get("scenario") == scenario]
    if markers or scenario is not None:
        return _marked_windows(events, markers)
    faults = _faults(events)
    windows = []
    for i, fault in enumerate(faults):
        t = float(fault["t"])
        end = float(faults[i + 1]["t"]) if i + 1 < len(faults) else None
        target = str(fault.get("target"))
        windows.append(
            _Window(
                str(fault.get("fault")),
                target,
                None,
                None,
                t,
                t,
                end,
                _restored_at(events, target, t, end),
            )
        )
    return windows


def _marked_windows(
    events: Sequence[Mapping[str, Any]], markers: list[Mapping[str, Any]]
) -> list[_Window]:
    starts: dict[tuple[str, str], Mapping[str, Any]] = {}
    ends: dict[tuple[str, str], float] = {}
    for marker in markers:
        key = (str(marker.get("scenario")), str(marker.get("run")))
        if marker.get("phase") == "start":
            starts.setdefault(key, marker)
        elif marker.get("phase") == "end":
            ends.setdefault(key, float(marker["t"]))
    ordered = sorted(starts.items(), key=lambda item: float(item[1]["t"]))
    faults = _faults(events)
    windows = []
    for i, (key, start) in enumerate(ordered):
        began = float(start["t"])
        following = float(ordered[i + 1][1]["t"]) if i + 1 < len(ordered) else None
        end = ends.get(key, following)
        target = start.get("target")
        fault = next(
            (
                f
                for f in faults
                if float(f["t"]) >= began
                and (end is None or float(f["t"]) <= end)
                and (target is None or f.get("target") == target)
            ),
            None,
        )
        fault_at = float(fault["t"]) if fault else began
        name = start.get("fault") or (fault.get("fault") if fault else None)
        target = target or (fault.get("target") if fault else None)
        windows.append(
            _Window(
                str(name),
                str(target),
                start.get("option"),
                start.get("scenario"),
                began,
                fault_at,
                end,
                _restored_at(events, str(target), fault_at, following),
            )
        )
    return windows


def _record(
    run: int,
    aor: str,
    endpoint: _Endpoint,
    window: _Window,
    target_host: str | None,
    peers: dict[str, str],
) -> EndpointRecord:
    before = [s for s in endpoint.states if s.t <= window.started_at]
    last = next((s for s in reversed(before) if s.state is not None), None)
    peer_of = {address: name for name, address in peers.items()}
    if last is None or not last.hosts:
        return EndpointRecord(run, aor, endpoint.component, affected=False)
    if target_host is None or target_host not in last.hosts:
        first = last.hosts[0]
        return EndpointRecord(run, aor, endpoint.component, False, peer_of.get(first, first))
    # The binding's life restarts at each refresh after the registration.
    bound = [s for s in before if s.t >= last.t and s.expires is not None] or [last]
    expiry_at = bound[-1].t + bound[-1].expires if bound[-1].expires is not None else None
    after = [
        s
        for s in endpoint.states
        if s.t > window.started_at and (window.end_at is None or s.t <= window.end_at)
    ]
    # Without Outbound any Failed is the endpoint's; with it, only its flow to the target's.
    failed = next(
        (s for s in after if s.state == "Failed" and s.where in (None, target_host)), None
    )
    # With Outbound On the endpoint may already be registered elsewhere when the fault comes.
    moved = next((s for s in [last, *after] if set(s.hosts) - {target_host}), None)
    elsewhere = next((h for h in moved.hosts if h != target_host), None) if moved else None
    since = lambda t: max(0.0, t - window.fault_at)  # noqa: E731
    recovery = since(moved.t) if moved else None
    expiry = None
    if window.fault in BINDING_LOST:
        gap = recovery
    else:
        # A binding of unknown lifetime is taken as lost at the fault: the gap is not understated.
        expiry = since(expiry_at) if expiry_at is not None else 0.0
        gap = max(0.0, recovery - expiry) if recovery is not None else None
    return EndpointRecord(
        run,
        aor,
        endpoint.component,
        True,
        window.target,
        detection=since(failed.t) if failed else None,
        recovery=recovery,
        gap=gap,
        recovered_to=peer_of.get(elsewhere, elsewhere) if elsewhere else None,
        expiry=expiry,
    )


# -- files ------------------------------------------------------------------------------


def write_outputs(
    report: Report, events: Sequence[Mapping[str, Any]], out_dir: Path | str
) -> dict[str, Path]:
    """Write ``report.json`` and ``timeline.png`` into ``out_dir`` (created if missing)."""
    from emulator.lab.timeline import draw_timeline

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"report": out / "report.json", "timeline": out / "timeline.png"}
    paths["report"].write_text(report.to_json() + "\n", encoding="utf-8")
    draw_timeline(events, report, paths["timeline"])
    return paths
