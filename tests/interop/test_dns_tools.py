"""The DNS server as a real process, driven by DNS tools nobody here wrote: kdig (Knot),
dig and nsupdate (BIND).

Addresses: one /24 of the process's own loopback /16 (tests/labs.py), one address per test, so
tests and test sessions can run in parallel; port 1053.
Every tool run is bounded in time, and every server process is killed by PID in teardown.
"""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dnsserver.config import DnsServerConfig, RecordConfig, TsigKeyConfig, ZoneConfig
from tests.conftest import StartDns
from tests.dnshelpers import DnsProcess, seed_zone
from tests.labs import allocate_prefix

pytestmark = pytest.mark.interop

NET = allocate_prefix()
PORT = 1053
PEERS = ("127.0.55.11", "127.0.55.12")
CLUSTER = "habibexpc-cluster.uctest.local"
TOOL_TIMEOUT = 20.0
KEY_NAME = "lab-key"
SECRET = base64.b64encode(b"siplab-interop-secret-0123456789").decode()
# 20 TXT records of ~50 bytes: well over the 512 bytes of a UDP answer without EDNS.
BIG_TXT = [
    RecordConfig(name="big", type="TXT", data=f'"record {i:02d} padding padding padding padding"')
    for i in range(20)
]
PACKAGE_OF = {"kdig": "knot-dnsutils", "dig": "bind9-dnsutils", "nsupdate": "bind9-dnsutils"}


def tool(name: str) -> str:
    """The tool's path; the test is skipped (saying why) only when it is not installed."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install {PACKAGE_OF[name]}; .ci/run does)")
    return path


def lab_config(address: str) -> DnsServerConfig:
    """The seed's zone (plus one oversized name), and a zone that only takes signed UPDATEs."""
    seed = seed_zone(PEERS)
    return DnsServerConfig(
        address=address,
        port=PORT,
        zones=[
            ZoneConfig(origin="uctest.local", records=[*seed.records, *BIG_TXT]),
            ZoneConfig(origin="secure.test", tsig=TsigKeyConfig(name=KEY_NAME, secret=SECRET)),
        ],
    )


@dataclass
class ToolRun:
    returncode: int
    stdout: str
    stderr: str


async def run(*argv: str, stdin: str | None = None, timeout: float = TOOL_TIMEOUT) -> ToolRun:
    """Run a tool to completion, killing it if it outlives ``timeout``."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate(None if stdin is None else stdin.encode())
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{' '.join(argv)} ran longer than {timeout} s") from None
    assert process.returncode is not None
    return ToolRun(process.returncode, out.decode(), err.decode())


@dataclass
class DigOutput:
    """What kdig or dig printed: status, header flags, and each section's records."""

    status: str
    flags: set[str]
    sections: dict[str, list[tuple[str, int, str, str]]] = field(default_factory=dict)
    transport: str = ""  # kdig's ";; From ADDR@PORT(UDP|TCP)"

    def rdata(self, section: str, rtype: str) -> list[str]:
        return [data for _, _, kind, data in self.sections.get(section, []) if kind == rtype]

    def owners(self, section: str, rtype: str) -> list[str]:
        return [name for name, _, kind, _ in self.sections.get(section, []) if kind == rtype]


def parse_dig(text: str) -> DigOutput:
    """Both tools print ';; ->>HEADER<<- ... status: X', a flags line, then sections whose
    records are 'NAME TTL CLASS TYPE RDATA' and whose other lines start with ';'."""
    status = re.search(r"status: (\w+)", text)
    flags = re.search(r";; [Ff]lags: ([a-z ]*);", text)
    assert status is not None, text
    assert flags is not None, text
    parsed = DigOutput(status.group(1), set(flags.group(1).split()))
    section: str | None = None
    for line in text.splitlines():
        header = re.match(r";; (\w+) SECTION:", line)
        if header:
            section = header.group(1)
            parsed.sections[section] = []
        elif not line.strip():
            section = None
        elif section is not None and not line.startswith(";"):
            name, ttl, _rclass, rtype, *data = line.split()
            parsed.sections[section].append((name, int(ttl), rtype, " ".join(data)))
    source = re.search(r";; From \S+\((UDP|TCP)\)", text)
    parsed.transport = source.group(1) if source else ""
    return parsed


async def kdig(address: str, *args: str) -> DigOutput:
    # +retry=0 with a short timeout: a lost answer fails the test fast instead of hanging.
    result = await run(
        tool("kdig"), f"@{address}", "-p", str(PORT), "+timeout=3", "+retry=0", *args
    )
    assert result.returncode == 0, result.stderr + result.stdout
    return parse_dig(result.stdout)


