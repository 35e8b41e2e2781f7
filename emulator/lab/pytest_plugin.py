"""pytest fixture for users' own failover tests: ``siplab_lab(lab)`` runs a lab for one test.

    def test_my_failover(siplab_lab):
        lab = siplab_lab("labs/mine.yaml")        # or a dict shaped like a lab file
        peer = lab.peer_at(lab.endpoint()["registrar"])
        lab.siplab("kill", peer)
        lab.wait_for(lambda e: e["kind"] == "registration.state" and e["state"] == "Registered",
                     since=..., timeout=10)

The lab runs detached with its state in the test's temporary directory and is stopped after
the test, pass or fail; the test then errors if any of its processes or sockets survived.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml

from emulator.lab.testing import RunningLab, lab_addresses, leftovers, running_lab, started_pids


class LabFactory(Protocol):
    def __call__(
        self, lab: dict[str, Any] | str | Path, *, require_registered: bool = True
    ) -> RunningLab: ...


@pytest.fixture
def siplab_lab(tmp_path: Path) -> Iterator[LabFactory]:
    started: list[tuple[RunningLab, set[str], int]] = []
    with ExitStack() as stack:

        def start(
            lab: dict[str, Any] | str | Path, *, require_registered: bool = True
        ) -> RunningLab:
            if not isinstance(lab, dict):
                lab = yaml.safe_load(Path(lab).read_text(encoding="utf-8"))
            assert isinstance(lab, dict), "a lab file is a YAML mapping"
            lab.setdefault("name", f"lab{len(started)}")
            workdir = tmp_path / f"siplab-{lab['name']}"
            workdir.mkdir()
            running = stack.enter_context(
                running_lab(lab, workdir, require_registered=require_registered)
            )
            started.append((running, lab_addresses(lab), running.handle.pid))
            return running

        yield start
    problems = [
        f"lab {running.name}: {problem}"
        for running, addresses, supervisor in started
        for problem in leftovers(started_pids(running) | {supervisor}, addresses)
    ]
    assert not problems, "\n".join(problems)
