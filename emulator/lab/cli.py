"""``siplab``: run a lab, look at it, and break it.

A thin layer over :class:`emulator.lab.sync.SyncLab`: every command that acts on a running
lab is one call of the ``Lab`` API, found through the lab's state file, so no addresses are
typed. click gives the command tree, ``--help`` on every command and one-line usage errors.
Only click and the standard library load at start; the lab model (pydantic, PyYAML), the
supervisor (asyncio, aiohttp) and the report (matplotlib) are imported by the commands that
use them, so ``siplab kill exp1`` acts within a few tens of milliseconds.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from emulator.lab.client import ControlError
from emulator.lab.state import LabNotFound, find_lab, recorded_events, running_labs
from emulator.lab.sync import SyncLab

if TYPE_CHECKING:
    from emulator.lab.model import LabConfig

T = TypeVar("T")
DEFAULT_SETTLE_TIMEOUT = 30.0
# 'up --detach': the lab runs, but some endpoint is Failed or still Registering (1 = no lab).
EXIT_NOT_ALL_REGISTERED = 3
lab_option = click.option(
    "--lab",
    "lab_name",
    metavar="NAME",
    envvar="SIPLAB_LAB",
    help="Which running lab (needed only when several run; or set SIPLAB_LAB).",
)
component_arg = click.argument("component", metavar="COMPONENT")


def _fail(message: str) -> NoReturn:
    raise click.ClickException(message)


def _load(lab_file: Path | None) -> LabConfig:
    from emulator.lab.model import default_lab, load_lab
    from emulator.validation import ConfigError

    try:
        return load_lab(lab_file) if lab_file is not None else default_lab()
    except ConfigError as exc:
        _fail(str(exc))


def _lab(lab_name: str | None) -> SyncLab:
    try:
        return SyncLab.attach(lab_name)
    except LabNotFound as exc:
        _fail(str(exc))


def _call(action: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return action(*args, **kwargs)
    except ControlError as exc:
        _fail(str(exc))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="siplab")
def cli() -> None:
    """Rehearse SIP registration failover on real loopback sockets.

    A lab is a DNS server, registrar peers and endpoints, each its own process. Start the
    seed's lab with 'siplab up', then from another terminal: 'siplab status',
    'siplab maintenance exp1 on', 'siplab kill exp1', 'siplab pause exp2',
    'siplab start exp1', 'siplab down'. 'siplab scenario failover' measures failovers.
    """


# -- up / down -------------------------------------------------------------------------


@cli.command()
@click.argument("lab_file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--detach", "-d", is_flag=True, help="Run in the background; return once settled.")
@click.option(
    "--timeout",
    default=DEFAULT_SETTLE_TIMEOUT,
    show_default=True,
    help="Seconds to wait for every endpoint to reach Registered or Failed.",
)
@click.option("--verbose", "-v", is_flag=True, help="Also print DNS queries and connection events.")
def up(lab_file: Path | None, detach: bool, timeout: float, verbose: bool) -> None:
    """Start a lab: the seed's default, or the one LAB_FILE (YAML) describes.

    In the foreground it prints the lab's events until Ctrl-C, which stops every process
    it started. With --detach it prints the lab's name and returns once every endpoint is
    Registered or Failed: exit status 0 when all are Registered, 3 when the lab runs but some
    endpoint is not registered, 1 when the lab could not start. 'siplab down NAME' stops it.
    """
    lab = _load(lab_file)
    if detach:
        sys.exit(_up_detached(lab, timeout))
    from emulator.lab.state import read_handle

    existing = read_handle(lab.name)
    if existing is not None:
        _fail(f"lab {lab.name!r} is already running (pid {existing.pid}); 'siplab down {lab.name}'")
    from emulator.lab.render import human_lines
    from emulator.lab.runner import run_lab
    from emulator.runtime import run_loop

    def echo(event: Any) -> None:
        for line in human_lines(event.to_dict(), verbose=verbose):
            click.echo(line)

    sys.exit(run_loop(run_lab(lab, settle_timeout=timeout, on_event=echo, say=click.echo)))


def _up_detached(lab: LabConfig, timeout: float) -> int:
    from emulator.lab.launch import LaunchError, launch
    from emulator.lab.runner import settled_summary
    from emulator.lab.state import run_dir

    components = ", ".join(lab.component_names())
    log = run_dir(lab.name) / "supervisor.log"
    click.echo(f"starting lab {lab.name!r} ({components}); log: {log}", err=True)
    try:
        handle = launch(lab, timeout=timeout)
    except LaunchError as exc:
        _fail(str(exc))
    running = SyncLab(handle)
    try:
        running.wait_settled(timeout)
        status = running.status()
    except ControlError as exc:
        running.down()  # a lab we cannot report on is a lab nobody would stop
        _fail(f"the lab started but did not answer ({exc}); it was stopped")
    for line in settled_summary(status):
        click.echo(line)
    click.echo(f"lab {lab.name!r} is running (pid {handle.pid}); 'siplab down {lab.name}' stops it")
    if not status["settled"]:
        click.echo(f"not every endpoint settled within {timeout:g} s", err=True)
    registered = all(e["state"] == "Registered" for e in status["endpoints"])
    return 0 if registered else EXIT_NOT_ALL_REGISTERED


@cli.command()
@click.argument("name", required=False)
@lab_option
@click.option("--all", "everything", is_flag=True, help="Stop every running lab.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for the stop.")
def down(name: str | None, lab_name: str | None, everything: bool, timeout: float) -> None:
    """Stop a running lab (NAME, --lab NAME, or the only one) and every process it started."""
    if everything:
        labs = [SyncLab(handle) for handle in running_labs()]
        if not labs:
            click.echo("no lab is running")
    else:
        labs = [_lab(name or lab_name)]
    for lab in labs:
        _call(lab.down, timeout)
        click.echo(f"lab {lab.name!r} stopped")


# -- looking -------------------------------------------------------------------------


@cli.command()
@lab_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(lab_name: str | None, as_json: bool) -> None:
    """Show the DNS server, the peers (state, registrations) and the endpoints.

    A peer's state is what matters first: active, maintenance, paused (frozen by SIGSTOP),
    unresponsive (not answering the lab within a second), partitioned, stopped, external.
    """
    lab = _lab(lab_name)
    data = _call(lab.status)
    ca = lab.run_dir / "ca.pem"
    data["ca"] = str(ca) if ca.is_file() else None
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    dns = data["dns"]
    metrics = f"   metrics {dns['metrics']}" if dns.get("metrics") else ""
    click.echo(f"lab {data['lab']}   dns {dns['address']} ({_state(dns)}){metrics}")
    if data["ca"]:
        click.echo(f"ca  {data['ca']}   (verify the peers' TLS with it)")
    click.echo()
    click.echo(
        _table(
            ["PEER", "ADDRESS", "STATE", "REGISTRATIONS"],
            [[p["name"], p["address"], _state(p), str(p["registrations"])] for p in data["peers"]],
        )
    )
    for double in data.get("doubles", []):
        click.echo(f"double registration: {double['aor']} on {', '.join(double['peers'])}")
    click.echo()
    endpoints = data["endpoints"]
    if len(endpoints) > STATUS_ENDPOINT_ROWS:
        click.echo(_endpoint_summary(data))
        return
    click.echo(_endpoint_table(endpoints))


# Past this many endpoints 'siplab status' shows counts; 'siplab endpoints' lists them.
STATUS_ENDPOINT_ROWS = 20


def _endpoint_table(endpoints: list[dict[str, Any]]) -> str:
    return _table(
        ["ENDPOINT", "STATE", "REGISTRAR", "TRANSPORT", "REASON"],
        [
            [e["uri"], e["state"], e["registrar"] or "-", e["transport"] or "-", e["reason"]]
            for e in endpoints
        ],
    )


def _peer_names(data: dict[str, Any]) -> dict[str, str]:
    """Registrar address (host) -> peer name."""
    return {p["address"]: p["name"] for p in data["peers"]}


def _registrar_label(registrar: str, peers: dict[str, str]) -> str:
    host = registrar.rpartition(":")[0].strip("[]") or registrar
    return f"{peers[host]} ({registrar})" if host in peers else registrar


def _endpoint_summary(data: dict[str, Any]) -> str:
    counts = data.get("endpoint_counts") or {}
    hosts = len({e.get("host") for e in data["endpoints"]})
    lines = [f"{len(data['endpoints'])} endpoints in {hosts} host process(es)"]
    lines.append(
        _table(
            ["STATE", "ENDPOINTS"],
            [[state, str(n)] for state, n in sorted((counts.get("by_state") or {}).items())],
        )
    )
    by_registrar = counts.get("by_registrar") or {}
    if by_registrar:
        peers = _peer_names(data)
        lines.append("")
        lines.append(
            _table(
                ["REGISTRAR", "ENDPOINTS"],
                [[_registrar_label(r, peers), str(n)] for r, n in sorted(by_registrar.items())],
            )
        )
    lines.append("")
    lines.append("'siplab endpoints [--state STATE] [--registrar PEER]' lists them")
    return "\n".join(lines)


@cli.command()
@lab_option
@click.option("--state", help="Only endpoints in this state (Registered, Failed, ...).")
@click.option("--registrar", metavar="PEER", help="Only those registered with this peer (or IP).")
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON.")
def endpoints(
    lab_name: str | None, state: str | None, registrar: str | None, as_json: bool
) -> None:
    """List the endpoints: AOR, state, registrar, transport, reason."""
    data = _call(_lab(lab_name).status)
    peers = {p["name"]: p["address"] for p in data["peers"]}
    if registrar is not None and registrar not in peers and registrar not in peers.values():
        _fail(f"{registrar!r} is not a peer; peers are: {', '.join(peers)}")
    host = peers.get(registrar or "", registrar)
    chosen = [
        e
        for e in data["endpoints"]
        if (state is None or e["state"].lower() == state.lower())
        and (host is None or (e["registrar"] or "").rpartition(":")[0].strip("[]") == host)
    ]
    if as_json:
        click.echo(json.dumps(chosen, indent=2))
        return
    if chosen:
        click.echo(_endpoint_table(chosen))
    click.echo(f"{len(chosen)} of {len(data['endpoints'])} endpoints", err=True)


@cli.command("endpoint")
@click.argument("aor")
@click.argument("action", type=click.Choice(["show", "set"]))
@click.argument("settings", nargs=-1, metavar="[KEY=VALUE]...")
@lab_option
def endpoint_command(
    aor: str, action: str, settings: tuple[str, ...], lab_name: str | None
) -> None:
    """Show one endpoint, or change its RoomOS settings while it runs.

    'set' takes KEY=VALUE pairs — proxy, proxy2..proxy4, transport, outbound, keepalive,
    keepalive_interval, pong_timeout, tls_verify, ca_file, username, password — and restarts
    the endpoint's locator, as the seed's log shows ("Need to resolve ... (restarted locator)"):

        siplab endpoint 1001@uctest.local set proxy=habibexpc-cluster.uctest.local
    """
    lab = _lab(lab_name)
    found = next(
        (e for e in _call(lab.status)["endpoints"] if aor.removeprefix("sip:") == e["uri"]), None
    )
    if found is None:
        _fail(f"no endpoint {aor!r} in this lab; 'siplab endpoints' lists them")
    if action == "show":
        click.echo(json.dumps(_call(lab.op, found["host"], "status", aor=found["uri"]), indent=2))
        return
    changes: dict[str, str] = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"{item!r}: settings are KEY=VALUE, e.g. transport=udp")
        changes[key] = value
    if not changes:
        raise click.UsageError("set needs at least one KEY=VALUE")
    result = _call(lab.op, found["host"], "set", aor=found["uri"], **changes)
    click.echo(f"{found['uri']}: {', '.join(sorted(changes))} set; {result['state']}")


def _state(component: dict[str, Any]) -> str:
    extra = ", ".join(component.get("conditions") or [])
    return f"{component['state']} ({extra})" if extra else str(component["state"])


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


@cli.command()
@click.argument("peer")
@lab_option
@click.option("--json", "as_json", is_flag=True, help="Print the bindings as JSON.")
def bindings(peer: str, lab_name: str | None, as_json: bool) -> None:
    """Show a registrar peer's bindings: AOR, contact, seconds left, the flow it came on
    (RFC 5626 outbound bindings also show their reg-id; they end when their flow closes)."""
    lab = _lab(lab_name)
    peers = [p["name"] for p in _call(lab.status)["peers"]]
    if peer not in peers:
        _fail(f"{peer!r} is not a registrar peer; peers are: {', '.join(peers)}")
    result = _call(lab.bindings, peer)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    mode = "maintenance" if result.get("maintenance") else "active"
    click.echo(f"{peer}: {mode}, {result.get('registrations', 0)} registration(s)")
    if result.get("bindings"):
        click.echo()
        click.echo(
            _table(
                ["AOR", "CONTACT", "EXPIRES", "FLOW", "REG-ID"],
                [
                    [
                        b["aor"],
                        b["contact"],
                        str(b["expires"]),
                        b.get("flow") or b["source"],
                        str(b.get("reg_id") or "-"),
                    ]
                    for b in result["bindings"]
                ],
            )
        )
    cluster = result.get("cluster") or {}
    if cluster:
        others = [b for b in cluster.get("bindings", []) if b["peer"] != peer and b.get("live")]
        up = ", ".join(cluster.get("peers_up", [])) or "none"
        click.echo()
        click.echo(f"cluster: linked to {up}; {len(others)} binding(s) on other peers")
        for double in cluster.get("doubles", []):
            click.echo(f"double registration: {double['aor']} on {', '.join(double['peers'])}")


@cli.command()
@lab_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option("--since", default=0, show_default=True, help="Start at this event number.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["human", "json", "roomos"]),
    default="human",
    show_default=True,
    help="human lines, raw JSON lines, or the endpoints' RoomOS log lines only.",
)
@click.option("--verbose", "-v", is_flag=True, help="human: include DNS queries and connections.")
@click.option("--aor", metavar="AOR", help="Only this endpoint's events, e.g. 1001@uctest.local.")
def events(
    lab_name: str | None, follow: bool, since: int, fmt: str, verbose: bool, aor: str | None
) -> None:
    """Print a lab's events (every component's, in arrival order).

    For a lab that is no longer running, the events it recorded are read from its state
    directory (the newest lab's, or --lab NAME's). '--aor 1001@uctest.local --format roomos'
    is one endpoint's RoomOS log, even out of a host of thousands.
    """
    from emulator.lab.render import Renderer

    renderer = Renderer(fmt, verbose=verbose, aor=aor)
    try:
        source = _event_source(lab_name, since, follow, renderer)
        for event in source:
            for line in renderer.lines(event):
                click.echo(line)
    except ControlError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        pass


def _event_source(
    lab_name: str | None, since: int, follow: bool, renderer: Any
) -> Iterator[dict[str, Any]]:
    try:
        lab = SyncLab(find_lab(lab_name))
    except LabNotFound as exc:
        try:
            path = recorded_events(lab_name)
        except LabNotFound:
            _fail(str(exc))
        click.echo(f"(lab {path.parent.name!r} is not running: its recorded events)", err=True)
        return _recorded(path, since, renderer)
    if since > 0:
        renderer.learn_pids(lab.status())  # the window may not hold the process.started events
    return lab.client.stream_events(since=since, follow=follow)


def _recorded(path: Path, since: int, renderer: Any) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for seq, line in enumerate(lines):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if seq < since:
                renderer.remember(event)  # pids from before the window
                continue
            yield {"seq": seq, **event}


@cli.command()
@click.argument("lab_file", required=False, type=click.Path(path_type=Path, dir_okay=False))
def certs(lab_file: Path | None) -> None:
    """Make the lab's certificate authority (if it has none yet) and a certificate per peer.

    The CA lives in the lab's state directory for the lab's whole life: clients verify every
    peer with its ca.pem (e.g. openssl s_client -CAfile ca.pem -verify_return_error). A lab
    does this itself at start; this command makes the files before it, or again after a change
    of peers. A running peer keeps the certificate it loaded until it restarts.
    """
    from emulator.lab.certs import ca_path, lab_certificates
    from emulator.lab.state import run_dir

    lab = _load(lab_file)
    directory = run_dir(lab.name)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        issued = lab_certificates(lab, directory)
    except (OSError, ValueError) as exc:
        _fail(f"cannot make the lab's certificates in {directory}: {exc}")
    click.echo(f"ca: {ca_path(directory)}")
    peers = {p.name for p in lab.peers}
    for name, cert in issued.items():
        if name in peers:
            dns_names, addresses = lab.peer_tls_names(name)
            click.echo(f"{name}: {cert.cert} ({', '.join([*dns_names, *addresses])})")
        else:
            click.echo(f"{name}: {cert.cert} (client)")


@cli.command()
def labs() -> None:
    """List the labs running on this machine."""
    handles = running_labs()
    if not handles:
        click.echo("no lab is running")
        return
    rows = [
        [
            h.name,
            "remote" if h.remote else str(h.pid),
            h.control,
            time.strftime("%H:%M:%S", time.localtime(h.started)),
        ]
        for h in handles
    ]
    click.echo(_table(["LAB", "PID", "CONTROL", "STARTED"], rows))


@cli.command()
@click.argument("lab_file", required=False, type=click.Path(path_type=Path, dir_okay=False))
def check(lab_file: Path | None) -> None:
    """Validate LAB_FILE and print the lab it describes, with every default filled in."""
    click.echo(_load(lab_file).to_yaml(), nl=False)


@cli.command()
@click.argument("lab_file", required=False, type=click.Path(path_type=Path, dir_okay=False))
def compose(lab_file: Path | None) -> None:
    """Print LAB_FILE's lab (default: the seed's) as a Docker Compose file.

    siplab compose [LAB.yaml] > compose.yaml; then 'docker compose up -d', and 'siplab status'
    and every fault command work against the containers (README: "Lab in containers").
    """
    from emulator.lab.compose import compose_file
    from emulator.validation import ConfigError

    lab = _load(lab_file)
    try:
        click.echo(compose_file(lab, str(lab_file) if lab_file else "the seed's lab"), nl=False)
    except ConfigError as exc:
        _fail(str(exc))


@cli.command()
def example() -> None:
    """Print the seed's default lab as a lab file to start from."""
    from emulator.lab.model import default_lab

    click.echo(default_lab().to_yaml(), nl=False)


