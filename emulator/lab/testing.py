"""Driving a lab from a test: start it detached, wait on its events, break it, tear it down.

Used by siplab's own integration tests and offered to users' pytest runs through the
``siplab_lab`` fixture (``emulator.lab.pytest_plugin``). Every wait is bounded and reads the event
stream; nothing here sleeps to let something happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import psutil
import yaml

from emulator.lab.cli import EXIT_NOT_ALL_REGISTERED
from emulator.lab.client import LabClient
from emulator.lab.state import LabHandle, pid_alive

Event = dict[str, Any]


class LabFailure(AssertionError):
    """The lab did not do what the test waited for; the message says what was seen."""


class RunningLab:
    def __init__(self, name: str, state_dir: Path, lab_file: Path) -> None:
        self.name = name
        self.state_dir = state_dir
        self.lab_file = lab_file
        self.up_output = ""
        self._handle: LabHandle | None = None

    # -- lifecycle --------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return {**os.environ, "SIPLAB_STATE_DIR": str(self.state_dir)}

    def siplab(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run the real CLI against this lab, as a user would."""
        return subprocess.run(
            [sys.executable, "-m", "emulator.lab.cli", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def up(self, timeout: float = 30.0, *, require_registered: bool = True) -> None:
        """Start detached; unless told otherwise, every endpoint must end up Registered."""
        result = self.siplab(
            "up", "--detach", "--timeout", str(timeout), str(self.lab_file), timeout=timeout + 60
        )
        self.up_output = result.stdout + result.stderr
        allowed = {0} if require_registered else {0, EXIT_NOT_ALL_REGISTERED}
        if result.returncode not in allowed:
            raise LabFailure(
                f"siplab up --detach failed ({result.returncode}):\n{self.up_output}"
                f"{self.log_tail()}"
            )

    def log_tail(self, lines: int = 30) -> str:
        """The end of the detached supervisor's log, for failure messages."""
        log = self.state_dir / self.name / "supervisor.log"
        if not log.exists():
            return ""
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        return "\n--- supervisor.log ---\n" + "\n".join(tail)

    @property
    def handle(self) -> LabHandle:
        if self._handle is None:
            path = self.state_dir / self.name / "lab.json"
            self._handle = LabHandle(**json.loads(path.read_text()))
        return self._handle

    @property
    def client(self) -> LabClient:
        return LabClient(self.handle, timeout=30.0)

    def down(self, timeout: float = 30.0) -> None:
        if (self.state_dir / self.name / "lab.json").exists():
            result = self.siplab("down", "--lab", self.name)
            if result.returncode != 0:
                raise LabFailure(f"siplab down failed: {result.stdout}{result.stderr}")
        elif self._handle is not None and pid_alive(self._handle.pid):
            # The state file is gone (its directory was removed) but the supervisor we started
            # still runs: stop it by its PID; it stops its components.
            os.kill(self._handle.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while pid_alive(self._handle.pid):
                if time.monotonic() > deadline:
                    raise LabFailure(f"supervisor {self._handle.pid} did not stop")
                time.sleep(0.05)

    # -- looking ----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.client.get("/status")
        return result

    def endpoint(self, name: str | None = None) -> dict[str, Any]:
        endpoints = self.status()["endpoints"]
        for endpoint in endpoints:
            if name is None or endpoint["name"] == name or endpoint["uri"] == name:
                return dict(endpoint)
        raise LabFailure(f"no endpoint {name!r}")

    def peer_at(self, registrar: str) -> str:
        """The name of the peer listening at ``ip:port``."""
        host = registrar.rsplit(":", 1)[0].strip("[]")
        for peer in self.status()["peers"]:
            if peer["address"] == host:
                return str(peer["name"])
        raise LabFailure(f"no peer at {registrar}")

    def events(self, since: int = 0) -> list[Event]:
        return list(self.client.stream_events(since=since, follow=False))

    def next_seq(self) -> int:
        events = self.events()
        return int(events[-1]["seq"]) + 1 if events else 0

    def pids(self) -> set[int]:
        """Every process this lab started, plus the supervisor."""
        pids = {int(e["pid"]) for e in self.events() if e["kind"] == "process.started"}
        return pids | {self.handle.pid}

    def wait_for(
        self,
        predicate: Callable[[Event], bool],
        *,
        since: int = 0,
        timeout: float = 30.0,
        what: str = "the event",
    ) -> Event:
        """The first event from ``since`` on that satisfies ``predicate``, within ``timeout``."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        url = f"{self.handle.control}/events?since={since}&follow=1"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                for raw in response:
                    event = json.loads(raw)
                    if predicate(event):
                        return event
                    seen.append(f"{event['component']} {event['kind']}")
                    if time.monotonic() > deadline:
                        break
        except (TimeoutError, urllib.error.URLError):
            pass
        tail = "\n  ".join(seen[-15:])
        raise LabFailure(f"no {what} within {timeout:g} s; last events:\n  {tail}{self.log_tail()}")


def write_lab(path: Path, lab: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(lab, sort_keys=False), encoding="utf-8")
    return path


@contextmanager
def running_lab(
    lab: dict[str, Any],
    workdir: Path,
    *,
    timeout: float = 30.0,
    require_registered: bool = True,
) -> Iterator[RunningLab]:
    """Start ``lab`` (a lab-file mapping) detached; always stop it, even if the test fails."""
    state_dir = workdir / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    lab_file = write_lab(workdir / f"{lab['name']}.yaml", lab)
    running = RunningLab(lab["name"], state_dir, lab_file)
    try:
        running.up(timeout=timeout, require_registered=require_registered)
        running.handle  # noqa: B018 - read the state file now: teardown needs the PID
        yield running
    finally:
        running.down()


def started_pids(lab: RunningLab) -> set[int]:
    """Every PID the lab started, read from its event file (which outlives the control plane)."""
    events = lab.state_dir / lab.name / "events.jsonl"
    lines = events.read_text(encoding="utf-8").splitlines() if events.exists() else []
    return {
        int(event["pid"])
        for event in map(json.loads, lines)
        if event.get("kind") == "process.started"
    }


def lab_addresses(lab: dict[str, Any]) -> set[str]:
    """The addresses a lab file puts components on (what must be free after it stops)."""
    addresses = {str(peer["address"]) for peer in lab.get("peers", [])}
    addresses |= {str(e["address"]) for e in lab.get("endpoints", []) if "address" in e}
    addresses.add(str(lab.get("dns", {}).get("address", "127.0.0.10")))
    return addresses


def leftovers(pids: set[int], addresses: set[str]) -> list[str]:
    """What a stopped lab left behind: live processes, and sockets listening on its addresses.

    Live processes are killed (they are the lab's own, by the PIDs it recorded), so a leak
    is reported once and does not spill into the next test.
    """
    found = []
    for pid in sorted(pids):
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.NoSuchProcess:
            continue
        os.kill(pid, signal.SIGKILL)
        found.append(f"process {pid} was still running")
    for conn in psutil.net_connections(kind="inet"):
        if (
            conn.laddr
            and str(conn.laddr.ip) in addresses
            and conn.status
            in (
                psutil.CONN_LISTEN,
                psutil.CONN_NONE,
            )
        ):
            found.append(f"{conn.laddr.ip}:{conn.laddr.port} still open (pid {conn.pid})")
    return found


class ComponentUnderTest:
    """One component (``python -m dnsserver`` ...) as a real subprocess, events read from stdout.

    Every wait is bounded; ``stop`` always leaves no process behind.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()
        self._reader = asyncio.create_task(self._read())
        self._next_id = 0

    @classmethod
    async def launch(cls, module: str, config_json: str) -> Self:
        """As the lab supervisor runs it: --config-json, control requests on stdio."""
        return await cls.spawn(
            sys.executable, "-m", module, "--config-json", config_json, "--control", "stdio"
        )

    @classmethod
    async def spawn(cls, *argv: str) -> Self:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.events.append(json.loads(line))
            self._arrived.set()

    async def wait_for(self, kind: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """The first event of ``kind`` whose fields include ``fields``."""
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if event["kind"] == kind and all(event.get(k) == v for k, v in fields.items()):
                        return event
                if self._reader.done():
                    raise AssertionError(f"process ended without a {kind!r} event: {self.events}")
                self._arrived.clear()
                await self._arrived.wait()

    async def request(self, op: str, timeout: float = 10.0, **args: Any) -> dict[str, Any]:
        """Send a control request and return its ``control.reply`` event."""
        self._next_id += 1
        request_id = self._next_id
        await self.send_line(json.dumps({"id": request_id, "op": op, "args": args}))
        return await self.wait_for("control.reply", timeout, id=request_id)

    async def send_line(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def wait_exit(self, timeout: float = 10.0) -> int:
        async with asyncio.timeout(timeout):
            status = await self.process.wait()
            await self._reader
        return status

    async def stop(self) -> None:
        """Kill the process by PID if it is still alive, and reap it (bounded)."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self.process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
