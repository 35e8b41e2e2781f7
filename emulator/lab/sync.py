"""``SyncLab``: the ``Lab`` API for scripts, the ``siplab`` CLI and pytest — every call blocks
and every call is bounded. It needs nothing heavier than the standard library's ``http.client``,
so a CLI command built on it starts quickly.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from emulator.lab.client import ControlError, LabClient
from emulator.lab.launch import launch, stop_pid, wait_pid_exit
from emulator.lab.ops import (
    DOWN_TIMEOUT,
    Event,
    LabOps,
    LabTimeout,
    Predicate,
    load_source,
    seen_line,
    timeout_message,
)
from emulator.lab.state import LabHandle, pid_alive, remove_handle, wait_remote_stopped


class SyncLab(LabOps):
    """The ``Lab`` API for scripts, the CLI and pytest: every call blocks, every call is
    bounded."""

    def __init__(self, handle: LabHandle, *, owned: bool = False, timeout: float = 30.0) -> None:
        self.handle = handle
        self.client = LabClient(handle, timeout)
        self._owned = owned

    @classmethod
    def up(
        cls,
        source: Any = None,
        *,
        root: Path | None = None,
        timeout: float = 30.0,
        base: Path | None = None,
    ) -> Self:
        """Start a lab in the background and wait until every endpoint settled."""
        lab = cls(launch(load_source(source, base), timeout=timeout, root=root), owned=True)
        lab.wait_settled(timeout)
        return lab

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        then: Callable[[Any], Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        result = self.client.call(method, path, body, timeout)
        return then(result) if then is not None else result

    def events(self, since: int = 0) -> list[Event]:
        found = list(self.client.stream_events(since=since))
        if found:
            self._next_seq = max(self._next_seq, int(found[-1]["seq"]) + 1)
        return found

    def until(
        self,
        predicate: Predicate,
        *,
        timeout: float = 30.0,
        since: int | None = None,
        what: str = "",
    ) -> Event:
        """The first event from ``since`` (default: the next one) that satisfies
        ``predicate``; :class:`LabTimeout` if none comes within ``timeout`` seconds."""
        start = self._next_seq if since is None else since
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        for event in self.client.stream_events(since=start, follow=True, deadline=deadline):
            self._next_seq = max(self._next_seq, int(event["seq"]) + 1)
            if predicate(event):
                return event
            seen.append(seen_line(event))
        raise LabTimeout(timeout_message(what or "matching event", timeout, seen))

    def down(self, timeout: float = DOWN_TIMEOUT) -> None:
        """Stop the lab and every process it started (by its supervisor's PID if need be)."""
        with contextlib.suppress(ControlError):  # gone already: the PID below still works
            self.client.call("POST", "/shutdown")
        await_stopped(self.handle, timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._owned and pid_alive(self.handle.pid):
            self.down()


def await_stopped(handle: LabHandle, timeout: float) -> None:
    """Wait for the supervisor to go; past ``timeout``, stop it by its PID (a remote one, in a
    container, has no PID here: its owner, e.g. ``docker compose``, stops what is left)."""
    if handle.remote:
        if not wait_remote_stopped(handle, timeout):
            raise ControlError(f"lab {handle.name!r} ({handle.control}) did not stop")
        return
    if not wait_pid_exit(handle.pid, timeout) and not stop_pid(handle.pid, 5.0):
        raise ControlError(f"lab {handle.name!r} (pid {handle.pid}) did not stop")
    remove_handle(handle.name, Path(handle.run_dir).parent)
