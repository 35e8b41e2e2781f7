"""bench/registrar's ``--self-check``: our peer, the CPython floor and Kamailio under SIPp,
200 REGISTER/s for 2 s per scenario (new users, refreshes), transport (UDP, TCP) and server;
every REGISTER answered.

Needs SIPp (Debian: sip-tester) and Kamailio (Debian: kamailio); skipped without them. The
benchmark takes its addresses from ``emulator.lab.addresses.next_block()`` and stops what it
started by PID.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dnshelpers import REPO

pytestmark = pytest.mark.integration


def _kamailio() -> bool:
    return shutil.which("kamailio") is not None or Path("/usr/sbin/kamailio").exists()


@pytest.mark.skipif(
    shutil.which("sipp") is None or not _kamailio(),
    reason="SIPp (sip-tester) or Kamailio not installed",
)
def test_registrar_bench_self_check() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench/registrar/run.py"),
            "--self-check",
            "--servers",
            "ours,floor,kamailio",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "self-check passed" in done.stdout
    for scenario in ("new", "refresh"):
        for transport in ("udp", "tcp"):
            for server in ("ours", "floor", "kamailio"):
                assert f"| {scenario} | {transport} | {server} | 200+ |" in done.stdout
