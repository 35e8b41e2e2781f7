"""The event-cost benchmarks' ``--self-check`` modes: small, seconds, the reference tools real.

``bench/events/run.py`` needs SIPp (Debian: sip-tester); ``bench/dns/events.py`` needs dnsperf
and NSD. Each starts a lab with ``siplab up --detach`` on a loopback /24 it claims and stops it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dnshelpers import REPO

pytestmark = pytest.mark.integration


def run_bench(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / script), "--self-check"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=REPO,
    )


@pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp not installed (sip-tester)")
def test_sip_event_cost_self_check() -> None:
    done = run_bench("bench/events/run.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "self-check passed" in done.stdout
    assert "supervisor / peer CPU" in done.stdout


@pytest.mark.skipif(
    shutil.which("dnsperf") is None or not (shutil.which("nsd") or Path("/usr/sbin/nsd").exists()),
    reason="dnsperf or NSD not installed",
)
def test_dns_event_cost_self_check() -> None:
    done = run_bench("bench/dns/events.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "self-check passed" in done.stdout
    for side in ("ours standalone (default events)", "ours in a lab (default events)"):
        assert f"{side:<34} / NSD = " in done.stdout
