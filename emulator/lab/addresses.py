"""Loopback address blocks that no other process on this machine is using.

A process claims a whole ``127.X.0.0/16`` by holding an exclusive ``flock`` on the file
``127.X.lock`` in a directory every user shares (``$SIPLAB_LOCK_DIR``, default
``/tmp/siplab-loopback``), then hands out the /24s inside it (``127.X.1``, ``127.X.2``, ...)
one at a time. The kernel drops the lock when the process exits, however it exits, so a crashed
test run never blocks the next one. Two test sessions, or two xdist workers, therefore never get
the same addresses, and lab names made from a block (:attr:`Block.name`) never collide either::

    from emulator.lab.addresses import next_block

    block = next_block()        # the process's next free /24, e.g. Block(second=117, third=1)
    block.prefix                # "127.117.1"
    block.address(10)           # "127.117.1.10"
    block.name                  # "127-117-1"

Which second octets are tried: ``$SIPLAB_LOOPBACK_RANGE`` (``FIRST-LAST``, default ``100-199``).
Only processes that claim through this module are kept apart; a lab started by hand on
``127.X`` is not seen.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_LOCK_DIR",
    "DEFAULT_SECONDS",
    "Allocator",
    "Block",
    "Claim",
    "LoopbackExhausted",
    "claim",
    "next_block",
]

DEFAULT_LOCK_DIR = Path("/tmp/siplab-loopback")
DEFAULT_SECONDS = range(100, 200)
LOCK_DIR_ENV = "SIPLAB_LOCK_DIR"
RANGE_ENV = "SIPLAB_LOOPBACK_RANGE"
# 0 and 255 are skipped, so that no block holds the /16's own network or broadcast address.
_THIRDS = range(1, 255)


class LoopbackExhausted(RuntimeError):
    """Every /16 in the range is claimed by another live process."""


@dataclass(frozen=True)
class Block:
    """One loopback /24, ``127.second.third.0/24``, for one lab."""

    second: int
    third: int

    @property
    def prefix(self) -> str:
        return f"127.{self.second}.{self.third}"

    @property
    def name(self) -> str:
        """Unique on this machine while the block is held; usable in a lab name."""
        return f"127-{self.second}-{self.third}"

    def address(self, host: int) -> str:
        if not 0 <= host <= 255:
            raise ValueError(f"host {host} is not an octet (0-255)")
        return f"{self.prefix}.{host}"


class Claim:
    """``127.second.0.0/16``, ours until :meth:`release` or until the process ends."""

    def __init__(self, second: int, path: Path, fd: int) -> None:
        self.second = second
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None

    def __repr__(self) -> str:
        state = "held" if self._fd is not None else "released"
        return f"Claim(127.{self.second}.0.0/16, {state})"


def seconds_from_env() -> range:
    """The second octets to try: ``$SIPLAB_LOOPBACK_RANGE`` as ``FIRST-LAST``, or the default."""
    text = os.environ.get(RANGE_ENV, "").strip()
    if not text:
        return DEFAULT_SECONDS
    first, dash, last = text.partition("-")
    try:
        low, high = int(first), int(last if dash else first)
    except ValueError:
        raise ValueError(f"{RANGE_ENV}={text!r}: expected FIRST-LAST, e.g. 100-199") from None
    if not 0 <= low <= high <= 255:
        raise ValueError(f"{RANGE_ENV}={text!r}: need 0 <= FIRST <= LAST <= 255")
    return range(low, high + 1)


def lock_dir_from_env() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR)


def _ensure_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        return
    # Sticky and world-writable like /tmp, whatever our umask: every user's runs share it.
    path.chmod(0o1777)


def _open_existing(path: Path, flags: int) -> int | None:
    """Raises FileNotFoundError; ``None`` if we may not open the file at all."""
    try:
        return os.open(path, flags | os.O_RDWR)
    except PermissionError:
        pass
    try:
        return os.open(path, flags | os.O_RDONLY)  # flock needs no write access
    except PermissionError:
        return None


def _open_lock(path: Path) -> int | None:
    """A descriptor of the lock file, created if missing; ``None`` if we may not open it."""
    flags = os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        try:
            return _open_existing(path, flags)
        except FileNotFoundError:
            pass
        try:
            fd = os.open(path, flags | os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue  # another process created it between our two opens
        except PermissionError:
            return None
        # Lock files are never deleted (a process could then lock a file no one else sees), so
        # every user must be able to open them, whatever our umask.
        os.fchmod(fd, 0o666)
        return fd


def _holder(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip() or "?"
    except (OSError, UnicodeDecodeError):
        return "?"


def claim(seconds: range | None = None, lock_dir: Path | None = None) -> Claim:
    """Claim the first free ``127.X.0.0/16`` with X in ``seconds``.

    Raises :class:`LoopbackExhausted` when every one is held by another process.
    """
    seconds = seconds_from_env() if seconds is None else seconds
    if not seconds or seconds.step != 1 or not 0 <= seconds.start < seconds.stop <= 256:
        raise ValueError(f"{seconds!r}: second octets must be a non-empty range within 0-255")
    lock_dir = lock_dir_from_env() if lock_dir is None else lock_dir
    _ensure_dir(lock_dir)
    busy: list[str] = []
    for second in seconds:
        path = lock_dir / f"127.{second}.lock"
        fd = _open_lock(path)
        if fd is None:
            busy.append(f"127.{second} (cannot open {path.name})")
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            busy.append(f"127.{second} (pid {_holder(path)})")
            continue
        # The holder's PID, for the message above; a read-only descriptor cannot write it.
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        return Claim(second, path, fd)
    shown = busy if len(busy) <= 5 else [*busy[:5], f"... {len(busy) - 5} more"]
    raise LoopbackExhausted(
        f"no free loopback /16: 127.{seconds.start}-{seconds.stop - 1}.0.0 are all claimed by "
        f"other processes (locks in {lock_dir}): {', '.join(shown)}; wait for one to end, or "
        f"set {RANGE_ENV}=FIRST-LAST"
    )


class Allocator:
    """Hands out /24 blocks, claiming a further /16 whenever the current one is used up.

    Every claim is kept until :meth:`close`, since labs on its blocks may still be running.
    """

    def __init__(self, seconds: range | None = None, lock_dir: Path | None = None) -> None:
        self._seconds = seconds
        self._lock_dir = lock_dir
        self._claims: list[Claim] = []
        self._thirds: Iterator[int] = iter(())
        self._mutex = threading.Lock()

    @property
    def claims(self) -> list[Claim]:
        return list(self._claims)

    def next_block(self) -> Block:
        with self._mutex:
            third = next(self._thirds, None)
            if third is None:
                # The claims already held are skipped: their locks are ours and held.
                self._claims.append(claim(self._seconds, self._lock_dir))
                self._thirds = iter(_THIRDS)
                third = next(self._thirds)
            return Block(self._claims[-1].second, third)

    def close(self) -> None:
        with self._mutex:
            for held in self._claims:
                held.release()
            self._claims.clear()
            self._thirds = iter(())


_process_allocator: tuple[int, Allocator] | None = None
_process_mutex = threading.Lock()


def next_block() -> Block:
    """The next /24 of this process's own /16 (claimed on first use, held until exit)."""
    global _process_allocator
    with _process_mutex:
        # A forked child shares its parent's lock; it needs a /16 of its own.
        if _process_allocator is None or _process_allocator[0] != os.getpid():
            _process_allocator = (os.getpid(), Allocator())
        allocator = _process_allocator[1]
    return allocator.next_block()
