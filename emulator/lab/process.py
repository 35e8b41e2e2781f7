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
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import cast

from emulator.events import Event
from emulator.kinds import Kind
from emulator.lab.link import ComponentLink, ControlFailure

STDERR_TAIL = 20
STOP_GRACE = 5.0
PIPE_GRACE = 2.0
MAX_STDERR_LINE = 1 << 16


class _ChildProtocol(asyncio.SubprocessProtocol):
    """Bytes from the child's pipes straight into the link: no reader task, no stream buffer,
    which is most of what an event costs the lab when a peer is under load."""

    def __init__(self, owner: ComponentProcess) -> None:
        self._owner = owner
        self._stderr = b""
        self._open_pipes = {1, 2}
        self._returncode: int | None = None
        self._grace: asyncio.TimerHandle | None = None

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self._owner.feed(data)
            return
        lines = (self._stderr + data).split(b"\n")
        self._stderr = lines.pop()[-MAX_STDERR_LINE:]
        for line in lines:
            self._owner.stderr_line(line)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open_pipes.discard(fd)
        self._maybe_done()

    def process_exited(self) -> None:
        transport = self._owner.transport
        assert transport is not None
        self._returncode = transport.get_returncode()
        # Events the child wrote just before it ended belong before its exit event: wait for
        # its pipes to drain, but not for ever (a grandchild could hold them open).
        self._grace = asyncio.get_running_loop().call_later(PIPE_GRACE, self._done)
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self._returncode is not None and not self._open_pipes:
            self._done()

    def _done(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        if self._returncode is None:
            return
        returncode, self._returncode = self._returncode, None
        self._owner.feed(b"\n")  # a last line without its newline still counts
        if self._stderr:
            self._owner.stderr_line(self._stderr)
            self._stderr = b""
        self._owner.exited(returncode)


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
        self.transport: asyncio.SubprocessTransport | None = None
        self._pid: int | None = None
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self._exited = asyncio.Event()
        self._signalled: str | None = None
        self.paused = False

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def running(self) -> bool:
        return self.transport is not None and not self._exited.is_set()

    async def start(self) -> None:
        if self.running:
            raise ControlFailure(f"{self.name} is already running (pid {self.pid})")
        self._exited = asyncio.Event()
        self._signalled = None
        self.paused = False
        self.stderr_tail.clear()
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.subprocess_exec(
            lambda: _ChildProtocol(self),
            sys.executable,
            "-m",
            self.module,
            "--config-json",
            self._config_json,
            "--control",
            "stdio",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._pid = self.transport.get_pid()
        self.event(Kind.PROCESS_STARTED, pid=self._pid, module=self.module)

    def _send_line(self, line: bytes) -> None:
        stdin = self.transport.get_pipe_transport(0) if self.transport is not None else None
        if stdin is None or stdin.is_closing():
            raise ConnectionError("stdin closed")
        cast(asyncio.WriteTransport, stdin).write(line)

    def stderr_line(self, line: bytes) -> None:
        text = line.decode(errors="replace").rstrip()
        self.stderr_tail.append(text)
        self.event(Kind.COMPONENT_STDERR, line=text)

    def exited(self, returncode: int) -> None:
        self.fail_pending("exited")
        sig = signal.Signals(-returncode).name if returncode < 0 else None
        self.paused = False
        self.event(
            Kind.PROCESS_EXITED,
            pid=self._pid,
            returncode=returncode,
            signal=sig,
            requested=self._signalled,
        )
        self._exited.set()
        if self.transport is not None:
            self.transport.close()  # its pipes are done; free them now, not at the next start

    def send_signal(self, sig: signal.Signals) -> None:
        if self._pid is None or not self.running:
            raise ControlFailure(f"{self.name} is not running")
        self._signalled = sig.name
        # By PID, the one we started: never a process group or a name.
        os.kill(self._pid, sig)
        if sig == signal.SIGSTOP:
            self.paused = True
        elif sig in (signal.SIGCONT, signal.SIGKILL):
            self.paused = False

    def dying(self) -> bool:
        """SIGKILLed by the lab, its exit not yet seen."""
        return self.running and self._signalled == signal.SIGKILL.name

    def frozen(self) -> bool:
        """Stopped by SIGSTOP, whoever sent it (the lab, or a user's own ``kill -STOP``)."""
        if self._pid is None or not self.running:
            return False
        try:
            stat = Path(f"/proc/{self._pid}/stat").read_text()
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
        transport = self.transport
        if transport is None:
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
        transport.close()
