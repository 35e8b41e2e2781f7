"""Where running labs are found: one state file per lab, so the CLI needs no addresses.

``<state dir>/<lab name>/lab.json`` names the supervisor's PID and its control-plane URL; the
directory also holds the lab's ``events.jsonl`` and, for a detached lab, ``supervisor.log``.
A lab whose supervisor runs in a container (``docker compose up``) writes the same file into a
host directory bind-mounted as its state dir, marked ``remote``: its PID means nothing here, so
it is alive while its control plane accepts connections, and it carries the bearer token its
control plane requires (the file is readable by its owner only).
The state dir is ``$SIPLAB_STATE_DIR``, else ``$XDG_STATE_HOME/siplab``, else
``~/.local/state/siplab``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

STATE_ENV = "SIPLAB_STATE_DIR"
LAB_ENV = "SIPLAB_LAB"


class LabNotFound(Exception):
    """No (or no single) running lab matches; ``str()`` says what to do."""


@dataclass(frozen=True, slots=True)
class LabHandle:
    name: str
    pid: int
    control: str  # http://127.0.0.1:PORT
    run_dir: str
    started: float
    # Bearer token of a control plane that listens beyond loopback (None on loopback).
    token: str | None = None
    # The supervisor is not a process of this host (a container): no PID to check or signal.
    remote: bool = False


def state_dir() -> Path:
    explicit = os.environ.get(STATE_ENV)
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "siplab"


def run_dir(name: str, root: Path | None = None) -> Path:
    return (root or state_dir()) / name


def write_handle(handle: LabHandle, root: Path | None = None) -> None:
    path = run_dir(handle.name, root) / "lab.json"
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    # Owner-only: the file may carry the control plane's token.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(json.dumps(asdict(handle)))
    tmp.replace(path)  # readers never see half a file


def remove_handle(name: str, root: Path | None = None) -> None:
    (run_dir(name, root) / "lab.json").unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is still a running siplab process (not a zombie, not a recycled PID)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc: trust the signal check
    # The state letter follows the parenthesised command name, which may hold spaces.
    if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
        return False
    if not cmdline:
        return True  # exiting: its memory is gone but it has not finished
    # A recycled PID belongs to some other program; ours runs the siplab CLI.
    return b"siplab" in cmdline or b"emulator" in cmdline


def read_handle(name: str, root: Path | None = None) -> LabHandle | None:
    path = run_dir(name, root) / "lab.json"
    try:
        handle = LabHandle(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    if handle.remote:
        # Written inside a container: its run_dir is the container's view of this directory.
        handle = replace(handle, run_dir=str(path.parent))
    if not handle_alive(handle):
        path.unlink(missing_ok=True)  # the supervisor died without cleaning up
        return None
    return handle


def handle_alive(handle: LabHandle) -> bool:
    return control_reachable(handle.control) if handle.remote else pid_alive(handle.pid)


def control_reachable(url: str, timeout: float = 1.0) -> bool:
    """Whether something accepts connections at a control-plane URL (a container's published
    port is refused once the container is gone)."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout):
            return True
    except OSError:
        return False


def wait_remote_stopped(handle: LabHandle, timeout: float) -> bool:
    """Wait until a remote supervisor removed its state file (it does as it stops) or stopped
    answering; a file left by a supervisor that is gone is removed."""
    path = Path(handle.run_dir) / "lab.json"
    deadline = time.monotonic() + timeout
    while path.exists() and control_reachable(handle.control):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    path.unlink(missing_ok=True)
    return True


def running_labs(root: Path | None = None) -> list[LabHandle]:
    root = root or state_dir()
    if not root.is_dir():
        return []
    entries = sorted(root.iterdir())
    handles = [read_handle(entry.name, root) for entry in entries if entry.is_dir()]
    return [h for h in handles if h is not None]


def recorded_events(name: str | None, root: Path | None = None) -> Path:
    """The event file of a lab that is not running: the one named, or the newest."""
    root = root or state_dir()
    if name is not None:
        path = run_dir(name, root) / "events.jsonl"
        if not path.is_file():
            raise LabNotFound(f"no lab named {name!r} is running or has recorded events in {root}")
        return path
    files = sorted(root.glob("*/events.jsonl"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise LabNotFound("no lab is running; start one with 'siplab up' (or 'siplab up --detach')")
    return files[-1]


def find_lab(name: str | None, root: Path | None = None) -> LabHandle:
    name = name or os.environ.get(LAB_ENV) or None
    labs = running_labs(root)
    if name is not None:
        for handle in labs:
            if handle.name == name:
                return handle
        others = f" (running: {', '.join(h.name for h in labs)})" if labs else ""
        raise LabNotFound(f"no lab named {name!r} is running{others}")
    if not labs:
        raise LabNotFound("no lab is running; start one with 'siplab up' (or 'siplab up --detach')")
    if len(labs) > 1:
        names = ", ".join(h.name for h in labs)
        raise LabNotFound(
            f"several labs are running ({names}); pick one with --lab NAME (or {LAB_ENV}=NAME)"
        )
    return labs[0]
