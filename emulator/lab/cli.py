"""``siplab``: run a lab, look at it, and break it.

click gives the command tree, ``--help`` on every command and one-line usage errors; the
commands that act on a running lab find it through its state file, so no addresses are typed.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from emulator.events import Event
from emulator.lab.client import ControlError, LabClient
from emulator.lab.control import ControlPlane
from emulator.lab.model import LabConfig, default_lab, load_lab
from emulator.lab.render import human_lines
from emulator.lab.state import (
    LabHandle,
    LabNotFound,
    find_lab,
    pid_alive,
    read_handle,
    remove_handle,
    run_dir,
    running_labs,
    write_handle,
)
from emulator.lab.supervisor import LabStartError, Supervisor
from emulator.runtime import run_loop
from emulator.validation import ConfigError
from endpoint import roomos

DEFAULT_SETTLE_TIMEOUT = 30.0
# 'up --detach': the lab runs, but some endpoint is Failed or still Registering (1 = no lab).
EXIT_NOT_ALL_REGISTERED = 3
lab_option = click.option(
    "--lab", "lab_name", metavar="NAME", help="Which running lab (needed only when several run)."
)


def _fail(message: str) -> NoReturn:
    raise click.ClickException(message)


def _load(lab_file: Path | None) -> LabConfig:
    try:
        return load_lab(lab_file) if lab_file is not None else default_lab()
    except ConfigError as exc:
        _fail(str(exc))


def _client(lab_name: str | None) -> LabClient:
    try:
        return LabClient(find_lab(lab_name))
    except LabNotFound as exc:
        _fail(str(exc))


def _call(action: Any, *args: Any) -> Any:
    try:
        return action(*args)
    except ControlError as exc:
        _fail(str(exc))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="siplab")
def cli() -> None:
    """Rehearse SIP registration failover on real loopback sockets.

    A lab is a DNS server, registrar peers and endpoints, each its own process. Start the
    seed's lab with 'siplab up', then from another terminal: 'siplab status',
    'siplab maintenance exp1 on', 'siplab kill exp1', 'siplab start exp1', 'siplab down'.
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
@click.option("--ready-fd", type=int, hidden=True)
def up(
    lab_file: Path | None, detach: bool, timeout: float, verbose: bool, ready_fd: int | None
) -> None:
    """Start a lab: the seed's default, or the one LAB_FILE (YAML) describes.

    In the foreground it prints the lab's events until Ctrl-C, which stops every process
    it started. With --detach it returns once every endpoint is Registered or Failed:
    exit status 0 when all are Registered, 3 when the lab runs but some endpoint is not
    registered, 1 when the lab could not start. 'siplab down' stops it.
    """
    lab = _load(lab_file)
    existing = read_handle(lab.name)
    if existing is not None:
        _fail(
            f"lab {lab.name!r} is already running (pid {existing.pid}); "
            f"stop it with 'siplab down --lab {lab.name}'"
        )
    if detach:
        sys.exit(_up_detached(lab_file, lab, timeout))
    sys.exit(run_loop(_run_lab(lab, verbose=verbose, settle_timeout=timeout, ready_fd=ready_fd)))


