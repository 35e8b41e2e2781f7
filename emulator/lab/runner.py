"""The supervisor process: runs one lab until it is told to stop.

``siplab up`` runs it in the foreground (printing events); ``siplab up --detach`` and
``Lab.up`` run it as ``python -m emulator.lab.runner`` in the background, handing it the
validated lab as JSON and a pipe on which it reports, in one line, whether the lab started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emulator.events import Event
from emulator.lab.control import ControlPlane
from emulator.lab.model import LabConfig
from emulator.lab.state import LabHandle, remove_handle, run_dir, write_handle
from emulator.lab.supervisor import LabStartError, Supervisor
from emulator.runtime import run_loop

Say = Callable[[str], None]


def settled_summary(status: dict[str, Any]) -> list[str]:
    lines = []
    for endpoint in status["endpoints"]:
        if endpoint["state"] == "Registered":
            where = f"to {endpoint['registrar']} over {endpoint['transport']}"
            lines.append(f"{endpoint['uri']}: Registered {where}")
        else:
            reason = f" ({endpoint['reason']})" if endpoint["reason"] else ""
            lines.append(f"{endpoint['uri']}: {endpoint['state']}{reason}")
    return lines


async def run_lab(
    lab: LabConfig,
    *,
    settle_timeout: float,
    ready_fd: int | None = None,
    on_event: Callable[[Event], None] | None = None,
    say: Say = print,
) -> int:
    """Start the lab, serve its control plane, and stop everything on a signal or request."""
    directory = run_dir(lab.name)
    directory.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(lab, events_path=directory / "events.jsonl", on_event=on_event)
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
            _report_ready(ready_fd, {"ok": False, "error": "stopped while starting"})
            return 130
        try:
            start.result()
        except LabStartError as exc:
            say(f"Error: {exc}")
            _report_ready(ready_fd, {"ok": False, "error": str(exc)})
            return 1
        _report_ready(ready_fd, {"ok": True, "control": url})
        await supervisor.wait_settled(settle_timeout)
        for line in settled_summary(supervisor.view.to_dict()):
            say(line)
        say(f"lab {lab.name!r} is up; 'siplab status' in another terminal, Ctrl-C here stops it.")
        await stopped
    finally:
        stopped.cancel()
        say(f"stopping lab {lab.name!r} ...")
        await supervisor.shutdown()
        await control.close()
        remove_handle(lab.name)
        say(f"lab {lab.name!r} stopped")
    return 0


def _report_ready(fd: int | None, message: dict[str, Any]) -> None:
    if fd is None:
        return
    try:
        os.write(fd, (json.dumps(message) + "\n").encode())
        os.close(fd)
    except OSError:
        pass  # the waiting launcher is gone; nothing to tell


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emulator.lab.runner")
    parser.add_argument("--config-file", type=Path, required=True)
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    lab = LabConfig.model_validate_json(args.config_file.read_text(encoding="utf-8"))

    def say(line: str) -> None:
        print(line, flush=True)

    sys.exit(run_loop(run_lab(lab, settle_timeout=args.timeout, ready_fd=args.ready_fd, say=say)))


if __name__ == "__main__":
    main()
