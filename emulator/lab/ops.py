"""Every operation of the ``Lab`` API, defined once for its synchronous and asynchronous forms.

``_call`` returns the decoded answer (``SyncLab``) or an awaitable of it (``Lab``); each
operation only says which request it is and how to read the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from emulator.kinds import Kind
from emulator.lab.state import LabHandle, find_lab

if TYPE_CHECKING:
    from emulator.lab.model import LabConfig

Event = dict[str, Any]
Predicate = Callable[[Event], bool]

# What undoes each fault, for experiments that restore the lab between runs.
RESTORE = {
    "kill": "start",
    "stop": "start",
    "pause": "resume",
    "partition": "heal",
    "impair": "heal",
    "maintenance": "maintenance",
}
DOWN_TIMEOUT = 30.0


class LabTimeout(TimeoutError):
    """An awaited event did not come; ``str()`` says what was awaited and what was seen."""


def load_source(source: Any, base: Path | None = None) -> LabConfig:
    """A lab from a file path, a lab-file mapping, a ``LabConfig``, or None (the seed's)."""
    from emulator.lab.model import LabConfig, default_lab, load_lab, parse_lab

    if source is None:
        return default_lab()
    if isinstance(source, LabConfig):
        return source
    if isinstance(source, dict):
        return parse_lab(dict(source), "lab", base)
    return load_lab(Path(source))


class LabOps:
    """Every lab operation, written once; ``then`` post-processes the decoded JSON."""

    handle: LabHandle
    _next_seq: int = 0

    def __init__(self, handle: LabHandle, *, owned: bool = False, timeout: float = 30.0) -> None:
        raise NotImplementedError

    @classmethod
    def attach(cls, name: str | None = None, *, root: Path | None = None) -> Self:
        """A lab that is already running (the only one, or the one named)."""
        return cls(find_lab(name, root))

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        then: Callable[[Any], Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return self.handle.name

    @property
    def run_dir(self) -> Path:
        return Path(self.handle.run_dir)

    @property
    def next_seq(self) -> int:
        """The sequence number of the next event, as of the last answer from the lab."""
        return self._next_seq

    def _seen(self, result: Any) -> Any:
        if isinstance(result, dict) and isinstance(result.get("seq"), int):
            self._next_seq = max(self._next_seq, result["seq"])
        return result

    # -- looking ---------------------------------------------------------------------------

    def status(self) -> Any:
        return self._call("GET", "/status", then=self._seen)

    def wait_settled(self, timeout: float = 30.0) -> Any:
        """True once every endpoint is Registered or Failed (False if ``timeout`` passed)."""
        return self._call(
            "GET",
            f"/wait?until=settled&timeout={timeout:g}",
            then=lambda status: bool(self._seen(status)["settled"]),
            timeout=timeout + 10,
        )

    def op(self, component: str, op: str, **args: Any) -> Any:
        """A component's own control op (e.g. the DNS server's ``add``); returns its result."""
        return self._call(
            "POST", f"/components/{component}/ops/{op}", args, then=lambda r: r["result"]
        )

    def bindings(self, peer: str) -> Any:
        return self.op(peer, "status")

    def dns(self, op: str, **args: Any) -> Any:
        """Change the lab's DNS: ``add``, ``remove``, ``replace``, ``set_ttl``, ``fault``."""
        return self.op("dns", op, **args)

    def mark(self, **fields: Any) -> Any:
        return self._call("POST", "/mark", fields, then=self._mark_seen)

    def _mark_seen(self, result: Any) -> None:
        self._next_seq = max(self._next_seq, int(result["seq"]) + 1)

    # -- faults ----------------------------------------------------------------------------

    def apply(self, fault: str, target: str, **args: Any) -> Any:
        """Apply a fault by name (kill, stop, start, restart, pause, resume, partition, heal,
        impair, maintenance); every one is recorded as a ``fault.applied`` event."""
        body = {"target": target, **{k: v for k, v in args.items() if v is not None}}
        return self._call("POST", f"/faults/{fault}", body, then=self._mark_seen_fault)

    def _mark_seen_fault(self, result: Any) -> Any:
        self._next_seq = max(self._next_seq, int(result["seq"]) + 1)
        return result

    def restore(self, fault: str, target: str) -> Any:
        """Undo ``fault`` on ``target`` (start after kill/stop, resume, heal, maintenance off)."""
        if fault not in RESTORE:
            raise ValueError(f"nothing restores {fault!r}; restorable: {', '.join(RESTORE)}")
        extra = {"on": False} if fault == "maintenance" else {}
        return self.apply(RESTORE[fault], target, **extra)

    def kill(self, name: str) -> Any:
        """SIGKILL the component's process: the kernel resets its connections."""
        return self.apply("kill", name)

    def stop(self, name: str) -> Any:
        """Graceful stop: it closes its connections and listeners itself."""
        return self.apply("stop", name)

    def start(self, name: str) -> Any:
        return self.apply("start", name)

    def restart(self, name: str) -> Any:
        return self.apply("restart", name)

    def pause(self, name: str) -> Any:
        """SIGSTOP: frozen, its sockets open — silence, not a reset."""
        return self.apply("pause", name)

    def resume(self, name: str) -> Any:
        return self.apply("resume", name)

    def partition(
        self,
        name: str,
        *,
        endpoints: Iterable[str] | None = None,
        remotes: Iterable[str] | None = None,
        transports: Iterable[str] | None = None,
    ) -> Any:
        """Silence both ways while sockets stay open; towards some endpoints or transports only
        when given."""
        return self.apply(
            "partition", name, **_lists(endpoints=endpoints, remotes=remotes, transports=transports)
        )

    def heal(self, name: str) -> Any:
        """Lift partition and impairment."""
        return self.apply("heal", name)

    def impair(
        self,
        name: str,
        *,
        delay: float = 0.0,
        jitter: float = 0.0,
        loss: float = 0.0,
        direction: str = "both",
        endpoints: Iterable[str] | None = None,
        remotes: Iterable[str] | None = None,
        transports: Iterable[str] | None = None,
        seed: int | None = None,
    ) -> Any:
        """Delay (± jitter) and loss on the component's SIP or DNS traffic, per direction."""
        return self.apply(
            "impair",
            name,
            delay=delay,
            jitter=jitter,
            loss=loss,
            direction=direction,
            seed=seed,
            **_lists(endpoints=endpoints, remotes=remotes, transports=transports),
        )

    def maintenance(self, name: str, on: bool = True) -> Any:
        """Maintenance mode: REGISTERs get 503 + Warning 382; bindings kept until they expire."""
        return self.apply("maintenance", name, on=on)

    # -- helpers on a status ------------------------------------------------------------------

    @staticmethod
    def peer_at(status: dict[str, Any], registrar: str | None) -> str | None:
        """The name of the peer at ``ip:port`` in a status (None for None)."""
        if registrar is None:
            return None
        host = registrar.rsplit(":", 1)[0].strip("[]")
        for peer in status["peers"]:
            if peer["address"] == host:
                return str(peer["name"])
        return None


def _lists(**values: Iterable[str] | None) -> dict[str, list[str]]:
    return {k: list(v) for k, v in values.items() if v is not None}


def seen_line(event: Event) -> str:
    """One event as a wait that timed out lists it: what a reader needs to see why (the text
    of a component's stderr line, such as a traceback, and the state an endpoint reached)."""
    line = f"{event['component']} {event['kind']}"
    detail = event.get("line") if event["kind"] == Kind.COMPONENT_STDERR else event.get("state")
    return f"{line}: {detail}" if detail is not None else line


def timeout_message(what: str, timeout: float, seen: list[str]) -> str:
    tail = "\n  ".join(seen[-25:])
    return f"no {what} within {timeout:g} s; last events:\n  {tail}"