async def nsupdate(script: list[str], *args: str) -> ToolRun:
    return await run(tool("nsupdate"), *args, stdin="\n".join([*script, ""]))


# -- queries -------------------------------------------------------------------------------


async def test_kdig_srv_lists_both_peers_with_their_addresses(start_dns: StartDns) -> None:
    await start_dns(lab_config(f"{NET}.20"))
    answer = await kdig(f"{NET}.20", "_sip._tcp.uctest.local", "SRV")
    assert answer.status == "NOERROR"
    assert "aa" in answer.flags
    assert sorted(answer.rdata("ANSWER", "SRV")) == [
        "10 10 5060 exp1.uctest.local.",
        "10 10 5060 exp2.uctest.local.",
    ]
    additional = dict(
        zip(answer.owners("ADDITIONAL", "A"), answer.rdata("ADDITIONAL", "A"), strict=True)
    )
    assert additional == {"exp1.uctest.local.": PEERS[0], "exp2.uctest.local.": PEERS[1]}


async def test_dig_srv(start_dns: StartDns) -> None:
    await start_dns(lab_config(f"{NET}.21"))
    result = await run(
        tool("dig"),
        f"@{NET}.21",
        "-p",
        str(PORT),
        "+time=3",
        "+tries=1",
        "_sip._tcp.uctest.local",
        "SRV",
    )
    assert result.returncode == 0, result.stderr + result.stdout
    answer = parse_dig(result.stdout)
    assert answer.status == "NOERROR"
    assert "aa" in answer.flags
    assert sorted(answer.rdata("ANSWER", "SRV")) == [
        "10 10 5060 exp1.uctest.local.",
        "10 10 5060 exp2.uctest.local.",
    ]
    assert sorted(answer.rdata("ADDITIONAL", "A")) == list(PEERS)


async def test_kdig_sees_the_cluster_name_rotate(start_dns: StartDns) -> None:
    await start_dns(lab_config(f"{NET}.22"))
    first = (await kdig(f"{NET}.22", CLUSTER, "A")).rdata("ANSWER", "A")
    second = (await kdig(f"{NET}.22", CLUSTER, "A")).rdata("ANSWER", "A")
    assert sorted(first) == sorted(second) == list(PEERS)
    assert second == [first[1], first[0]]


async def test_kdig_nxdomain_carries_the_soa(start_dns: StartDns) -> None:
    await start_dns(lab_config(f"{NET}.23"))
    answer = await kdig(f"{NET}.23", "missing.uctest.local", "A")
    assert answer.status == "NXDOMAIN"
    assert "aa" in answer.flags
    assert answer.owners("AUTHORITY", "SOA") == ["uctest.local."]
    assert answer.rdata("AUTHORITY", "SOA")[0].startswith("ns1.uctest.local. hostmaster.")


async def test_truncated_over_udp_whole_over_tcp(start_dns: StartDns) -> None:
    await start_dns(lab_config(f"{NET}.24"))
    # No EDNS, so the 512-byte limit holds; +ignore: show the TC answer, do not retry.
    truncated = await kdig(f"{NET}.24", "+notcp", "+noedns", "+ignore", "big.uctest.local", "TXT")
    assert "tc" in truncated.flags
    assert truncated.rdata("ANSWER", "TXT") == []
    assert truncated.transport == "UDP"
    # kdig's default: the same UDP query, then the retry over TCP that TC asks for.
    result = await run(
        tool("kdig"),
        f"@{NET}.24",
        "-p",
        str(PORT),
        "+timeout=3",
        "+retry=0",
        "+noedns",
        "big.uctest.local",
        "TXT",
    )
    assert result.returncode == 0, result.stderr
    assert "retrying over TCP" in result.stderr
    retried = parse_dig(result.stdout)
    assert retried.transport == "TCP"
    assert "tc" not in retried.flags
    assert len(retried.rdata("ANSWER", "TXT")) == len(BIG_TXT)
    whole = await kdig(f"{NET}.24", "+tcp", "big.uctest.local", "TXT")
    assert whole.transport == "TCP"
    assert len(whole.rdata("ANSWER", "TXT")) == len(BIG_TXT)


