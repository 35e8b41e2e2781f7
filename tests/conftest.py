"""Shared fixtures.

``make_lab`` builds on the ``siplab_lab`` fixture that siplab offers its users: the lab is
stopped with ``siplab down`` after the test, and the test errors if any process it started is
still alive or anything still listens on its addresses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from dnsserver.config import DnsServerConfig
from emulator.lab.pytest_plugin import LabFactory
from emulator.lab.testing import TestLab
from tests.dnshelpers import DnsProcess
from tests.labs import fresh_lab_dict


@pytest.fixture
def make_lab(siplab_lab: LabFactory) -> Callable[..., TestLab]:
    """``make_lab(endpoints=..., registrar=...)`` starts a lab on a fresh /24 and returns it."""

    def start(*, require_registered: bool = True, **overrides: Any) -> TestLab:
        return siplab_lab(fresh_lab_dict(**overrides), require_registered=require_registered)

    return start


StartDns = Callable[..., Awaitable[DnsProcess]]


@pytest.fixture
async def start_dns() -> AsyncIterator[StartDns]:
    """``await start_dns(config)``: ``python -m dnsserver`` as a real process, ready (unless
    ``wait_ready=False``); every one started is killed by PID and reaped after the test."""
    started: list[DnsProcess] = []

    async def start(config: DnsServerConfig, *, wait_ready: bool = True) -> DnsProcess:
        process = await DnsProcess.start(config)
        started.append(process)
        if wait_ready:
            await process.wait_for("ready", timeout=10)
        return process

    try:
        yield start
    finally:
        for process in started:
            await process.stop()
