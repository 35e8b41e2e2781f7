"""A lab's DNS driven by BIND's nsupdate and scraped as Prometheus metrics."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from collections.abc import Callable

import dns.message
import dns.query
import pytest

from emulator.lab.testing import TestLab

pytestmark = [pytest.mark.interop, pytest.mark.integration]

KEY = {"name": "lab-key", "algorithm": "hmac-sha256", "secret": "c2lwbGFiLWxhYi1rZXktc2VjcmV0"}


def nsupdate(script: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which("nsupdate") is None:
        pytest.skip("nsupdate not installed (Debian package bind9-dnsutils)")
    command = ["nsupdate"] + (["-y", key] if key else [])
    return subprocess.run(
        command, input=script, capture_output=True, text=True, timeout=20, check=False
    )


def test_nsupdate_with_the_lab_key_changes_what_the_endpoint_resolves(
    make_lab: Callable[..., TestLab],
) -> None:
    def dns_with_key(prefix: str) -> dict[str, object]:
        return {"address": f"{prefix}.10", "port": 1053, "ttl": 5, "tsig": KEY}

    lab = make_lab(dns=dns_with_key)
    host, port = lab.status()["dns"]["address"].rsplit(":", 1)
    first = lab.peer_at(lab.status(), lab.endpoint()["registrar"])
    seq = lab.seq()

    # Take the registered peer out of the SRV set with a signed UPDATE, as an operator would.
    script = (
        f"server {host} {port}\nzone uctest.local\n"
        f"update delete _sip._tcp.uctest.local SRV 10 10 5060 {first}.uctest.local.\nsend\n"
    )
    unsigned = nsupdate(script)
    assert unsigned.returncode != 0
    assert "REFUSED" in unsigned.stdout + unsigned.stderr
    signed = nsupdate(script, key=f"{KEY['algorithm']}:{KEY['name']}:{KEY['secret']}")
    assert signed.returncode == 0, signed.stdout + signed.stderr
    change = lab.until(
        lambda e: e["kind"] == "dns.change" and e.get("op") == "update", since=seq, what="UPDATE"
    )
    assert any(first in record for record in change["removed"])

    # Kill that peer: the endpoint moves on, and its next lookup no longer lists it.
    assert lab.siplab("kill", first).returncode == 0
    lab.until(
        lambda e: (
            e["kind"] == "registration.state"
            and e["state"] == "Registered"
            and lab.peer_at(lab.status(), e["registrar"]) != first
        ),
        since=seq,
        timeout=10,
        what="registration on the remaining peer",
    )
    answer = dns.query.udp(
        dns.message.make_query("_sip._tcp.uctest.local", "SRV"), host, port=int(port), timeout=2
    )
    targets = {rd.target.to_text() for rrset in answer.answer for rd in rrset}
    assert targets == {f"{'exp2' if first == 'exp1' else 'exp1'}.uctest.local."}


def test_dns_metrics_are_served_for_the_lab(make_lab: Callable[..., TestLab]) -> None:
    lab = make_lab()
    url = lab.status()["dns"]["metrics"]
    assert url.endswith(":9153/metrics")
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    # The endpoint's lookups at start are counted.
    samples = [
        line
        for line in text.splitlines()
        if line.startswith("siplab_dns_queries_total{") and 'rcode="NOERROR"' in line
    ]
    assert samples
    assert sum(float(line.rsplit(" ", 1)[1]) for line in samples) >= 1
