"""pytest fixtures for failover tests: a real lab per test (or per module), always cleaned up.

    def test_my_failover(siplab_lab):
        lab = siplab_lab("labs/mine.yaml")           # or a dict shaped like a lab file
        peer = lab.peer_of("1001@uctest.local")
        lab.kill(peer)
        lab.until(lambda e: e["kind"] == "registration.state" and e["state"] == "Registered",
                  timeout=10)

``siplab_lab`` starts labs for one test, ``siplab_lab_module`` for every test of a module. A
lab file's relative paths (``zone_file:``) mean "next to the lab file"; a dict's, "next to the
test file". Each lab keeps its state in a temporary directory of its own; after the test (or
module) it is stopped, pass or fail, and the test errors if any process it started is still
alive or anything still listens on its addresses. The lab object is the ``Lab`` API
(``emulator.lab.sync.SyncLab``): every fault (kill, stop, start, restart, pause, resume,
partition, heal, impair, maintenance), ``status()``, ``until()``, plus ``siplab(...)`` to run
the real CLI against it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pytest

from emulator.lab.launch import launch
from emulator.lab.ops import load_source
from emulator.lab.testing import LabFailure, TestLab, leftovers

LabSource = dict[str, Any] | str | Path


class LabFactory(Protocol):
    def __call__(
        self, lab: LabSource, *, require_registered: bool = True, timeout: float = 30.0
    ) -> TestLab: ...


@contextmanager
def lab_factory(workdir: Path, base: Path) -> Iterator[LabFactory]:
    """Start labs on demand; stop every one of them and check for leaks on the way out."""
    started: list[TestLab] = []
    counter = itertools.count()

    def start(lab: LabSource, *, require_registered: bool = True, timeout: float = 30.0) -> TestLab:
        config = load_source(lab, base)
        root = workdir / f"lab{next(counter)}-{config.name}"
        root.mkdir(parents=True)
        running = TestLab(launch(config, timeout=timeout, root=root), config, root)
        started.append(running)  # from here on, teardown stops it whatever happens next
        settled = running.wait_settled(timeout)
        endpoints = running.status()["endpoints"]
        unregistered = [e for e in endpoints if e["state"] != "Registered"]
        if require_registered and (not settled or unregistered):
            states = ", ".join(f"{e['uri']} {e['state']} {e['reason']}" for e in unregistered)
            raise LabFailure(f"not every endpoint registered: {states}{running.log_tail()}")
        return running

    problems: list[str] = []
    try:
        yield start
    finally:
        for running in reversed(started):
            try:
                running.down()
            except Exception as exc:  # keep stopping the others; report it below
                problems.append(f"lab {running.name}: could not stop: {exc}")
            problems += [
                f"lab {running.name}: {problem}"
                for problem in leftovers(running.started_pids(), running.addresses())
            ]
    assert not problems, "\n".join(problems)


@pytest.fixture
def siplab_lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LabFactory]:
    with lab_factory(tmp_path, request.path.parent) as start:
        yield start


@pytest.fixture(scope="module")
def siplab_lab_module(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[LabFactory]:
    with lab_factory(tmp_path_factory.mktemp("siplab"), request.path.parent) as start:
        yield start
