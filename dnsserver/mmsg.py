"""Batched UDP I/O for Linux: ``recvmmsg``/``sendmmsg`` from libc through ``ctypes``.

Python's socket module and uvloop make one syscall per datagram each way; on the loopback
path that syscall overhead is most of the DNS server's CPU. ``MmsgIO`` receives up to
``VLEN`` datagrams with one ``recvmmsg`` and sends up to ``VLEN`` answers with one
``sendmmsg``, into and out of buffers allocated once.

Layout, fixed at construction (so the per-datagram work is a few memoryview reads/writes):

* receive slot ``i``: ``mmsghdr`` ``i`` -> one iovec -> ``RECV_SLOT`` bytes at ``i * RECV_SLOT``
  of ``rbuf``, sender address in ``names`` at ``i * NAME_SLOT``.
* send slot ``j``: ``mmsghdr`` ``j`` -> two iovecs: the 2-byte ID (by default the ID of receive
  slot ``j``, i.e. the query's own bytes) and the answer body in ``sbuf`` at
  ``j * SEND_SLOT``; ``msg_name`` points at receive slot ``j``'s address. A batch in which
  answer ``j`` belongs to query ``j`` therefore only writes the body and its length; when a
  query gets no immediate answer the later ones are re-pointed (``point``).

Every pointer handed to the kernel points into a ``bytearray``/``mmap`` that this object keeps
for its whole life, so nothing the kernel writes to or reads from can be freed under it.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import socket
import struct
import sys
from collections.abc import Callable

VLEN = 64  # datagrams per syscall: NSD uses 100; 64 already makes the syscall cost negligible
RECV_SLOT = 65535  # any UDP datagram fits, as with uvloop (the mmap is only touched where used)
SEND_SLOT = 4096  # answers above this (EDNS sizes > 4096) are sent on their own with sendto
NAME_SLOT = 32  # room for a sockaddr_in6 (28 bytes), 8-aligned
MSG_DONTWAIT = 0x40
SOCKADDR_SIZE = {socket.AF_INET: 16, socket.AF_INET6: 28}
_FAMILY = struct.Struct("=H")  # sa_family_t, native order

Address = tuple[str, int] | tuple[str, int, int, int]


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


HDR = ctypes.sizeof(_Mmsghdr)
IOV = ctypes.sizeof(_Iovec)
WORD = ctypes.sizeof(ctypes.c_size_t)  # pointers and size_t share a size on every Linux ABI
_NAME_OFF = _Msghdr.msg_name.offset
_NAMELEN_OFF = _Msghdr.msg_namelen.offset
_LEN_OFF = _Mmsghdr.msg_len.offset


def _load_libc() -> tuple[Callable[..., int], Callable[..., int]] | str:
    """libc's ``(recvmmsg, sendmmsg)``, or why they cannot be used."""
    if not sys.platform.startswith("linux"):
        return f"not Linux ({sys.platform})"
    if ctypes.sizeof(ctypes.c_void_p) != WORD:
        return "size_t and pointers differ in size"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        recvmmsg, sendmmsg = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError) as exc:
        return f"libc has no recvmmsg/sendmmsg: {exc}"
    int_, ptr, uint = ctypes.c_int, ctypes.c_void_p, ctypes.c_uint
    recvmmsg.argtypes = [int_, ptr, uint, int_, ptr]  # the last is a struct timespec *
    recvmmsg.restype = int_
    sendmmsg.argtypes = [int_, ptr, uint, int_]
    sendmmsg.restype = int_
    return recvmmsg, sendmmsg


_LIBC = _load_libc()


def unavailable() -> str | None:
    """Why batched UDP I/O cannot be used here, or None when it can."""
    return _LIBC if isinstance(_LIBC, str) else None


def parse_sockaddr(raw: bytes | bytearray) -> Address:
    """A kernel ``sockaddr_in``/``sockaddr_in6`` as the tuple Python's socket module gives."""
    port = int.from_bytes(raw[2:4], "big")
    if _FAMILY.unpack_from(raw)[0] == socket.AF_INET6:
        flowinfo = int.from_bytes(raw[4:8], "big")
        scope = int.from_bytes(raw[24:28], sys.byteorder)
        return socket.inet_ntop(socket.AF_INET6, bytes(raw[8:24])), port, flowinfo, scope
    return socket.inet_ntop(socket.AF_INET, bytes(raw[4:8])), port


