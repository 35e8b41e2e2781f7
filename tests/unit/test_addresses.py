"""Loopback /16 claims: held with flock across processes, released by the kernel on death.

Every test uses its own lock directory (``tmp_path``), so the claims it makes never meet those
of the test session itself, which claims in the shared directory.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.lab.addresses import (
    Allocator,
    Block,
    LoopbackExhausted,
    claim,
    lock_dir_from_env,
    seconds_from_env,
)

REPO = Path(__file__).resolve().parents[2]

# Claims one /16 and reports it, then holds it until stdin closes (or the process is killed).
HOLDER = """
import sys
from emulator.lab.addresses import next_block
block = next_block()
print(block.prefix, block.name, flush=True)
sys.stdin.read()
"""


class Holder:
    """A real process that holds a claim in ``lock_dir`` until stopped or killed."""

    def __init__(self, lock_dir: Path, seconds: str) -> None:
        env = {**os.environ, "SIPLAB_LOCK_DIR": str(lock_dir), "SIPLAB_LOOPBACK_RANGE": seconds}
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # ends at the first line or at exit
        if not line:
            self.process.wait(timeout=30)
            assert self.process.stderr is not None
            raise AssertionError(f"holder failed: {self.process.stderr.read()}")
        self.prefix, self.name = line.split()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.kill()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def holders(tmp_path: Path) -> Iterator[list[Holder]]:
    """Holder processes started by the test; each is killed by PID and reaped afterwards."""
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.stop()


def test_two_processes_get_different_sixteens(tmp_path: Path, holders: list[Holder]) -> None:
    holders += [Holder(tmp_path, "150-152"), Holder(tmp_path, "150-152")]
    first, second = holders
    assert {first.prefix, second.prefix} == {"127.150.1", "127.151.1"}
    assert {first.name, second.name} == {"127-150-1", "127-151-1"}
    # This process comes third and gets what is left.
    allocator = Allocator(range(150, 153), tmp_path)
    try:
        assert allocator.next_block() == Block(152, 1)
    finally:
        allocator.close()


def test_a_killed_holder_frees_its_sixteen(tmp_path: Path, holders: list[Holder]) -> None:
    holders.append(Holder(tmp_path, "160"))
    holder = holders[0]
    assert holder.prefix == "127.160.1"
    with pytest.raises(LoopbackExhausted, match=rf"pid {holder.process.pid}\)"):
        claim(range(160, 161), tmp_path)
    holder.kill()
    taken = claim(range(160, 161), tmp_path)
    try:
        assert taken.second == 160
    finally:
        taken.release()


def test_blocks_run_through_the_sixteen_then_claim_the_next(tmp_path: Path) -> None:
    allocator = Allocator(range(170, 172), tmp_path)
    try:
        blocks = [allocator.next_block() for _ in range(256)]
        assert blocks[0] == Block(170, 1)
        assert blocks[253] == Block(170, 254)
        assert blocks[254:] == [Block(171, 1), Block(171, 2)]
        assert len(set(blocks)) == len(blocks)
        assert [held.second for held in allocator.claims] == [170, 171]
        for _ in range(252):
            allocator.next_block()
        with pytest.raises(LoopbackExhausted):
            allocator.next_block()
    finally:
        allocator.close()
    # Closed: both /16s are free again.
    again = Allocator(range(170, 172), tmp_path)
    try:
        assert again.next_block() == Block(170, 1)
    finally:
        again.close()


def test_claims_in_one_process_exclude_each_other(tmp_path: Path) -> None:
    first = claim(range(180, 182), tmp_path)
    second = claim(range(180, 182), tmp_path)
    try:
        assert (first.second, second.second) == (180, 181)
        first.release()
        third = claim(range(180, 182), tmp_path)
        assert third.second == 180
        third.release()
    finally:
        first.release()
        second.release()


def test_exhaustion_says_what_is_taken_and_what_to_do(tmp_path: Path) -> None:
    held = claim(range(190, 191), tmp_path)
    try:
        with pytest.raises(LoopbackExhausted) as caught:
            claim(range(190, 191), tmp_path)
    finally:
        held.release()
    message = str(caught.value)
    assert "127.190-190.0.0 are all claimed" in message
    assert f"locks in {tmp_path}" in message
    assert f"127.190 (pid {os.getpid()})" in message
    assert "SIPLAB_LOOPBACK_RANGE=FIRST-LAST" in message


def test_lock_dir_and_files_are_shared_with_every_user(tmp_path: Path) -> None:
    lock_dir = tmp_path / "locks"
    old = os.umask(0o077)  # a private umask must not make the shared files private
    try:
        held = claim(range(195, 196), lock_dir)
    finally:
        os.umask(old)
    held.release()
    assert stat.S_IMODE(lock_dir.stat().st_mode) == 0o1777
    assert stat.S_IMODE((lock_dir / "127.195.lock").stat().st_mode) == 0o666


def test_range_and_lock_dir_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIPLAB_LOOPBACK_RANGE", raising=False)
    monkeypatch.delenv("SIPLAB_LOCK_DIR", raising=False)
    assert seconds_from_env() == range(100, 200)
    assert lock_dir_from_env() == Path("/tmp/siplab-loopback")
    monkeypatch.setenv("SIPLAB_LOOPBACK_RANGE", "120-129")
    monkeypatch.setenv("SIPLAB_LOCK_DIR", "/somewhere/else")
    assert seconds_from_env() == range(120, 130)
    assert lock_dir_from_env() == Path("/somewhere/else")
    monkeypatch.setenv("SIPLAB_LOOPBACK_RANGE", "7")
    assert seconds_from_env() == range(7, 8)
    for bad in ("abc", "10-x", "200-100", "100-300"):
        monkeypatch.setenv("SIPLAB_LOOPBACK_RANGE", bad)
        with pytest.raises(ValueError, match="SIPLAB_LOOPBACK_RANGE="):
            seconds_from_env()


@pytest.mark.parametrize("seconds", [range(5, 5), range(250, 260), range(100, 110, 2)])
def test_bad_ranges_are_refused(tmp_path: Path, seconds: range) -> None:
    with pytest.raises(ValueError, match="non-empty range within 0-255"):
        claim(seconds, tmp_path)


def test_block_addresses() -> None:
    block = Block(117, 3)
    assert (block.prefix, block.name, block.address(10)) == (
        "127.117.3",
        "127-117-3",
        "127.117.3.10",
    )
    with pytest.raises(ValueError, match="not an octet"):
        block.address(256)
