"""How long the stream framer takes, at growing sizes: the cost per unit should stay flat.

    .venv/bin/python bench/sip/framing.py             # a few seconds
    .venv/bin/python bench/sip/framing.py --repeat 9

Two cases, the ones a quadratic framer would be slow at:

* one header section of N bytes fed one byte at a time (a slow or hostile peer): the search for
  the blank line must resume where it stopped, not rescan the buffer;
* N messages arriving in one read: each is cut out once, and the buffer compacted once.

Prints the best of ``--repeat`` runs for each size, and the cost per byte or per message. The
unit tests check the same two cases by counting the bytes searched, not by timing.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from emulator.sip.framing import StreamFramer
from emulator.sip.message import Limits


def request(cseq: int, pad: int = 0) -> bytes:
    extra = f"X-Pad: {'p' * pad}\r\n" if pad else ""
    return (
        f"REGISTER sip:uctest.local SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.101:5060;branch=z9hG4bK{cseq}\r\n"
        f"From: <sip:1001@uctest.local>;tag=t\r\n"
        f"To: <sip:1001@uctest.local>\r\n"
        f"Call-ID: c@h\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"{extra}"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def best_of(repeat: int, run: Callable[[], int], expected: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        framed = run()
        times.append(time.perf_counter() - started)
        if framed != expected:
            raise SystemExit(f"framed {framed} items, expected {expected}")
    return min(times)


def byte_at_a_time(size: int, repeat: int) -> tuple[int, float]:
    head = request(1, pad=size)
    limits = Limits(max_header_bytes=len(head) + 1, max_message_bytes=len(head) + 1)

    def run() -> int:
        framer = StreamFramer(limits)
        return sum(len(framer.feed(head[i : i + 1])) for i in range(len(head)))

    return len(head), best_of(repeat, run, 1)


def one_read(count: int, repeat: int) -> float:
    data = b"".join(request(i) for i in range(count))
    return best_of(repeat, lambda: len(StreamFramer().feed(data)), count)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5, help="runs per size; the best counts")
    args = parser.parse_args(argv)
    print("header fed one byte at a time")
    print(f"  {'bytes':>8}  {'seconds':>9}  {'us/byte':>8}")
    for pad in (4_000, 16_000, 60_000):
        size, seconds = byte_at_a_time(pad, args.repeat)
        print(f"  {size:>8}  {seconds:>9.4f}  {seconds / size * 1e6:>8.3f}")
    print("messages in one read")
    print(f"  {'messages':>8}  {'seconds':>9}  {'us/msg':>8}")
    for count in (1_000, 3_000, 10_000):
        seconds = one_read(count, args.repeat)
        print(f"  {count:>8}  {seconds:>9.4f}  {seconds / count * 1e6:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
