"""The failover picture: who was registered where, when, and what the peers were doing.

Up to :data:`LANE_LIMIT` endpoints it draws one lane per peer (its state over time) and one per
endpoint (a bar per registration, coloured by peer, with a cross at each ``Failed``), faults as
labelled vertical lines. Past that, lanes would be unreadable, so it draws the distribution
instead: the ECDF of recovery times per run, and the registered endpoints per peer over time.

The intervals are pure functions of the events (tested without drawing); matplotlib is imported
only inside :func:`draw_timeline`, so importing this module (and ``siplab --help``) stays fast.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emulator.kinds import Kind
from emulator.lab.report import LiveRegistrations, Report, peer_addresses

if TYPE_CHECKING:
    from matplotlib.axes import Axes

LANE_LIMIT = 200
# Fault labels closer than this share of the time axis go on separate levels, this many points
# apart, at most this many levels.
LABEL_GAP = 0.08
LABEL_STEP = 10
LABEL_LEVELS = 3
TITLE_PAD = 8 + LABEL_STEP * LABEL_LEVELS  # points: the title clears the highest label
PEER_STATE_COLOURS = {
    "up": "#66bb6a",
    "starting": "#b0bec5",
    "maintenance": "#ffa726",
    "paused": "#ab47bc",
    "partitioned": "#8d6e63",
    "impaired": "#fdd835",
    "down": "#e53935",
}
# What a fault.applied (or restoration) aimed at a peer does to its lane.
_FAULT_STATE = {
    "kill": "down",
    "stop": "down",
    "pause": "paused",
    "resume": "up",
    "partition": "partitioned",
    "impair": "impaired",
    "heal": "up",
}


@dataclass(frozen=True, slots=True)
class Bar:
    start: float
    end: float
    label: str  # the peer (registration bars) or the state (peer bars)


@dataclass(slots=True)
class Timeline:
    """Everything the picture shows, as absolute times."""

    start: float
    end: float
    peers: dict[str, list[Bar]]  # peer -> its states
    registrations: dict[str, list[Bar]]  # aor -> the peers it was registered to
    failures: dict[str, list[float]]  # aor -> times of Failed
    faults: list[tuple[float, str, bool]]  # (t, "kill exp1", is_restoration)


def build_timeline(events: Sequence[Mapping[str, Any]]) -> Timeline:
    ordered = sorted(events, key=lambda e: float(e["t"]))
    start = float(ordered[0]["t"]) if ordered else 0.0
    end = float(ordered[-1]["t"]) if ordered else 0.0
    addresses = peer_addresses(ordered)
    peer_of = {address: name for name, address in addresses.items()}
    peer_lanes = _Lanes(end)
    reg_lanes = _Lanes(end)
    failures: dict[str, list[float]] = defaultdict(list)
    faults: list[tuple[float, str, bool]] = []
    aors_of: dict[str, set[str]] = defaultdict(set)
    live = LiveRegistrations()
    for event in ordered:
        t, component, kind = float(event["t"]), str(event.get("component")), event.get("kind")
        if kind == Kind.FAULT_APPLIED:
            faults.append((t, *_fault_label(event)))
            target = str(event.get("target"))
            state = _fault_state(event)
            if target in addresses and state is not None:
                peer_lanes.set(target, t, state)
        elif component in addresses:
            state = _peer_event_state(event)
            if state is not None:
                peer_lanes.set(component, t, state)
        hosts = live.apply(event)
        if hosts is not None:
            aor = event["aor"]
            aors_of[component].add(aor)
            # With Outbound On the bar shows the first flow still registered.
            reg_lanes.set(aor, t, peer_of.get(hosts[0], hosts[0]) if hosts else None)
            if event.get("state") == "Failed":
                failures[aor].append(t)
        elif kind == Kind.PROCESS_EXITED:
            for aor in aors_of.get(component, ()):
                reg_lanes.set(aor, t, None)
    return Timeline(
        start,
        end,
        {name: peer_lanes.bars(name) for name in sorted(addresses)},
        {aor: reg_lanes.bars(aor) for aor in sorted(reg_lanes.keys())},
        dict(failures),
        faults,
    )


class _Lanes:
    """Per-key state intervals: each ``set`` closes the open interval and opens the next."""

    def __init__(self, end: float) -> None:
        self._end = end
        self._open: dict[str, tuple[float, str | None]] = {}
        self._bars: dict[str, list[Bar]] = defaultdict(list)

    def set(self, key: str, t: float, label: str | None) -> None:
        opened = self._open.get(key)
        if opened is not None and opened[1] == label:
            return
        if opened is not None and opened[1] is not None:
            self._bars[key].append(Bar(opened[0], t, opened[1]))
        self._open[key] = (t, label)

    def keys(self) -> set[str]:
        return set(self._open)

    def bars(self, key: str) -> list[Bar]:
        opened = self._open.get(key)
        tail = [Bar(opened[0], self._end, opened[1])] if opened and opened[1] else []
        return self._bars.get(key, []) + tail


def _fault_label(event: Mapping[str, Any]) -> tuple[str, bool]:
    fault, target = event.get("fault"), event.get("target")
    if fault == "maintenance":
        on = event.get("on") is not False
        return f"maintenance {'on' if on else 'off'} {target}", not on
    return f"{fault} {target}", fault in ("start", "resume", "heal")


def _fault_state(event: Mapping[str, Any]) -> str | None:
    if event.get("fault") == "maintenance":
        return "maintenance" if event.get("on") is not False else "up"
    return _FAULT_STATE.get(str(event.get("fault")))


def _peer_event_state(event: Mapping[str, Any]) -> str | None:
    match event.get("kind"):
        case Kind.PROCESS_STARTED:
            return "starting"
        case Kind.READY:
            return "maintenance" if event.get("maintenance") else "up"
        case Kind.MAINTENANCE:
            return "maintenance" if event.get("on") else "up"
        case Kind.PROCESS_EXITED:
            return "down"
        case Kind.PROCESS_PAUSED:
            return "paused"
        case Kind.PROCESS_RESUMED:
            return "up"
    return None


# -- drawing ----------------------------------------------------------------------------


def draw_timeline(events: Sequence[Mapping[str, Any]], report: Report, path: Path | str) -> Path:
    """Draw the picture of these events into a PNG at ``path``."""
    from matplotlib.figure import Figure

    timeline = build_timeline(events)
    origin = report.runs[0].fault_at if report.runs else timeline.start
    colours = _peer_colours(timeline)
    if len(timeline.registrations) > LANE_LIMIT:
        figure = _draw_distribution(Figure, timeline, report, origin, colours)
    else:
        figure = _draw_lanes(Figure, timeline, origin, colours)
    path = Path(path)
    figure.savefig(path, format="png", dpi=100)
    return path


def _peer_colours(timeline: Timeline) -> dict[str, str]:
    palette = ["#1f77b4", "#9467bd", "#17becf", "#e377c2", "#bcbd22", "#7f7f7f", "#2ca02c"]
    seen = list(timeline.peers)
    seen += sorted({b.label for bars in timeline.registrations.values() for b in bars} - set(seen))
    return {name: palette[i % len(palette)] for i, name in enumerate(seen)}


def _title(timeline: Timeline, what: str) -> str:
    faults = [label for _, label, restoring in timeline.faults if not restoring]
    shown = ", ".join(faults[:4]) + (f" (+{len(faults) - 4} more)" if len(faults) > 4 else "")
    return f"{what}: {shown or 'no fault'}"


def _draw_faults(ax: Axes, timeline: Timeline, origin: float, *, labels: bool) -> None:
    levels = _label_levels([t for t, _, _ in timeline.faults], timeline.end - timeline.start)
    for (t, label, restoring), level in zip(timeline.faults, levels, strict=True):
        x = t - origin
        style = {"color": "#757575", "ls": ":"} if restoring else {"color": "#c62828", "ls": "--"}
        ax.axvline(x, lw=1.2, zorder=3, **style)
        if labels:
            ax.annotate(
                label,
                (x, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(2, 2 + LABEL_STEP * level),
                textcoords="offset points",
                fontsize=8,
                color=style["color"],
                va="bottom",
                ha="left",
            )


def _label_levels(times: list[float], span: float) -> list[int]:
    """How high each fault's label goes: a label too close to one already on a level moves up
    a level (a fault and its restoration a moment later would print over each other)."""
    gap = LABEL_GAP * span
    last_on: list[float] = []  # the time of the last label on each level
    levels = []
    for t in times:
        level = next((i for i, last in enumerate(last_on) if t - last >= gap), len(last_on))
        if level == len(last_on):
            if level >= LABEL_LEVELS:
                level = min(range(LABEL_LEVELS), key=lambda i: last_on[i])
            else:
                last_on.append(t)
        last_on[level] = t
        levels.append(level)
    return levels


def _draw_lanes(
    figure_type: Any, timeline: Timeline, origin: float, colours: dict[str, str]
) -> Any:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    lanes = [(f"peer {name}", bars, True) for name, bars in timeline.peers.items()]
    lanes += [(aor, bars, False) for aor, bars in timeline.registrations.items()]
    height = min(3.2 + 0.32 * len(lanes), 40.0)
    figure = figure_type(figsize=(13, height), layout="constrained")
    ax = figure.add_subplot()
    for row, (_, bars, is_peer) in enumerate(lanes):
        y = len(lanes) - 1 - row
        palette = PEER_STATE_COLOURS if is_peer else colours
        ax.broken_barh(
            [(b.start - origin, b.end - b.start) for b in bars],
            (y - 0.35, 0.7),
            facecolors=[palette.get(b.label, "#9e9e9e") for b in bars],
            edgecolor="white",
            linewidth=0.5,
        )
    index = {aor: len(lanes) - 1 - row for row, (aor, _, _) in enumerate(lanes)}
    marks = [(t - origin, index[aor]) for aor, ts in timeline.failures.items() for t in ts]
    if marks:
        xs, ys = zip(*marks, strict=True)
        ax.scatter(xs, ys, marker="x", color="black", s=28, linewidths=1.2, zorder=4)
    if timeline.peers and timeline.registrations:
        ax.axhline(len(lanes) - len(timeline.peers) - 0.5, color="#9e9e9e", lw=0.8)
    ax.set_yticks(range(len(lanes)), [name for name, _, _ in reversed(lanes)], fontsize=8)
    ax.set_ylim(-0.7, len(lanes) - 0.3)
    ax.set_xlim(timeline.start - origin, timeline.end - origin)
    ax.grid(axis="x", color="#e0e0e0", lw=0.6)
    ax.set_axisbelow(True)
    _draw_faults(ax, timeline, origin, labels=True)
    ax.set_xlabel("seconds since the first fault")
    ax.set_title(_title(timeline, "Registrations and peers"), pad=TITLE_PAD)
    states_used = {b.label for bars in timeline.peers.values() for b in bars}
    handles = [
        Patch(color=colours[peer], label=f"registered to {peer}")
        for peer in colours
        if any(b.label == peer for bars in timeline.registrations.values() for b in bars)
    ]
    handles += [
        Patch(color=c, label=f"peer {s}") for s, c in PEER_STATE_COLOURS.items() if s in states_used
    ]
    kinds = {restoring for _, _, restoring in timeline.faults}
    handles += [Line2D([], [], marker="x", color="black", ls="", label="Failed")]
    handles += [Line2D([], [], color="#c62828", ls="--", label="fault")] if False in kinds else []
    handles += (
        [Line2D([], [], color="#757575", ls=":", label="restoration")] if True in kinds else []
    )
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return figure


def _draw_distribution(
    figure_type: Any, timeline: Timeline, report: Report, origin: float, colours: dict[str, str]
) -> Any:
    figure = figure_type(figsize=(13, 10), layout="constrained")
    ecdf, area, states = figure.subplots(
        3, 1, gridspec_kw={"height_ratios": [4, 4, 0.4 + 0.35 * len(timeline.peers)]}
    )
    for run in report.runs:
        affected = run.affected
        times = sorted(r.recovery for r in affected if r.recovery is not None)
        if not affected:
            continue
        lost = len(affected) - len(times)
        xs = [0.0, *times]
        ys = [i / len(affected) for i in range(len(xs))]
        label = f"run {run.index}: {run.fault} {run.target}" + (f", {lost} lost" if lost else "")
        ecdf.step(xs, ys, where="post", lw=1.4, label=label if len(report.runs) <= 12 else None)
    ecdf.set_ylim(0, 1.02)
    ecdf.set_xlabel("seconds after the fault")
    ecdf.set_ylabel("affected endpoints re-registered (fraction)")
    ecdf.set_title(f"Recovery time per run ({len(timeline.registrations)} endpoints)")
    ecdf.grid(color="#e0e0e0", lw=0.6)
    if report.runs and len(report.runs) <= 12:
        ecdf.legend(fontsize=8, loc="lower right")

    xs, stacks = _registered_counts(timeline, origin)
    lower = [0] * len(xs)
    for peer, counts in stacks.items():
        upper = [a + b for a, b in zip(lower, counts, strict=True)]
        area.fill_between(
            xs, lower, upper, step="post", color=colours.get(peer, "#9e9e9e"), label=peer, lw=0
        )
        lower = upper
    area.set_xlim(timeline.start - origin, timeline.end - origin)
    area.set_ylabel("registered endpoints")
    area.set_title(_title(timeline, "Registered endpoints per peer"), pad=TITLE_PAD)
    area.grid(color="#e0e0e0", lw=0.6)
    _draw_faults(area, timeline, origin, labels=True)
    area.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="registered to")

    names = list(timeline.peers)
    for row, name in enumerate(names):
        bars = timeline.peers[name]
        states.broken_barh(
            [(b.start - origin, b.end - b.start) for b in bars],
            (len(names) - 1 - row - 0.35, 0.7),
            facecolors=[PEER_STATE_COLOURS.get(b.label, "#9e9e9e") for b in bars],
        )
    states.set_yticks(range(len(names)), [f"peer {n}" for n in reversed(names)], fontsize=8)
    states.set_xlim(area.get_xlim())
    states.set_xlabel("seconds since the first fault")
    _draw_faults(states, timeline, origin, labels=False)
    from matplotlib.patches import Patch

    used = {b.label for bars in timeline.peers.values() for b in bars}
    states.legend(
        handles=[Patch(color=c, label=s) for s, c in PEER_STATE_COLOURS.items() if s in used],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        title="peer state",
    )
    return figure


def _registered_counts(
    timeline: Timeline, origin: float
) -> tuple[list[float], dict[str, list[int]]]:
    """Step series: at each change time, how many endpoints each peer holds."""
    changes: dict[str, dict[float, int]] = defaultdict(lambda: defaultdict(int))
    for bars in timeline.registrations.values():
        for bar in bars:
            changes[bar.label][bar.start - origin] += 1
            changes[bar.label][bar.end - origin] -= 1
    xs = sorted({x for per_peer in changes.values() for x in per_peer})
    stacks: dict[str, list[int]] = {}
    for peer in sorted(changes):
        running, series = 0, []
        for x in xs:
            running += changes[peer].get(x, 0)
            series.append(running)
        stacks[peer] = series
    return xs, stacks
