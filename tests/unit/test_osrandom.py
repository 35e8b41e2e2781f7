"""BlockRandom: the OS's randomness read in blocks, with the draws of random.SystemRandom."""

from __future__ import annotations

import os

import pytest

from emulator import osrandom
from emulator.osrandom import BLOCK, BlockRandom


def test_draws_are_in_range_and_vary() -> None:
    rng = BlockRandom()
    for bits in (1, 7, 8, 9, 48, 64, 200):
        draws = {rng.getrandbits(bits) for _ in range(50)}
        assert all(0 <= d < 2**bits for d in draws)
        assert len(draws) > 1
    assert rng.getrandbits(0) == 0
    floats = [rng.random() for _ in range(1000)]
    assert all(0.0 <= f < 1.0 for f in floats)
    assert 0.4 < sum(floats) / len(floats) < 0.6
    assert {rng.randint(1, 6) for _ in range(500)} == {1, 2, 3, 4, 5, 6}
    assert len(rng.randbytes(BLOCK * 2 + 3)) == BLOCK * 2 + 3


def test_the_os_is_read_once_per_block(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    real = os.urandom

    def counting(n: int) -> bytes:
        reads.append(n)
        return real(n)

    monkeypatch.setattr(osrandom.os, "urandom", counting)
    rng = BlockRandom()
    for _ in range(BLOCK // 6):
        rng.getrandbits(48)
    assert reads == [BLOCK]


def test_a_forked_child_does_not_replay_its_parents_block() -> None:
    rng = BlockRandom()
    rng.getrandbits(8)  # a block is read, most of it still to use
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next draw, to the parent
        try:
            os.write(write_end, rng.randbytes(32))
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        child = os.read(read_end, 64)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert len(child) == 32
    assert child != rng.randbytes(32)
