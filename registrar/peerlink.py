"""The peer link: the asyncio shell around :class:`registrar.cluster.ClusterView`.

Every peer listens on its cluster port; of each pair, the peer whose name sorts first dials
the other (one connection per pair) and dials again after a loss, with backoff. Messages are
newline-delimited JSON: each side sends ``hello`` (its name and snapshot) first, then an
``aor`` update (that AOR's bindings as they are) when an AOR's bindings change, and a
``ping`` every heartbeat. A link
silent for three heartbeats (a frozen peer keeps its sockets open) is closed and counts as
down. A peer that sends something that is not a cluster message loses its link.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

from registrar.cluster import ClusterProtocolError, ClusterView
from registrar.config import ClusterPeer, RegistrarConfig

# A hello carries every binding the sender knows: one line of up to this many bytes.
LINE_LIMIT = 64 * 1024 * 1024
STOP_TIMEOUT = 2.0
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 2.0
MISSED_HEARTBEATS = 3


def _line(message: dict[str, object]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class _Conn:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.peer: str | None = None

    def send(self, message: dict[str, object]) -> None:
        self.write(_line(message))

    def write(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)


class PeerLink:
    def __init__(
        self, view: ClusterView, config: RegistrarConfig, after_receive: Callable[[], None]
    ) -> None:
        self.view = view
        self.config = config
        self._after_receive = after_receive
        self._loop = asyncio.get_running_loop()
        self._conns: set[_Conn] = set()
        self._by_peer: dict[str, _Conn] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._server: asyncio.Server | None = None
        self._heartbeat = config.cluster_heartbeat

    async def start(self) -> None:
        assert self.config.cluster_port is not None
        self._server = await asyncio.start_server(
            self._accepted, str(self.config.address), self.config.cluster_port, limit=LINE_LIMIT
        )
        for peer in self.config.cluster:
            if self.config.name < peer.name:
                self._spawn(self._dial(peer))
        self._spawn(self._pinger())

    async def stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._conns):
            conn.writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            # Bounded: a connection accepted but not yet served would hold it open for ever,
            # and an orphaned peer (its lab gone) must still get to exit.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_TIMEOUT):
                    await self._server.wait_closed()

    def broadcast(self) -> None:
        """Send the view's pending updates on every open link, each encoded once."""
        if not self._conns:
            self.view.drop_outgoing()  # a link that opens starts with the whole snapshot
            return
        messages = self.view.pop_outgoing(self._loop.time())
        if not messages:
            return
        data = b"".join(_line(message) for message in messages)
        for conn in self._conns:
            conn.write(data)

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await self._run(reader, writer)

    async def _dial(self, peer: ClusterPeer) -> None:
        delay = BACKOFF_FIRST
        while not self._stopping:
            try:
                reader, writer = await asyncio.open_connection(
                    str(peer.address), peer.port, limit=LINE_LIMIT
                )
            except OSError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            delay = BACKOFF_FIRST
            await self._run(reader, writer)
            await asyncio.sleep(BACKOFF_FIRST)

    async def _pinger(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat)
            for conn in self._conns:
                conn.send({"op": "ping"})

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(writer)
        # Our hello first, then every later update: the snapshot and the stream that follows
        # it leave no gap, as nothing else runs in between on this loop.
        conn.send(self.view.hello(self._loop.time()))
        self._conns.add(conn)
        reason = "closed"
        try:
            while True:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that races with the line arriving, and a stopping peer would dial for ever.
                async with asyncio.timeout(self._heartbeat * MISSED_HEARTBEATS):
                    line = await reader.readline()
                if not line:
                    break
                self._receive(conn, line)
        except TimeoutError:
            reason = "silent"
        except (ClusterProtocolError, ValueError) as exc:
            reason = f"bad message: {exc}"
        except OSError as exc:
            reason = exc.strerror or str(exc)
        finally:
            self._conns.discard(conn)
            writer.close()
            if conn.peer is not None and self._by_peer.get(conn.peer) is conn:
                del self._by_peer[conn.peer]
                self.view.peer_down(conn.peer, reason)
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _receive(self, conn: _Conn, line: bytes) -> None:
        message = json.loads(line)
        peer = self.view.receive(conn.peer, message, self._loop.time())
        if conn.peer is None:
            conn.peer = peer
            old = self._by_peer.get(peer)
            if old is not None and old is not conn:
                # The peer came back on a new link before we noticed the old one die.
                old.writer.close()
            self._by_peer[peer] = conn
        self._after_receive()
        self.broadcast()
