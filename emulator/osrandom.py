"""The operating system's randomness, read a few KiB at a time.

``random.SystemRandom`` makes one ``getrandom`` system call per draw; a registrar under load
draws for every response (the To tag) and every challenge (the nonce). This is the same
source, read in blocks: the draws stay unpredictable, and the system calls fall to one per few
hundred draws.
"""

from __future__ import annotations

import os
import random
import weakref

BLOCK = 4096
_BPF = 53  # bits in a float's mantissa, as random.random() returns
_instances: weakref.WeakSet[BlockRandom] = weakref.WeakSet()


class BlockRandom(random.SystemRandom):
    def __init__(self) -> None:
        super().__init__()
        self._block = b""
        self._used = 0
        # A forked child must not replay the bytes its parent has yet to use.
        _instances.add(self)

    def _take(self, count: int) -> bytes:
        if self._used + count > len(self._block):
            self._block, self._used = os.urandom(max(BLOCK, count)), 0
        start = self._used
        self._used += count
        return self._block[start : self._used]

    def getrandbits(self, k: int) -> int:
        if k < 0:
            raise ValueError("number of bits must be non-negative")
        size = (k + 7) // 8
        return int.from_bytes(self._take(size)) >> (size * 8 - k)

    def random(self) -> float:
        return (int.from_bytes(self._take(7)) >> 3) * 2.0**-_BPF

    def randbytes(self, n: int) -> bytes:
        return self._take(n)

    def _forget(self) -> None:
        self._block, self._used = b"", 0


def _after_fork() -> None:
    for instance in list(_instances):
        instance._forget()


os.register_at_fork(after_in_child=_after_fork)
