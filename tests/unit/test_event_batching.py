"""Event lines are written in batches: by a component (EventWriter on its stdout, its socket
channel) and by the lab (EventLog)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator import component
from emulator.channel import ChannelSpec, ListenChannel
from emulator.component import EventWriter
from emulator.events import Event
from emulator.lab import eventlog
from emulator.lab.addresses import next_block
from emulator.lab.eventlog import EventLog
from emulator.linebatch import FLUSH_INTERVAL, LineBatch


@contextlib.contextmanager
def stdout_pipe(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """sys.stdout is the write end of a real pipe; yields the (non-blocking) read end. Set in
    the test itself: pytest's capture replaces sys.stdout between a fixture and its test."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    writer = os.fdopen(write_fd, "w")
    monkeypatch.setattr(sys, "stdout", writer)
    try:
        yield read_fd
    finally:
        os.close(read_fd)
        with contextlib.suppress(OSError):
            writer.close()


def drain(fd: int) -> bytes:
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 1 << 20):
            data += chunk
    return data


def event(index: int) -> Event:
    return Event(1000.0 + index, "peer", "binding.added", {"aor": f"u{index}@uctest.local"})


async def test_a_burst_is_written_after_the_loop_iteration_not_per_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with stdout_pipe(monkeypatch) as read_fd:
        await _burst(read_fd)


async def _burst(stdout_pipe: int) -> None:
    writer = EventWriter()
    await writer.open()
    for index in range(100):
        writer.write(event(index))
    assert drain(stdout_pipe) == b""  # nothing written while the burst is being produced
    await asyncio.sleep(FLUSH_INTERVAL * 4)
    lines = drain(stdout_pipe).decode().splitlines()
    assert [json.loads(line)["aor"] for line in lines] == [f"u{i}@uctest.local" for i in range(100)]
    writer.write(event(100))
    await writer.close()  # what is buffered goes out on close
    assert json.loads(drain(stdout_pipe))["aor"] == "u100@uctest.local"


async def test_past_the_backlog_events_are_dropped_and_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(component, "MAX_EVENT_BACKLOG", 4096)
    with stdout_pipe(monkeypatch):
        writer = EventWriter()
        await writer.open()
        for index in range(5000):  # nobody reads: the pipe fills, then the backlog
            writer.write(event(index))
            if index % 50 == 0:
                await asyncio.sleep(FLUSH_INTERVAL * 2)
        assert 0 < writer.dropped < 5000
        await writer.close(timeout=0.5)


async def test_a_regular_file_gets_plain_batched_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (tmp_path / "events.jsonl").open("w") as handle:
        monkeypatch.setattr(sys, "stdout", handle)
        writer = EventWriter()
        await writer.open()
        writer.write(event(1))
        writer.write(event(2))
        await asyncio.sleep(FLUSH_INTERVAL * 4)
        written = (tmp_path / "events.jsonl").read_text().splitlines()
        assert [json.loads(line)["aor"] for line in written] == [
            "u1@uctest.local",
            "u2@uctest.local",
        ]
        await writer.close()


async def test_a_burst_reaches_the_sink_once_after_the_loop_iteration() -> None:
    batches: list[list[str]] = []
    batch = LineBatch(batches.append)
    for index in range(100):
        batch.add(f"line {index}")
    assert batches == []
    assert batch.size == sum(len(f"line {i}") + 1 for i in range(100))
    await asyncio.sleep(0)
    assert batches == [[f"line {i}" for i in range(100)]]
    batch.add("soon after")  # within FLUSH_INTERVAL of the last write: it waits for the timer
    await asyncio.sleep(0)
    assert len(batches) == 1
    await asyncio.sleep(FLUSH_INTERVAL * 4)
    assert batches[-1] == ["soon after"]


async def test_a_socket_channel_batches_and_keeps_what_a_departed_lab_missed() -> None:
    host = f"{next_block().prefix}.1"
    channel = ListenChannel(ChannelSpec.parse(f"listen:{host}:7070"), token=None)

    async def ignore(_line: bytes) -> None:
        return None

    await channel.start(ignore)
    try:
        reader, writer = await asyncio.open_connection(host, 7070)
        writer.write(b'{"op": "hello", "args": {}}\n')
        channel.write(event(0))  # kept until the lab attaches, then sent first
        assert json.loads(await reader.readline())["aor"] == "u0@uctest.local"
        for index in range(1, 101):
            channel.write(event(index))
        got = [json.loads(await reader.readline())["aor"] for _ in range(100)]
        assert got == [f"u{i}@uctest.local" for i in range(1, 101)]
        # The connection goes with a line still in the batch: it waits for the next lab.
        channel.write(event(101))
        assert channel._writer is not None
        channel._writer.close()
        assert await reader.read() == b""
        writer.close()
        reader, writer = await asyncio.open_connection(host, 7070)
        writer.write(b'{"op": "hello", "args": {}}\n')
        assert json.loads(await reader.readline())["aor"] == "u101@uctest.local"
        writer.close()
    finally:
        await channel.close()


async def test_the_lab_log_writes_its_file_in_batches_and_on_close(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    for index in range(50):
        log.append(event(index))
    await asyncio.sleep(0)
    assert path.read_text() == ""  # not one write per event
    await asyncio.sleep(eventlog.FILE_FLUSH_INTERVAL * 3)
    assert len(path.read_text().splitlines()) == 50
    log.append(event(50))
    await log.close()
    assert len(path.read_text().splitlines()) == 51


async def test_followers_are_woken_in_the_same_iteration_batch(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    seen: list[int] = []

    async def follow() -> None:
        async for seq, _ in log.follow(0):
            seen.append(seq)

    task = asyncio.create_task(follow())
    await asyncio.sleep(0)
    for index in range(3):
        log.append(event(index))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert seen == [0, 1, 2]  # woken once the appending iteration ends, not at a file flush
    await log.close()
    await asyncio.wait_for(task, 5)


def test_a_parsed_event_is_written_out_as_the_line_it_came_from() -> None:
    line = '{"t":1700000000,"component":"exp1","kind":"binding.added","aor":"u1@uctest.local"}'
    parsed = Event.from_json(line.encode() + b"\n")
    assert parsed.to_json() == line
    assert parsed.to_dict()["t"] == 1700000000.0
    made = Event(1.5, "exp1", "maintenance", {"on": True})
    assert json.loads(made.to_json()) == {
        "t": 1.5,
        "component": "exp1",
        "kind": "maintenance",
        "on": True,
    }
    # Only a line every reader splits the same way is kept as is.
    odd = Event.from_json('{"t":1,"component":"x","kind":"k",\r"note":"\u2028"}')
    assert "\r" not in odd.to_json()
    assert json.loads(odd.to_json())["note"] == "\u2028"
