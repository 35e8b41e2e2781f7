"""``bench/dns/run.py --self-check``: the server under load, answers checked one by one.

Needs neither dnsperf nor NSD; listens on a loopback /24 it claims."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.dnshelpers import REPO

pytestmark = pytest.mark.integration


def test_self_check_under_load() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench/dns/run.py"), "--self-check", "--queries", "3000"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "self-check passed" in done.stdout


def test_help_names_the_options() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench/dns/run.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 0
    for option in ("--duration", "--clients", "--rounds", "--self-check"):
        assert option in done.stdout