# -- breaking --------------------------------------------------------------------------


def _done(result: dict[str, Any]) -> str:
    pid = f" (pid {result['pid']})" if result.get("pid") else ""
    return f"{result['target']}: {result['fault']}{pid}"


def _simple_fault(name: str, doc: str) -> None:
    @cli.command(name=name, help=doc)
    @component_arg
    @lab_option
    def command(component: str, lab_name: str | None) -> None:
        lab = _lab(lab_name)
        click.echo(_done(_call(getattr(lab, name), component)))


for _name, _doc in [
    ("kill", "SIGKILL COMPONENT's process: the kernel resets its connections at once."),
    ("stop", "Stop COMPONENT gracefully: it closes its connections and listeners itself."),
    ("start", "Start COMPONENT again after a kill or stop."),
    ("restart", "Stop COMPONENT gracefully, then start it again."),
    ("pause", "Freeze COMPONENT (SIGSTOP): sockets stay open but nothing answers."),
    ("resume", "Thaw a paused COMPONENT (SIGCONT)."),
    ("heal", "Lift a partition or impairment of COMPONENT's traffic."),
]:
    _simple_fault(_name, _doc)


@cli.command()
@click.argument("peer")
@click.argument("mode", type=click.Choice(["on", "off"]))
@lab_option
def maintenance(peer: str, mode: str, lab_name: str | None) -> None:
    """Put PEER in or out of maintenance: every REGISTER then gets 503 + Warning 382."""
    _call(_lab(lab_name).maintenance, peer, mode == "on")
    click.echo(f"{peer}: maintenance {mode}")


