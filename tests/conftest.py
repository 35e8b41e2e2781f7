"""Shared fixtures, and a temporary directory of the session's own.

``make_lab`` builds on the ``siplab_lab`` fixture that siplab offers its users: the lab is
stopped with ``siplab down`` after the test, and the test errors if any process it started is
still alive or anything still listens on its addresses.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dnsserver.config import DnsServerConfig
from emulator import compiled
from emulator.lab.pytest_plugin import LabFactory
from emulator.lab.testing import TestLab
from tests.dnshelpers import DnsProcess
from tests.labs import fresh_lab_dict

_SESSION_TEMP = pytest.StashKey[Path]()


@pytest.hookimpl(tryfirst=True)  # before pytest's tmpdir plugin reads --basetemp
def pytest_configure(config: pytest.Config) -> None:
    """Unless ``--basetemp`` is given, the session's temporary files go under a fresh directory
    of its own, removed when the session ends.

    pytest's default (numbered ``/tmp/pytest-of-USER/pytest-N``, shared by every session of the
    user) lets a session that ends remove the directories of another that is still running
    whenever they are not locked, which is the case with ``tmp_path_retention_policy = "none"``.
    xdist workers are handed ``--basetemp`` by the controller (``<basetemp>/popen-gwN``), so
    only the controller, or a session without xdist, gets here with it unset.
    """
    stale = compiled.stale()
    if stale:
        pytest.exit(compiled.stale_message(stale), returncode=2)
    if config.option.basetemp is not None or hasattr(config, "workerinput"):
        return
    root = Path(tempfile.mkdtemp(prefix="siplab-pytest-"))
    config.stash[_SESSION_TEMP] = root
    # A subdirectory: pytest empties and recreates a given basetemp, and the root stays ours
    # (mode 0700) all the while.
    config.option.basetemp = str(root / "tmp")


def pytest_unconfigure(config: pytest.Config) -> None:
    root = config.stash.get(_SESSION_TEMP, None)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def own_processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts itself (components a lab attaches to, replicas that join it):
    killed by PID afterwards, whatever the test did."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


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
