"""One supervised component process: start it, read its events, send it control requests, end it.

The child runs ``python -m <module> --config-json ... --control stdio`` in its own session, so a
Ctrl-C in the user's terminal reaches only the supervisor, which then stops every child in order.
If the supervisor itself dies, the child sees its stdin close and exits on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path

from emulator.events import Event
from emulator.kinds import Kind
from emulator.lab.link import ComponentLink, ControlFailure

STDERR_TAIL = 20
STOP_GRACE = 5.0
READ_CHUNK = 1 << 16


class ComponentProcess(ComponentLink):
    """A component the lab starts as its own child process and talks to over stdio."""

    def __init__(
        self,
        name: str,
        module: str,
        config_json: str,
        emit: Callable[[Event], None],
    ) -> None:
        super().__init__(name, emit)
        self.module = module
        self._config_json = config_json
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self._tasks: list[asyncio.Task[None]] = []
        self._exited = asyncio.Event()
        self._signalled: str | None = None
        self.paused = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and not self._exited.is_set()

    async def start(self) -> None:
        if self.running:
            raise ControlFailure(f"{self.name} is already running (pid {self.pid})")
        self._exited = asyncio.Event()
        self._signalled = None
        self.paused = False
        self.stderr_tail.clear()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self.module,
            "--config-json",
            self._config_json,
            "--control",
            "stdio",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.event(Kind.PROCESS_STARTED, pid=self.proc.pid, module=self.module)
        proc = self.proc
        stdout_task = asyncio.create_task(self._read_stdout(proc))
        stderr_task = asyncio.create_task(self._read_stderr(proc))
        self._tasks = [stdout_task, stderr_task]
        self._tasks.append(asyncio.create_task(self._wait(proc, stdout_task, stderr_task)))

    def _send_line(self, line: bytes) -> None:
        proc = self.proc
        if proc is None or proc.stdin is None or proc.stdin.is_closing():
            raise ConnectionError("stdin closed")
        proc.stdin.write(line)

    async def _read_stdout(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(READ_CHUNK):
            self.feed(chunk)
        self.feed(b"\n")  # a last line without its newline still counts

    async def _read_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while True:
            try:
                line = await proc.stderr.readline()
            except ValueError:  # over the stream limit: skip it, keep reading
                continue
            if not line:
                return
            text = line.decode(errors="replace").rstrip()
            self.stderr_tail.append(text)
            self.event(Kind.COMPONENT_STDERR, line=text)

    async def _wait(
        self,
        proc: asyncio.subprocess.Process,
        stdout_task: asyncio.Task[None],
        stderr_task: asyncio.Task[None],
    ) -> None:
        returncode = await proc.wait()
        # Events the child wrote just before it ended belong before its exit event.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await asyncio.gather(stdout_task, stderr_task, return_exceptions=True)
        self.fail_pending("exited")
        sig = signal.Signals(-returncode).name if returncode < 0 else None
        self.paused = False
        self.event(
            Kind.PROCESS_EXITED,
            pid=proc.pid,
            returncode=returncode,
            signal=sig,
            requested=self._signalled,
        )
        self._exited.set()

    def send_signal(self, sig: signal.Signals) -> None:
        if self.proc is None or not self.running:
            raise ControlFailure(f"{self.name} is not running")
        self._signalled = sig.name
        # By PID, the one we started: never a process group or a name.
        os.kill(self.proc.pid, sig)
        if sig == signal.SIGSTOP:
            self.paused = True
        elif sig in (signal.SIGCONT, signal.SIGKILL):
            self.paused = False

    def dying(self) -> bool:
        """SIGKILLed by the lab, its exit not yet seen."""
        return self.running and self._signalled == signal.SIGKILL.name

    def frozen(self) -> bool:
        """Stopped by SIGSTOP, whoever sent it (the lab, or a user's own ``kill -STOP``)."""
        if self.proc is None or not self.running:
            return False
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return self.paused  # no /proc: only what the lab itself did
        # The state letter follows the parenthesised command name, which may hold spaces.
        return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")

    async def wait_exited(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._exited.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Ask politely (shutdown), then SIGTERM, then SIGKILL; returns once it is gone."""
        proc = self.proc
        if proc is None:
            return
        if self.running:
            if self.frozen():
                self.send_signal(signal.SIGCONT)  # a frozen child can act on nothing
            with contextlib.suppress(ControlFailure):
                await self.request("shutdown", timeout=grace / 2)
            if not await self.wait_exited(grace) and self.running:
                with contextlib.suppress(ProcessLookupError, ControlFailure):
                    self.send_signal(signal.SIGCONT)  # a paused child cannot act on SIGTERM
                    self.send_signal(signal.SIGTERM)
                if not await self.wait_exited(2.0) and self.running:
                    with contextlib.suppress(ProcessLookupError, ControlFailure):
                        self.send_signal(signal.SIGKILL)
                    await self.wait_exited(5.0)
        for task in self._tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if proc.stdin is not None:
            proc.stdin.close()
