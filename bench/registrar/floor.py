"""The least a CPython registrar can do per REGISTER: the bench's floor for what Python can reach.

    python bench/registrar/floor.py --address 127.0.0.11 [--port 5060]

Not part of siplab, and not a registrar anyone should use: it frames a message (TCP: up to the
blank line plus Content-Length), picks the Via, From, To, Call-ID, CSeq, Contact and Expires
lines by their exact header names, keeps ``{AOR: (contact, expiry)}`` in a dict and answers 200
(or 200 to OPTIONS). No validation, no compact forms, no transactions, no retransmission
handling, no events, no metrics: none of what RFC 3261 section 10.3 asks of ``registrar/``.
On uvloop, as our peer runs, with every response of one TCP read written at once.

``bench/registrar/run.py --servers ours,floor,kamailio`` runs it on the same ladder as the other
two: its rate is what one CPython process on this machine holds before it has done any of the
work a registrar does, so ours / floor is what that work costs and floor / Kamailio is where the
interpreter itself stands.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import time

import uvloop

_WANTED = {
    b"Via": "via",
    b"From": "from",
    b"To": "to",
    b"Call-ID": "call_id",
    b"CSeq": "cseq",
    b"Contact": "contact",
    b"Expires": "expires",
}


class Registrar:
    """``{AOR: (contact, expiry)}`` and the 200 for a REGISTER; OPTIONS get a bare 200."""

    def __init__(self) -> None:
        self.bindings: dict[bytes, tuple[bytes, float]] = {}
        self._tag = 0

    def answer(self, head: bytes) -> bytes | None:
        lines = head.split(b"\r\n")
        method = lines[0].split(b" ", 1)[0]
        if method not in (b"REGISTER", b"OPTIONS"):
            return None
        found: dict[str, bytes] = {}
        vias: list[bytes] = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            key = _WANTED.get(name)
            if key == "via":
                vias.append(line)
            elif key is not None:
                found[key] = value.strip()
        to = found.get("to", b"")
        if b";tag=" not in to:
            self._tag += 1
            to += b";tag=f%d" % self._tag
        out = [b"SIP/2.0 200 OK", *vias, b"From: " + found.get("from", b""), b"To: " + to]
        out += [b"Call-ID: " + found.get("call_id", b""), b"CSeq: " + found.get("cseq", b"")]
        if method == b"REGISTER" and "contact" in found:
            expires = int(found.get("expires", b"3600"))
            aor = to[to.find(b"<") + 1 : to.find(b">")]
            self.bindings[aor] = (found["contact"], time.monotonic() + expires)
            out.append(b"Contact: %s;expires=%d" % (found["contact"], expires))
        out.append(b"Content-Length: 0\r\n\r\n")
        return b"\r\n".join(out)


class Datagrams(asyncio.DatagramProtocol):
    def __init__(self, registrar: Registrar) -> None:
        self._registrar = registrar
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        head = data.partition(b"\r\n\r\n")[0]
        response = self._registrar.answer(head)
        if response is not None and self._transport is not None:
            self._transport.sendto(response, addr)


class Stream(asyncio.Protocol):
    def __init__(self, registrar: Registrar) -> None:
        self._registrar = registrar
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data
        out: list[bytes] = []
        start = 0
        while True:
            end = buffer.find(b"\r\n\r\n", start)
            if end < 0:
                break
            head = buffer[start:end]
            length = 0
            at = head.find(b"\r\nContent-Length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            if end + 4 + length > len(buffer):
                break
            response = self._registrar.answer(head.lstrip(b"\r\n"))
            if response is not None:
                out.append(response)
            start = end + 4 + length
        self._buffer = buffer[start:]
        if out and self._transport is not None:
            self._transport.write(b"".join(out))


async def serve(address: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    registrar = Registrar()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)  # as our peer's, and Kamailio's
    udp.bind((address, port))
    datagrams, _ = await loop.create_datagram_endpoint(lambda: Datagrams(registrar), sock=udp)
    stream = await loop.create_server(lambda: Stream(registrar), address, port)
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    await stopped.wait()
    datagrams.close()
    stream.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", required=True, help="a loopback address to listen on")
    parser.add_argument("--port", type=int, default=5060)
    args = parser.parse_args()
    uvloop.run(serve(args.address, args.port))


if __name__ == "__main__":
    main()
