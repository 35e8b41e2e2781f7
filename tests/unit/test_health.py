"""The lab's health check: a component still starting is not pinged (it does not read its
channel before it is ready), so a restart that takes longer than PING_TIMEOUT is not reported
unresponsive; once ready, silence is."""

from __future__ import annotations

import asyncio
import json

from emulator.events import Event
from emulator.kinds import Kind
from emulator.lab.link import ComponentLink
from emulator.lab.model import parse_lab
from emulator.lab.supervisor import Supervisor
from tests.labs import allocate_prefix, lab_dict

BOUND = 10.0  # seconds any one wait below may take


class ChannelLink(ComponentLink):
    """A running component's channel: records each request line; answers it when ``answers``."""

    def __init__(self, name: str, supervisor: Supervisor, answers: bool) -> None:
        super().__init__(name, supervisor.log.append)
        self.answers = answers
        self.pings = 0
        self.pinged = asyncio.Event()

    @property
    def running(self) -> bool:
        return True

    def _send_line(self, line: bytes) -> None:
        self.pings += 1
        self.pinged.set()
        if self.answers:
            request = json.loads(line)
            reply = {"t": 0, "component": self.name, "kind": "control.reply"}
            reply |= {"id": request["id"], "ok": True, "result": {}}
            asyncio.get_running_loop().call_soon(self.feed, json.dumps(reply).encode() + b"\n")

    async def next_ping(self) -> None:
        self.pinged.clear()
        async with asyncio.timeout(BOUND):
            await self.pinged.wait()


async def test_a_starting_component_is_not_pinged_and_a_ready_silent_one_is_unresponsive() -> None:
    supervisor = Supervisor(parse_lab(lab_dict(allocate_prefix(), "health"), "t"))
    answering = ChannelLink("exp1", supervisor, answers=True)
    starting = ChannelLink("exp2", supervisor, answers=False)
    supervisor.components = {"exp1": answering, "exp2": starting}
    for link in (answering, starting):
        supervisor.log.append(Event(0, link.name, Kind.PROCESS_STARTED, {"pid": 1}))
    supervisor.log.append(Event(0, "exp1", Kind.READY, {}))
    seq = supervisor.log.next_seq
    watch = asyncio.create_task(supervisor._watch_health())
    try:
        # Two rounds of the check pinged exp1; in both, exp2 (still starting) was left alone.
        await answering.next_ping()
        await answering.next_ping()
        assert starting.pings == 0
        assert supervisor.view.peers["exp2"].state == "starting"

        supervisor.log.append(Event(0, "exp2", Kind.READY, {}))
        await starting.next_ping()
        async with asyncio.timeout(BOUND):
            async for _, event in supervisor.log.follow(seq):
                if event.kind == Kind.COMPONENT_UNRESPONSIVE:
                    break
        assert event.component == "exp2"
        assert event.get("on") is True
        assert supervisor.view.peers["exp2"].state == "unresponsive"
        assert supervisor.view.peers["exp1"].state == "active"
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