class MmsgIO:
    """Preallocated ``recvmmsg``/``sendmmsg`` buffers for one bound, non-blocking UDP socket."""

    def __init__(self, sock: socket.socket, vlen: int = VLEN) -> None:
        if isinstance(_LIBC, str):
            raise OSError(_LIBC)
        self._recvmmsg, self._sendmmsg = _LIBC
        self.sock = sock
        self.fd = sock.fileno()
        self.vlen = vlen
        namelen = SOCKADDR_SIZE[sock.family]

        # Receive side. The mmap is zero pages until the kernel writes into them.
        self.rbuf = mmap.mmap(-1, vlen * RECV_SLOT)
        self.names = bytearray(vlen * NAME_SLOT)
        self._rhdr = bytearray(vlen * HDR)
        self._riov = bytearray(vlen * IOV)
        rbuf_addr = self._addr(self.rbuf)
        names_addr = self._addr(self.names)
        riov_addr = self._addr(self._riov)
        rhdrs = (_Mmsghdr * vlen).from_buffer(self._rhdr)
        riovs = (_Iovec * vlen).from_buffer(self._riov)
        for i in range(vlen):
            riovs[i].iov_base = rbuf_addr + i * RECV_SLOT
            riovs[i].iov_len = RECV_SLOT
            hdr = rhdrs[i].msg_hdr
            hdr.msg_name = names_addr + i * NAME_SLOT
            hdr.msg_namelen = namelen
            hdr.msg_iov = riov_addr + i * IOV
            hdr.msg_iovlen = 1
        del rhdrs, riovs  # ctypes views would pin the bytearrays' exports; the memory stays
        self._rhdr_addr = self._addr(self._rhdr)
        # msg_namelen is value-result: restored from this copy before every recvmmsg.
        self._rhdr_template = bytes(self._rhdr)
        self._rlen = memoryview(self._rhdr).cast("I")
        self._rlen_first = _LEN_OFF // 4
        self._rlen_step = HDR // 4

        # Send side: the same slot j sends to receive slot j's address with its ID by default.
        self.sbuf = bytearray(vlen * SEND_SLOT)
        self._shdr = bytearray(vlen * HDR)
        self._siov = bytearray(vlen * 2 * IOV)
        sbuf_addr = self._addr(self.sbuf)
        siov_addr = self._addr(self._siov)
        shdrs = (_Mmsghdr * vlen).from_buffer(self._shdr)
        siovs = (_Iovec * (2 * vlen)).from_buffer(self._siov)
        for j in range(vlen):
            siovs[2 * j].iov_base = rbuf_addr + j * RECV_SLOT
            siovs[2 * j].iov_len = 2
            siovs[2 * j + 1].iov_base = sbuf_addr + j * SEND_SLOT
            hdr = shdrs[j].msg_hdr
            hdr.msg_name = names_addr + j * NAME_SLOT
            hdr.msg_namelen = namelen
            hdr.msg_iov = siov_addr + 2 * j * IOV
            hdr.msg_iovlen = 2
        del shdrs, siovs
        self._shdr_addr = self._addr(self._shdr)
        self._shdr_template = bytes(self._shdr)
        self._siov_template = bytes(self._siov)
        # Word views: index of (ID iovec base, ID iovec len, body len) for send slot j is
        # 4j, 4j+1, 4j+3 in ``siov``; msg_name of send slot j is ``name_index[j]`` in ``shdr``.
        self.siov = memoryview(self._siov).cast("N")
        self.shdr = memoryview(self._shdr).cast("N")
        self.name_index = [(j * HDR + _NAME_OFF) // WORD for j in range(vlen)]
        self.name_addr = [names_addr + i * NAME_SLOT for i in range(vlen)]
        self.id_addr = [rbuf_addr + i * RECV_SLOT for i in range(vlen)]
        self._namelen = namelen

    @staticmethod
    def _addr(buffer: bytearray | mmap.mmap) -> int:
        return ctypes.addressof(ctypes.c_char.from_buffer(buffer))

    # -- receive -----------------------------------------------------------------------------

    def receive(self) -> list[int]:
        """Sizes of the datagrams now in receive slots 0..n-1; empty when none are waiting."""
        self._rhdr[:] = self._rhdr_template
        count = self._recvmmsg(self.fd, self._rhdr_addr, self.vlen, MSG_DONTWAIT, None)
        if count <= 0:
            # EAGAIN: drained. Anything else (ENOMEM, a pending ICMP error): try next wake-up,
            # as uvloop's transport would; the socket stays registered.
            return []
        first = self._rlen_first
        return self._rlen[first : first + count * self._rlen_step : self._rlen_step].tolist()

    def address(self, slot: int) -> Address:
        """The sender of the datagram in receive slot ``slot``."""
        start = slot * NAME_SLOT
        return parse_sockaddr(self.names[start : start + self._namelen])

    # -- send --------------------------------------------------------------------------------

    def reset_send(self) -> None:
        """Point every send slot back at its own receive slot (before filling a batch)."""
        self._shdr[:] = self._shdr_template
        self._siov[:] = self._siov_template

    def flush(self, count: int) -> list[tuple[bytes, Address]]:
        """``sendmmsg`` send slots 0..count-1; returns what the kernel did not take.

        A partial send is continued from where it stopped; once ``sendmmsg`` fails outright
        (EAGAIN, or an error on the first message left) the rest is handed back, as
        (datagram, address), for the caller to try one by one.
        """
        start = 0
        while start < count:
            sent = self._sendmmsg(
                self.fd, self._shdr_addr + start * HDR, count - start, MSG_DONTWAIT
            )
            if sent <= 0:
                if sent < 0 and ctypes.get_errno() == errno.EINTR:
                    continue
                break
            start += sent
        return [self._unsent(j) for j in range(start, count)]

    def _unsent(self, slot: int) -> tuple[bytes, Address]:
        """The datagram and address set up in send slot ``slot``, read back from the buffers."""
        siov = self.siov
        parts = []
        for k in (4 * slot, 4 * slot + 2):
            base, size = siov[k], siov[k + 1]
            if size:
                parts.append(ctypes.string_at(base, size))
        name = ctypes.string_at(self.shdr[self.name_index[slot]], self._namelen)
        return b"".join(parts), parse_sockaddr(name)
