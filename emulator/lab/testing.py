"""Driving labs from tests: a ``SyncLab`` with test helpers, and the leak check.

Used by siplab's own integration tests and offered to users' pytest runs through the
``siplab_lab`` fixtures (``emulator.lab.pytest_plugin``). Every wait is bounded and reads the
event stream; nothing here sleeps to let something happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Self

import psutil

from emulator.lab.model import LabConfig
from emulator.lab.state import LAB_ENV, STATE_ENV, LabHandle
from emulator.lab.sync import SyncLab

Event = dict[str, Any]


class LabFailure(AssertionError):
    """The lab did not do what the test waited for; the message says what was seen."""


class TestLab(SyncLab):
    """A lab a test started: the whole ``Lab`` API, plus the real CLI pointed at it."""

    __test__ = False  # not a test class, whatever pytest's name heuristics say

    def __init__(self, handle: LabHandle, config: LabConfig, root: Path) -> None:
        super().__init__(handle, owned=True)
        self.config = config
        self.root = root

    def env(self) -> dict[str, str]:
        return {**os.environ, STATE_ENV: str(self.root), LAB_ENV: self.name}

    def siplab(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run the real ``siplab`` CLI against this lab, as a user would."""
        return subprocess.run(
            [sys.executable, "-m", "emulator.lab.cli", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def seq(self) -> int:
        """The number of the lab's next event, asked now (for ``until(..., since=...)``)."""
        return int(self.status()["seq"])

    def endpoint(self, name: str | None = None) -> dict[str, Any]:
        """An endpoint's status (the first one when no name or URI is given)."""
        for endpoint in self.status()["endpoints"]:
            if name is None or name in (endpoint["name"], endpoint["uri"]):
                return dict(endpoint)
        raise LabFailure(f"no endpoint {name!r}")

    def peer_of(self, endpoint: str | None = None) -> str:
        """The peer an endpoint is registered to now."""
        status = self.status()
        registrar = self.endpoint(endpoint)["registrar"]
        peer = self.peer_at(status, registrar)
        if peer is None:
            raise LabFailure(f"endpoint {endpoint or ''} is not registered to a peer: {registrar}")
        return peer

    def log_tail(self, lines: int = 30) -> str:
        """The end of the supervisor's log, for failure messages."""
        log = self.run_dir / "supervisor.log"
        if not log.exists():
            return ""
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        return "\n--- supervisor.log ---\n" + "\n".join(tail)

    def started_pids(self) -> set[int]:
        """Every PID this lab started, from its event file (which outlives the lab)."""
        events = self.run_dir / "events.jsonl"
        lines = events.read_text(encoding="utf-8").splitlines() if events.exists() else []
        pids = {self.handle.pid}
        for line in lines:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("kind") == "process.started":
                    pids.add(int(event["pid"]))
        return pids

    def addresses(self) -> set[str]:
        """The addresses the lab runs components on (what must be free after it stops)."""
        lab = self.config
        found = {str(p.address) for p in lab.peers if not p.external and p.attach is None}
        found |= lab.endpoint_addresses()
        if lab.dns.attach is None:
            found.add(str(lab.dns.address))
        return found


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
            and conn.status in (psutil.CONN_LISTEN, psutil.CONN_NONE)
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
