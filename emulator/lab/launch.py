"""Starting a lab in the background and getting a handle on it — or nothing left running.

The launcher writes the validated lab as JSON into the lab's run directory (so lab-file paths,
already made absolute, mean what they meant in the file), starts the supervisor in its own
session with its output in ``supervisor.log``, and waits for its one-line report on a pipe. If
anything goes wrong after the supervisor started — it reports a failure, says nothing in time,
or leaves no state file — the launcher stops it by its PID before raising, so a failed start
never leaves a lab nobody can see.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emulator.lab.state import STATE_ENV, LabHandle, pid_alive, read_handle, run_dir

if TYPE_CHECKING:
    from emulator.lab.model import LabConfig

STOP_WAIT = 30.0


class LaunchError(Exception):
    """The lab did not start; ``str()`` is one line, with where its log is."""


def launch(lab: LabConfig, *, timeout: float, root: Path | None = None) -> LabHandle:
    """Start ``lab`` detached; returns once its components are ready (not yet settled)."""
    existing = read_handle(lab.name, root)
    if existing is not None:
        raise LaunchError(
            f"lab {lab.name!r} is already running (pid {existing.pid}); "
            f"stop it with 'siplab down {lab.name}'"
        )
    directory = run_dir(lab.name, root)
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "lab.config.json"
    config.write_text(lab.model_dump_json(), encoding="utf-8")
    log_path = directory / "supervisor.log"
    read_end, write_end = os.pipe()
    command = [sys.executable, "-m", "emulator.lab.runner", "--config-file", str(config)]
    command += ["--ready-fd", str(write_end), "--timeout", str(timeout)]
    env = {**os.environ, **({STATE_ENV: str(root)} if root is not None else {})}
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=(write_end,),
            env=env,
        )
    os.close(write_end)
    try:
        message = _read_report(read_end, process, timeout + 30)
        if not message.get("ok"):
            raise LaunchError(f"{message.get('error', 'the lab did not start')} (log: {log_path})")
        handle = read_handle(lab.name, root)
        if handle is None or handle.pid != process.pid:
            raise LaunchError(f"the lab started but left no state file (log: {log_path})")
    except BaseException:
        stop_pid(process.pid, STOP_WAIT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=1)
        raise
    return handle


def _read_report(fd: int, process: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """Wait for the supervisor's one-line report, its exit, or the deadline."""
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
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
                return {"ok": False, "error": f"the lab exited (status {process.returncode})"}
            data += chunk
    finally:
        os.close(fd)
    try:
        return dict(json.loads(data.split(b"\n", 1)[0]))
    except (ValueError, TypeError):
        return {"ok": False, "error": "the lab sent an unreadable report"}


def stop_pid(pid: int, timeout: float) -> bool:
    """SIGTERM a supervisor we started (it stops its components), SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_pid_exit(pid, timeout):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)  # its children see their stdin close and stop themselves
    return wait_pid_exit(pid, 5.0) or not pid_alive(pid)


def wait_pid_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
