"""One supervised component process: start it, read its events, send it control requests, end it.

The child runs ``python -m <module> --config-json ... --control stdio`` in its own session, so a
Ctrl-C in the user's terminal reaches only the supervisor, which then stops every child in order.
If the supervisor itself dies, the child sees its stdin close and exits on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from emulator.events import Event

STDERR_TAIL = 20
STOP_GRACE = 5.0


class ControlFailure(Exception):
    """A control request was refused, failed, or got no answer in time."""


class ComponentProcess:
    def __init__(
        self,
        name: str,
        module: str,
        config_json: str,
        emit: Callable[[Event], None],
    ) -> None:
        self.name = name
        self.module = module
        self._config_json = config_json
        self._emit = emit
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self._replies: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._exited = asyncio.Event()
        self._signalled: str | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and not self._exited.is_set()

    def _event(self, kind: str, **fields: Any) -> None:
        self._emit(Event(time.time(), self.name, kind, fields))

    async def start(self) -> None:
        if self.running:
            raise ControlFailure(f"{self.name} is already running (pid {self.pid})")
        self._exited = asyncio.Event()
        self._signalled = None
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
        self._event("process.started", pid=self.proc.pid, module=self.module)
        proc = self.proc
        stdout_task = asyncio.create_task(self._read_stdout(proc))
        stderr_task = asyncio.create_task(self._read_stderr(proc))
        self._tasks = [stdout_task, stderr_task]
        self._tasks.append(asyncio.create_task(self._wait(proc, stdout_task, stderr_task)))

    async def _read_stdout(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await _readline(proc.stdout):
            try:
                event = Event.from_json(line)
            except ValueError:
                self._event("component.output", line=line.decode(errors="replace").rstrip())
                continue
            if event.kind == "control.reply":
                future = self._replies.pop(event.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(event)
                continue
            self._emit(event)

    async def _read_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while line := await _readline(proc.stderr):
            text = line.decode(errors="replace").rstrip()
            self.stderr_tail.append(text)
            self._event("component.stderr", line=text)

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
        for future in self._replies.values():
            if not future.done():
                future.set_exception(ControlFailure(f"{self.name} exited"))
        self._replies.clear()
        sig = signal.Signals(-returncode).name if returncode < 0 else None
        self._event(
            "process.exited",
            pid=proc.pid,
            returncode=returncode,
            signal=sig,
            requested=self._signalled,
        )
        self._exited.set()

    async def request(
        self, op: str, args: dict[str, Any] | None = None, timeout: float = 5.0
    ) -> Any:
        proc = self.proc
        if proc is None or not self.running or proc.stdin is None:
            raise ControlFailure(f"{self.name} is not running")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = future
        line = json.dumps({"id": request_id, "op": op, "args": args or {}}) + "\n"
        try:
            proc.stdin.write(line.encode())
            await proc.stdin.drain()
            async with asyncio.timeout(timeout):
                reply: Event = await future
        except (ConnectionError, BrokenPipeError):
            raise ControlFailure(f"{self.name} is not reading control requests") from None
        except TimeoutError:
            raise ControlFailure(
                f"{self.name} did not answer {op!r} within {timeout:g} s"
            ) from None
        finally:
            self._replies.pop(request_id, None)
        if not reply.get("ok"):
            raise ControlFailure(f"{self.name}: {reply.get('error')}")
        return reply.get("result")

    def send_signal(self, sig: signal.Signals) -> None:
        if self.proc is None or not self.running:
            raise ControlFailure(f"{self.name} is not running")
        self._signalled = sig.name
        # By PID, the one we started: never a process group or a name.
        os.kill(self.proc.pid, sig)

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


async def _readline(stream: asyncio.StreamReader) -> bytes:
    try:
        return await stream.readline()
    except ValueError:
        # A line over the stream limit: skip to the next newline and report it as garbage.
        with contextlib.suppress(asyncio.LimitOverrunError, ValueError):
            await stream.readuntil(b"\n")
        return b"(line too long)\n"