async def _run_lab(
    lab: LabConfig, *, verbose: bool, settle_timeout: float, ready_fd: int | None
) -> int:
    directory = run_dir(lab.name)
    directory.mkdir(parents=True, exist_ok=True)

    def echo(event: Event) -> None:
        for line in human_lines(event.to_dict(), verbose=verbose):
            click.echo(line)

    supervisor = Supervisor(lab, events_path=directory / "events.jsonl", on_event=echo)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    control = ControlPlane(supervisor, stop.set)
    stopped = asyncio.create_task(stop.wait())
    try:
        url = await control.start()
        write_handle(LabHandle(lab.name, os.getpid(), url, str(directory), time.time()))
        start = asyncio.create_task(supervisor.start())
        await asyncio.wait({start, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not start.done():
            start.cancel()
            await asyncio.gather(start, return_exceptions=True)
            return 130
        try:
            start.result()
        except LabStartError as exc:
            click.echo(f"Error: {exc}", err=True)
            _report_ready(ready_fd, {"ok": False, "error": str(exc)})
            return 1
        _report_ready(ready_fd, {"ok": True, "control": url})
        await supervisor.wait_settled(settle_timeout)
        for line in _settled_summary(supervisor.view.to_dict()):
            click.echo(line)
        click.echo(
            f"lab {lab.name!r} is up; 'siplab status' in another terminal, Ctrl-C here stops it."
        )
        await stopped
    finally:
        stopped.cancel()
        click.echo(f"stopping lab {lab.name!r} ...")
        await supervisor.shutdown()
        await control.close()
        remove_handle(lab.name)
        click.echo(f"lab {lab.name!r} stopped")
    return 0


def _report_ready(fd: int | None, message: dict[str, Any]) -> None:
    if fd is None:
        return
    try:
        os.write(fd, (json.dumps(message) + "\n").encode())
        os.close(fd)
    except OSError:
        pass  # the waiting 'up --detach' is gone; nothing to tell


def _settled_summary(status: dict[str, Any]) -> list[str]:
    lines = []
    for endpoint in status["endpoints"]:
        if endpoint["state"] == "Registered":
            where = f"to {endpoint['registrar']} over {endpoint['transport']}"
            lines.append(f"{endpoint['uri']}: Registered {where}")
        else:
            reason = f" ({endpoint['reason']})" if endpoint["reason"] else ""
            lines.append(f"{endpoint['uri']}: {endpoint['state']}{reason}")
    return lines


def _up_detached(lab_file: Path | None, lab: LabConfig, timeout: float) -> int:
    directory = run_dir(lab.name)
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "supervisor.log"
    components = ", ".join(lab.component_names())
    click.echo(f"starting lab {lab.name!r} ({components}); log: {log_path}", err=True)
    read_end, write_end = os.pipe()
    command = [sys.executable, "-m", "emulator.lab.cli", "up", "--timeout", str(timeout)]
    command += ["--ready-fd", str(write_end)]
    if lab_file is not None:
        command.append(str(lab_file.resolve()))
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=(write_end,),
        )
    os.close(write_end)
    message = _read_ready(read_end, process, timeout + 30)
    if not message.get("ok"):
        if process.poll() is None:
            process.terminate()
        _fail(f"{message.get('error', 'the lab did not start')} (log: {log_path})")
    handle = read_handle(lab.name)
    if handle is None:
        _fail(f"the lab started but left no state file (log: {log_path})")
    status = _call(LabClient(handle).get, f"/wait?until=settled&timeout={timeout:g}", timeout + 10)
    for line in _settled_summary(status):
        click.echo(line)
    click.echo(f"lab {lab.name!r} is running (pid {process.pid}); 'siplab down' stops it")
    if not status["settled"]:
        click.echo(f"not every endpoint settled within {timeout:g} s", err=True)
    registered = all(e["state"] == "Registered" for e in status["endpoints"])
    return 0 if registered else EXIT_NOT_ALL_REGISTERED


def _read_ready(fd: int, process: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """Wait for the detached supervisor's one-line report, its exit, or the deadline."""
    deadline = time.monotonic() + timeout
    data = b""
    try:
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return {"ok": False, "error": f"the lab did not report within {timeout:g} s"}
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:  # the supervisor exited without a word
                process.wait(timeout=5)
                return {"ok": False, "error": f"the lab exited (status {process.returncode})"}
            data += chunk
    finally:
        os.close(fd)
    try:
        return json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        return {"ok": False, "error": "the lab sent an unreadable report"}


@cli.command()
@lab_option
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for the stop.")
def down(lab_name: str | None, timeout: float) -> None:
    """Stop a running lab and every process it started."""
    client = _client(lab_name)
    handle = client.handle
    try:
        client.post("/shutdown")
    except ControlError:
        # The control plane is gone but the supervisor lives: signal it by its PID.
        os.kill(handle.pid, signal.SIGTERM)
    if not _wait_pid_exit(handle.pid, timeout):
        _fail(f"lab {handle.name!r} (pid {handle.pid}) did not stop within {timeout:g} s")
    remove_handle(handle.name)
    click.echo(f"lab {handle.name!r} stopped")


def _wait_pid_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# -- looking -------------------------------------------------------------------------


@cli.command()
@lab_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(lab_name: str | None, as_json: bool) -> None:
    """Show peers (state, registrations) and endpoints (state, registrar, transport)."""
    client = _client(lab_name)
    data = _call(client.get, "/status")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    dns = data["dns"]
    metrics = f"   metrics {dns['metrics']}" if dns.get("metrics") else ""
    click.echo(f"lab {data['lab']}   dns {dns['address']} ({dns['state']}){metrics}")
    click.echo()
    click.echo(
        _table(
            ["PEER", "ADDRESS", "STATE", "REGISTRATIONS"],
            [[p["name"], p["address"], p["state"], str(p["registrations"])] for p in data["peers"]],
        )
    )
    click.echo()
    click.echo(
        _table(
            ["ENDPOINT", "STATE", "REGISTRAR", "TRANSPORT", "REASON"],
            [
                [e["uri"], e["state"], e["registrar"] or "-", e["transport"] or "-", e["reason"]]
                for e in data["endpoints"]
            ],
        )
    )


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
    """Show a registrar peer's bindings: AOR, contact, seconds left, where it came from."""
    result = _call(_client(lab_name).post, f"/components/{peer}/ops/status")["result"]
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    mode = "maintenance" if result["maintenance"] else "active"
    click.echo(f"{peer}: {mode}, {result['registrations']} registration(s)")
    if result["bindings"]:
        click.echo()
        click.echo(
            _table(
                ["AOR", "CONTACT", "EXPIRES", "FROM"],
                [
                    [b["aor"], b["contact"], str(b["expires"]), b["source"]]
                    for b in result["bindings"]
                ],
            )
        )


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
def events(lab_name: str | None, follow: bool, since: int, fmt: str, verbose: bool) -> None:
    """Print the lab's events (every component's, in arrival order)."""
    client = _client(lab_name)
    pids: dict[str, int] = {}  # RoomOS lines name the process: main[pid]
    try:
        for event in client.stream_events(since=since, follow=follow):
            if fmt == "json":
                click.echo(json.dumps(event))
                continue
            if event.get("kind") == "process.started":
                pids[event["component"]] = int(event.get("pid") or 0)
            if fmt == "roomos":
                lines = roomos.render(event, pid=pids.get(event["component"], 0))
            else:
                lines = human_lines(event, verbose=verbose)
            for line in lines:
                click.echo(line)
    except ControlError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        pass


@cli.command()
def labs() -> None:
    """List the labs running on this machine."""
    handles = running_labs()
    if not handles:
        click.echo("no lab is running")
        return
    click.echo(
        _table(
            ["LAB", "PID", "CONTROL", "STARTED"],
            [
                [
                    h.name,
                    str(h.pid),
                    h.control,
                    time.strftime("%H:%M:%S", time.localtime(h.started)),
                ]
                for h in handles
            ],
        )
    )


@cli.command()
@click.argument("lab_file", required=False, type=click.Path(path_type=Path, dir_okay=False))
def check(lab_file: Path | None) -> None:
    """Validate LAB_FILE and print the lab it describes, with every default filled in."""
    click.echo(_load(lab_file).to_yaml(), nl=False)


@cli.command()
def example() -> None:
    """Print the seed's default lab as a lab file to start from."""
    click.echo(default_lab().to_yaml(), nl=False)


# -- breaking --------------------------------------------------------------------------


@cli.command()
@click.argument("peer")
@click.argument("mode", type=click.Choice(["on", "off"]))
@lab_option
def maintenance(peer: str, mode: str, lab_name: str | None) -> None:
    """Put PEER in or out of maintenance: every REGISTER then gets 503 + Warning 382."""
    client = _client(lab_name)
    _call(client.post, f"/peers/{peer}/maintenance", {"on": mode == "on"})
    click.echo(f"{peer}: maintenance {mode}")


@cli.command()
@click.argument("component")
@lab_option
def kill(component: str, lab_name: str | None) -> None:
    """SIGKILL a component's process (no restart; 'siplab start' brings it back)."""
    result = _call(_client(lab_name).post, f"/components/{component}/kill")
    click.echo(f"{component}: killed (pid {result['pid']})")


@cli.command()
@click.argument("component")
@lab_option
def stop(component: str, lab_name: str | None) -> None:
    """Stop a component gracefully: it closes its connections and listeners itself."""
    _call(_client(lab_name).post, f"/components/{component}/stop")
    click.echo(f"{component}: stopped")


@cli.command()
@click.argument("component")
@lab_option
def start(component: str, lab_name: str | None) -> None:
    """Start a component that was killed or stopped."""
    result = _call(_client(lab_name).post, f"/components/{component}/start")
    click.echo(f"{component}: started (pid {result['pid']})")


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


def _dns_op(lab_name: str | None, op: str, args: dict[str, Any]) -> Any:
    result = _call(_client(lab_name).post, f"/components/dns/ops/{op}", args)
    return result["result"]


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
    result = _dns_op(lab_name, "add", {"records": _records(name, rtype, data, ttl)})
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
    result = _dns_op(lab_name, "remove", args)
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
    result = _dns_op(lab_name, "replace", {"records": _records(name, rtype, data, ttl)})
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
    result = _dns_op(lab_name, "set_ttl", args)
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
    _dns_op(lab_name, "fault", args)
    click.echo(f"dns fault: {mode}" + (f" for {name}" if name else ""))


def main() -> None:
    cli(prog_name="siplab")


if __name__ == "__main__":
    main()
