"""The supervisor process: runs one lab until it is told to stop.

``siplab up`` runs it in the foreground (printing events); ``siplab up --detach`` and
``Lab.up`` run it as ``python -m emulator.lab.runner`` in the background, handing it the
validated lab as JSON and a pipe on which it reports, in one line, whether the lab started.
In a container (``compose.yaml``'s ``lab`` service) it serves its control plane beyond loopback
with a bearer token (``--listen 0.0.0.0:7700``) and writes a ``remote`` state file naming the
URL the host reaches it at (``--advertise``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emulator.channel import ChannelSpec, channel_token
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
    listen: ChannelSpec | None = None,
    advertise: str | None = None,
) -> int:
    """Start the lab, serve its control plane, and stop everything on a signal or request.

    ``listen`` (default: loopback, any port) is where the control plane listens; beyond
    loopback it takes the lab's channel token (``SIPLAB_CONTROL_TOKEN``) or makes one.
    ``advertise`` is the URL clients use instead (a container's published port); it marks the
    state file ``remote``."""
    listen = listen or ChannelSpec("listen", "127.0.0.1", 0)
    token = (channel_token() or secrets.token_urlsafe(24)) if listen.needs_token() else None
    directory = run_dir(lab.name)
    directory.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(lab, events_path=directory / "events.jsonl", on_event=on_event)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    control = ControlPlane(supervisor, stop.set, token)
    stopped = asyncio.create_task(stop.wait())
    try:
        url = await control.start(listen.host, listen.port)
        write_handle(
            LabHandle(
                lab.name,
                os.getpid(),
                advertise or url,
                str(directory),
                time.time(),
                token,
                remote=advertise is not None,
            )
        )
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
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config-file", type=Path)
    source.add_argument("--config-json", help="the validated lab as JSON (compose.yaml)")
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument(
        "--listen",
        type=lambda text: ChannelSpec.parse(f"listen:{text}"),
        help="HOST:PORT of the control plane (default: 127.0.0.1, any port)",
    )
    parser.add_argument("--advertise", help="the control plane's URL for clients elsewhere")
    args = parser.parse_args(argv)
    text = args.config_json or args.config_file.read_text(encoding="utf-8")
    lab = LabConfig.model_validate_json(text)

    def say(line: str) -> None:
        print(line, flush=True)

    sys.exit(
        run_loop(
            run_lab(
                lab,
                settle_timeout=args.timeout,
                ready_fd=args.ready_fd,
                say=say,
                listen=args.listen,
                advertise=args.advertise,
            )
        )
    )


if __name__ == "__main__":
    main()