async def test_kdig_queries_a_zone_loaded_from_a_master_file(tmp_path: Path) -> None:
    zone_file = tmp_path / "filetest.zone"
    zone_file.write_text(
        "$ORIGIN filetest.local.\n"
        "$TTL 300\n"
        "@        IN SOA ns1 hostmaster ( 2024010101 3600 600 86400 30 )\n"
        "         IN NS  ns1\n"
        "ns1      IN A   127.0.55.53\n"
        "_sip._tcp 120 IN SRV 10 20 5060 exp1  ; relative target\n"
        "exp1     IN A   127.0.55.11\n"
        "alias    IN CNAME exp1\n",
        encoding="utf-8",
    )
    process = await DnsProcess.spawn(
        sys.executable,
        "-m",
        "dnsserver",
        "--zone",
        str(zone_file),
        "--listen",
        f"{NET}.25:{PORT}",
        "--control",
        "stdio",
    )
    try:
        ready = await process.wait_for("ready", timeout=10)
        assert ready["zones"] == ["filetest.local"]
        srv = await kdig(f"{NET}.25", "_sip._tcp.filetest.local", "SRV")
        assert srv.sections["ANSWER"] == [
            ("_sip._tcp.filetest.local.", 120, "SRV", "10 20 5060 exp1.filetest.local.")
        ]
        assert srv.sections["ADDITIONAL"] == [("exp1.filetest.local.", 300, "A", "127.0.55.11")]
        alias = await kdig(f"{NET}.25", "alias.filetest.local", "A")
        assert alias.rdata("ANSWER", "CNAME") == ["exp1.filetest.local."]
        assert alias.rdata("ANSWER", "A") == ["127.0.55.11"]
        soa = await kdig(f"{NET}.25", "filetest.local", "SOA")
        assert soa.rdata("ANSWER", "SOA") == [
            "ns1.filetest.local. hostmaster.filetest.local. 2024010101 3600 600 86400 30"
        ]
    finally:
        await process.stop()


# -- dynamic UPDATE with nsupdate ----------------------------------------------------------


async def test_nsupdate_with_a_tsig_key_adds_and_deletes(start_dns: StartDns) -> None:
    process = await start_dns(lab_config(f"{NET}.26"))
    server = [f"server {NET}.26 1053", "zone secure.test"]
    key = f"hmac-sha256:{KEY_NAME}:{SECRET}"
    added = await nsupdate(
        [*server, "update add new.secure.test 60 A 127.0.55.30", "send"], "-y", key
    )
    assert added.returncode == 0, added.stderr
    answer = await kdig(f"{NET}.26", "new.secure.test", "A")
    assert answer.sections["ANSWER"] == [("new.secure.test.", 60, "A", "127.0.55.30")]
    change = await process.wait_for("dns.change", zone="secure.test")
    assert change["op"] == "update"
    assert change["added"] == ["new.secure.test. 60 IN A 127.0.55.30"]

    deleted = await nsupdate([*server, "update delete new.secure.test A", "send"], "-y", key)
    assert deleted.returncode == 0, deleted.stderr
    assert (await kdig(f"{NET}.26", "new.secure.test", "A")).status == "NXDOMAIN"


async def test_nsupdate_without_the_key_changes_nothing(start_dns: StartDns) -> None:
    await start_dns(lab_config(f"{NET}.27"))
    script = [
        f"server {NET}.27 1053",
        "zone secure.test",
        "update add new.secure.test 60 A 127.0.55.30",
        "send",
    ]
    unsigned = await nsupdate(script)
    assert unsigned.returncode != 0
    assert "REFUSED" in unsigned.stderr
    wrong = await nsupdate(script, "-y", f"hmac-sha256:{KEY_NAME}:d3Jvbmctc2VjcmV0")
    assert wrong.returncode != 0
    assert "NOTAUTH(BADSIG)" in wrong.stderr
    assert (await kdig(f"{NET}.27", "new.secure.test", "A")).status == "NXDOMAIN"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_nsupdate_without_a_key_in_an_open_zone(start_dns: StartDns, transport: str) -> None:
    address = f"{NET}.28" if transport == "udp" else f"{NET}.29"
    process = await start_dns(lab_config(address))
    flags = ["-v"] if transport == "tcp" else []  # nsupdate -v: send the UPDATE over TCP
    server = [f"server {address} 1053", "zone uctest.local"]
    added = await nsupdate(
        [*server, "update add exp3.uctest.local 30 A 127.0.55.13", "send"], *flags
    )
    assert added.returncode == 0, added.stderr
    assert (await kdig(address, "exp3.uctest.local", "A")).rdata("ANSWER", "A") == ["127.0.55.13"]

    removed = await nsupdate([*server, f"update delete {CLUSTER} A {PEERS[0]}", "send"], *flags)
    assert removed.returncode == 0, removed.stderr
    assert (await kdig(address, CLUSTER, "A")).rdata("ANSWER", "A") == [PEERS[1]]
    # Events are written in batches: wait for the second change rather than read at once.
    await process.wait_for("dns.change", removed=[f"{CLUSTER}. 60 IN A {PEERS[0]}"])
    changes = [e for e in process.events if e["kind"] == "dns.change"]
    assert [c["op"] for c in changes] == ["update", "update"]
    assert changes[1]["removed"] == [f"{CLUSTER}. 60 IN A {PEERS[0]}"]