scope_options = [
    click.option(
        "--endpoint",
        "endpoints",
        multiple=True,
        metavar="NAME",
        help="Only traffic with this endpoint (its name or URI; repeatable).",
    ),
    click.option(
        "--remote", "remotes", multiple=True, metavar="IP", help="Only traffic with this address."
    ),
    click.option(
        "--transport",
        "transports",
        multiple=True,
        type=click.Choice(["udp", "tcp", "tls"]),
        help="Only this transport (repeatable).",
    ),
]


def _scoped(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(scope_options):
        command = option(command)
    return command


@cli.command()
@component_arg
@_scoped
@lab_option
def partition(
    component: str,
    endpoints: tuple[str, ...],
    remotes: tuple[str, ...],
    transports: tuple[str, ...],
    lab_name: str | None,
) -> None:
    """Cut COMPONENT (a peer or dns) off: silence both ways while its sockets stay open.

    Done inside the component (this kernel has no netem): what it receives is not read and
    what it would send is not sent, so a client notices only by its timers or keep-alives.
    'siplab heal COMPONENT' restores it.
    """
    result = _call(
        _lab(lab_name).partition,
        component,
        endpoints=endpoints or None,
        remotes=remotes or None,
        transports=transports or None,
    )
    click.echo(_done(result))


@cli.command()
@component_arg
@click.option("--delay", type=float, default=0.0, help="Seconds added to each message.")
@click.option("--jitter", type=float, default=0.0, help="± seconds, uniformly, on the delay.")
@click.option("--loss", type=float, default=0.0, help="Share of messages lost, 0 to 1.")
@click.option(
    "--direction",
    type=click.Choice(["in", "out", "both"]),
    default="both",
    show_default=True,
    help="in: what COMPONENT receives; out: what it sends.",
)
@click.option("--seed", type=int, help="Seed for loss and jitter, for repeatable runs.")
@_scoped
@lab_option
def impair(
    component: str,
    delay: float,
    jitter: float,
    loss: float,
    direction: str,
    seed: int | None,
    endpoints: tuple[str, ...],
    remotes: tuple[str, ...],
    transports: tuple[str, ...],
    lab_name: str | None,
) -> None:
    """Delay, jitter and lose COMPONENT's SIP or DNS traffic (in-process; 'heal' lifts it)."""
    result = _call(
        _lab(lab_name).impair,
        component,
        delay=delay,
        jitter=jitter,
        loss=loss,
        direction=direction,
        seed=seed,
        endpoints=endpoints or None,
        remotes=remotes or None,
        transports=transports or None,
    )
    click.echo(_done(result))


# -- experiments ----------------------------------------------------------------------


@cli.group()
def scenario() -> None:
    """Scripted experiments that measure failovers, run after run."""


@scenario.command("failover")
@click.option(
    "--option",
    type=click.Choice(["srv", "rr", "static", "outbound"]),
    default="srv",
    show_default=True,
    help="How endpoints find peers: srv (RFC 3263 SRV), rr (round-robin A), static (the "
    "peers as Proxy 1..4, Outbound Off: no failover), outbound (the same, Outbound On).",
)
@click.option(
    "--fault",
    type=click.Choice(["kill", "stop", "pause", "partition", "impair", "maintenance"]),
    default="kill",
    show_default=True,
    help="What happens to the peer the most endpoints use (or --target).",
)
@click.option("--runs", type=click.IntRange(1, 1000), default=3, show_default=True)
@click.option(
    "--endpoints", type=click.IntRange(1, 5000), help="How many endpoints (default: the lab's)."
)
@click.option(
    "--lab",
    "lab_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Lab file to run the experiment on (default: the seed's lab).",
)
@click.option(
    "--running",
    metavar="NAME",
    help="Run on this lab, already running (e.g. in containers), and leave it running "
    "(--lab, --option and --endpoints then do not apply; with attached components, fault "
    "maintenance, partition or impair).",
)
@click.option("--target", metavar="PEER", help="Fault this peer every run.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where report.json and timeline.png go (default: ./siplab-failover-<time>).",
)
@click.option(
    "--timeout",
    default=90.0,
    show_default=True,
    help="Seconds a run may take to fail over (maintenance needs one registration interval).",
)
@click.option("--delay", type=float, default=0.5, show_default=True, help="impair: seconds.")
@click.option("--loss", type=float, default=0.0, show_default=True, help="impair: share lost.")
def scenario_failover(
    option: str,
    fault: str,
    runs: int,
    endpoints: int | None,
    lab_file: Path | None,
    running: str | None,
    target: str | None,
    out: Path | None,
    timeout: float,
    delay: float,
    loss: float,
) -> None:
    """Fault a peer RUNS times, restoring the lab between runs, and report for every endpoint
    the detection time (fault -> Failed), the recovery time (fault -> Registered elsewhere) and
    the gap with no live registration: per run and as median, p90, p99 and max.

    It starts its own lab (the seed's, or --lab FILE) and stops it afterwards; the record of the
    run is kept in the lab's state directory, so 'siplab report' can redo the summary later.
    """
    from emulator.lab.scenario import (
        ScenarioError,
        experiment_lab,
        run_experiment,
    )
    from emulator.runtime import run_loop

    lab: LabConfig | None = None
    if running is None:
        try:
            lab = experiment_lab(_load(lab_file), option, endpoints)
        except ValueError as exc:
            _fail(str(exc))
        click.echo(
            f"{fault} x{runs} on lab {lab.name!r} ({lab.endpoint_count()} endpoint(s))", err=True
        )
    else:
        _lab(running)  # a lab that is not running says so in one line
        click.echo(f"{fault} x{runs} on running lab {running!r}", err=True)
    out = out or Path(f"siplab-failover-{time.strftime('%Y%m%d-%H%M%S')}")
    fault_args = {"delay": delay, "loss": loss} if fault == "impair" else {}
    with click.progressbar(length=runs, label="runs", file=sys.stderr) as bar:
        done = [0]

        def progress(finished: int, total: int) -> None:
            bar.update(finished - done[0])
            done[0] = finished

        try:
            report, paths = run_loop(
                run_experiment(
                    lab,
                    option=option,
                    fault=fault,
                    runs=runs,
                    out=out,
                    target=target,
                    settle_timeout=timeout,
                    fault_args=fault_args,
                    progress=progress,
                    running=running,
                )
            )
        except (ScenarioError, ControlError, ValueError) as exc:
            _fail(str(exc))
    click.echo(report.render_text())
    click.echo(f"wrote {paths['report']} and {paths['timeline']}")


@cli.command()
@click.argument("events_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    help="Also write report.json and timeline.png here.",
)
def report(events_file: Path, out: Path | None) -> None:
    """Summarise the failovers recorded in EVENTS_FILE (a lab's events.jsonl)."""
    from emulator.lab.report import EventFileError, build_report, load_events, write_outputs

    try:
        events = load_events(events_file)
    except EventFileError as exc:
        _fail(str(exc))
    summary = build_report(events)
    click.echo(summary.render_text())
    if out is not None:
        paths = write_outputs(summary, events, out)
        click.echo(f"wrote {paths['report']} and {paths['timeline']}")


# -- DNS at run time -----------------------------------------------------------------


@cli.group()
def dns() -> None:
    """Change the lab's DNS while it runs; each change is an event.

    Resolvers that cache see a change once their copy's TTL runs out; siplab's endpoints
    resolve afresh after every failure, so they see it at their next lookup.

    NAME is relative to the lab's domain ('_sip._tcp', 'habibexpc-cluster', '@') or absolute
    with a trailing dot. DATA is zone-file syntax, one record per argument: quote records that
    contain spaces, e.g. siplab dns add _sip._tcp SRV "10 10 5060 exp3".
    """


def _records(name: str, rtype: str, data: tuple[str, ...], ttl: int | None) -> list[dict[str, Any]]:
    return [{"name": name, "type": rtype.upper(), "ttl": ttl, "data": item} for item in data]


@dns.command("add")
@click.argument("name")
@click.argument("rtype", metavar="TYPE")
@click.argument("data", nargs=-1, required=True)
@click.option("--ttl", type=int, help="TTL of the new records (default: the zone's).")
@lab_option
def dns_add(
    name: str, rtype: str, data: tuple[str, ...], ttl: int | None, lab_name: str | None
) -> None:
    """Add records, e.g. a third SRV target or another A record to the cluster name."""
    result = _call(_lab(lab_name).dns, "add", records=_records(name, rtype, data, ttl))
    click.echo(f"added {result['added']} record(s)")


@dns.command("remove")
@click.argument("name")
@click.argument("rtype", metavar="[TYPE]", required=False)
@click.argument("data", metavar="[DATA]", required=False)
@lab_option
def dns_remove(name: str, rtype: str | None, data: str | None, lab_name: str | None) -> None:
    """Remove records: every record at NAME, its TYPE RRset, or the one record with DATA.

    Taking one peer out of an SRV set: siplab dns remove _sip._tcp SRV "10 10 5060 exp1"
    """
    args: dict[str, Any] = {"name": name}
    if rtype is not None:
        args["type"] = rtype.upper()
    if data is not None:
        args["data"] = data
    result = _call(_lab(lab_name).dns, "remove", **args)
    click.echo(f"removed {result['removed']} record(s)")


@dns.command("replace")
@click.argument("name")
@click.argument("rtype", metavar="TYPE")
@click.argument("data", nargs=-1, required=True)
@click.option("--ttl", type=int, help="TTL of the new records (default: the zone's).")
@lab_option
def dns_replace(
    name: str, rtype: str, data: tuple[str, ...], ttl: int | None, lab_name: str | None
) -> None:
    """Replace the NAME TYPE RRset with the records given."""
    result = _call(_lab(lab_name).dns, "replace", records=_records(name, rtype, data, ttl))
    click.echo(f"{name} {rtype.upper()} now has {result['records']} record(s)")


@dns.command("ttl")
@click.argument("ttl", type=int)
@click.option("--name", help="Only records at this name (default: all).")
@click.option("--type", "rtype", help="Only records of this type.")
@lab_option
def dns_ttl(ttl: int, name: str | None, rtype: str | None, lab_name: str | None) -> None:
    """Set the TTL of records (all of the zone's, or those at --name / of --type)."""
    args: dict[str, Any] = {"ttl": ttl}
    if name is not None:
        args["name"] = name
    if rtype is not None:
        args["type"] = rtype.upper()
    result = _call(_lab(lab_name).dns, "set_ttl", **args)
    click.echo(f"TTL {ttl} on {result['changed']} record(s)")


@dns.command("fault")
@click.argument("mode", type=click.Choice(["down", "servfail", "delay", "none"]))
@click.option("--name", help="Only for this name and below (default: every query).")
@click.option("--delay", type=float, default=0.0, help="Seconds to hold each answer (delay).")
@lab_option
def dns_fault(mode: str, name: str | None, delay: float, lab_name: str | None) -> None:
    """Break DNS: down (silent), servfail, delay (answers late), none (heal)."""
    args: dict[str, Any] = {"mode": mode}
    if name is not None:
        args["name"] = name
    if mode == "delay":
        if delay <= 0:
            raise click.UsageError("delay needs --delay SECONDS (more than 0)")
        args["delay"] = delay
    _call(_lab(lab_name).dns, "fault", **args)
    click.echo(f"dns fault: {mode}" + (f" for {name}" if name else ""))


def main() -> None:
    cli(prog_name="siplab")


if __name__ == "__main__":
    main()
