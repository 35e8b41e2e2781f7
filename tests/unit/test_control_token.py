"""The control plane's bearer token (required beyond loopback) and remote labs' state files."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from emulator.lab.client import ControlError, LabClient
from emulator.lab.control import ControlPlane
from emulator.lab.model import parse_lab
from emulator.lab.state import LabHandle, read_handle, write_handle
from emulator.lab.supervisor import Supervisor
from emulator.lab.sync import await_stopped
from tests.labs import allocate_prefix, lab_dict


def handle(url: str, run_dir: Path, token: str | None, remote: bool = False) -> LabHandle:
    return LabHandle("t", os.getpid(), url, str(run_dir), time.time(), token, remote)


async def test_a_control_plane_with_a_token_answers_only_requests_that_carry_it(
    tmp_path: Path,
) -> None:
    supervisor = Supervisor(parse_lab(lab_dict(allocate_prefix(), "tok"), "t"))
    control = ControlPlane(supervisor, lambda: None, token="s3cret-token")
    url = await control.start("127.0.0.1", 0)
    try:
        good = LabClient(handle(url, tmp_path, "s3cret-token"), timeout=5)
        status = await asyncio.to_thread(good.call, "GET", "/status")
        assert status["lab"] == "tok"
        for token in (None, "wrong"):
            client = LabClient(handle(url, tmp_path, token), timeout=5)
            with pytest.raises(ControlError, match="needs its bearer token"):
                await asyncio.to_thread(client.call, "GET", "/status")
            with pytest.raises(ControlError):
                await asyncio.to_thread(lambda c=client: list(c.stream_events()))
    finally:
        await control.close()


async def test_a_control_plane_beyond_loopback_refuses_to_start_without_a_token() -> None:
    supervisor = Supervisor(parse_lab(lab_dict(allocate_prefix(), "tok2"), "t"))
    control = ControlPlane(supervisor, lambda: None)
    with pytest.raises(ValueError, match="needs a token"):
        await control.start("0.0.0.0", 0)
    await control.close()


def test_state_files_are_private_and_a_remote_one_lives_while_its_control_answers(
    tmp_path: Path,
) -> None:
    (tmp_path / "t").mkdir()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        # Written in a container: its run_dir and PID mean nothing on this host.
        write_handle(handle(url, Path("/state/t"), "tk", remote=True), tmp_path)
        path = tmp_path / "t" / "lab.json"
        assert path.stat().st_mode & 0o777 == 0o600
        found = read_handle("t", tmp_path)
        assert found is not None
        assert found.remote
        assert found.token == "tk"
        assert found.run_dir == str(tmp_path / "t")
        with pytest.raises(ControlError, match="did not stop"):
            await_stopped(found, 0.2)  # still answering, state file still there
    # Its container is gone (nothing accepts): stopped, and the stale file is removed.
    await_stopped(found, 5)
    assert not path.exists()
    write_handle(handle(url, tmp_path / "t", "tk", remote=True), tmp_path)
    assert read_handle("t", tmp_path) is None
    assert not path.exists()
