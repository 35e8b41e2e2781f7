"""Real SIP clients against a registrar peer: sipsak (REGISTER and OPTIONS over UDP, TCP and
TLS) and baresip (registering through the lab's SRV records with digest credentials).

sipsak 0.9.8.1 reads session tickets after a TLS 1.3 handshake as SIP and fails: the peers
send none (``num_tickets = 0``). sipsak does not check the server certificate even when given
``--tls-ca-cert``; the CA is checked by openssl in tests/integration/test_registrar_peer.py.
baresip 1.0.0 speaks only MD5 digests and gives up on a SHA-256 challenge offered first
(RFC 8760 lets it pick the MD5 one), so its lab offers MD5 alone.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from emulator.lab.testing import TestLab

pytestmark = [pytest.mark.interop, pytest.mark.integration]

PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package {package})")
    return path


def no_endpoints(prefix: str) -> list[object]:
    return []


@pytest.fixture(scope="module")
def sipsak() -> str:
    return tool("sipsak", "sipsak")


def run_sipsak(
    sipsak: str, lab: TestLab, transport: str, *args: str
) -> subprocess.CompletedProcess[str]:
    peer = str(lab.config.peer("exp1").address)
    local = peer.rsplit(".", 1)[0] + ".150"
    tls = ["--tls-ca-cert", str(lab.run_dir / "ca.pem")] if transport == "tls" else []
    return subprocess.run(
        [sipsak, "-vv", "--local-ip", local, "--transport", transport, *tls,
         "-s", f"sip:exp1@{peer}:{PORTS[transport]}", *args],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_sipsak_register_and_options(
    make_lab: Callable[..., TestLab], sipsak: str, transport: str, tmp_path: Path
) -> None:
    lab = make_lab(endpoints=no_endpoints)
    # sipsak's usrloc mode resolves the AOR's domain with the system resolver, which does not
    # know the lab's; its shoot mode sends our REGISTER as written (adding its own Via).
    message = tmp_path / "register.sip"
    message.write_bytes(
        "\r\n".join([
            "REGISTER sip:uctest.local SIP/2.0",
            "From: <sip:1001@uctest.local>;tag=sipsak",
            "To: <sip:1001@uctest.local>",
            f"Call-ID: sipsak-{transport}@interop",
            "CSeq: 1 REGISTER",
            "Contact: <sip:1001@192.0.2.7:5070>",
            "Expires: 60",
            "Max-Forwards: 70",
            "Content-Length: 0",
            "", "",
        ]).encode()
    )  # fmt: skip
    seq = lab.seq()
    registered = run_sipsak(sipsak, lab, transport, "-f", str(message))
    assert registered.returncode == 0, registered.stdout + registered.stderr
    assert "SIP/2.0 200 OK" in registered.stdout
    # sipsak writes a Via it cannot be reached at (127.0.0.1, another port) and asks for
    # rport: only an answer sent per RFC 3581 reaches it.
    assert "received=" in registered.stdout
    added = lab.until(lambda e: e["kind"] == "binding.added", since=seq, timeout=10)
    assert added["contact"] == "sip:1001@192.0.2.7:5070"
    assert added["flow"].startswith(transport)
    options = run_sipsak(sipsak, lab, transport)
    assert options.returncode == 0, options.stdout + options.stderr
    assert "Allow: REGISTER, OPTIONS" in options.stdout


def test_baresip_registers_through_srv_with_digest_credentials(
    make_lab: Callable[..., TestLab], tmp_path: Path
) -> None:
    baresip = tool("baresip", "baresip")
    lab = make_lab(
        endpoints=no_endpoints,
        registrar={"min_expires": 1, "max_expires": 60, "default_expires": 60,
                   "auth": {"algorithms": ["MD5"], "groups": [
                       {"users": "1[0-9]{3}", "password": "pw-{user}"}]}},
    )  # fmt: skip
    prefix = str(lab.config.peer("exp1").address).rsplit(".", 1)[0]
    (tmp_path / "config").write_text(
        f"sip_listen {prefix}.151:5070\n"
        f"dns_server {lab.config.dns_address()}\n"
        "module_path /usr/lib/baresip/modules\n"
        "module_app account.so\n"
        "audio_player none\naudio_source none\n"
    )
    (tmp_path / "accounts").write_text(
        "<sip:1042@uctest.local;transport=tcp>;auth_pass=pw-1042;regint=60\n"
    )
    seq = lab.seq()
    # -t: baresip quits (and unregisters) after that many seconds.
    run = subprocess.run(
        [baresip, "-f", str(tmp_path), "-t", "4"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert "200 OK" in run.stdout + run.stderr, run.stdout + run.stderr
    events = lab.events(since=seq)
    kinds = [(e["kind"], e.get("code")) for e in events if e["kind"] == "register.answered"]
    assert ("register.answered", 401) in kinds
    assert ("register.answered", 200) in kinds
    (added,) = [e for e in events if e["kind"] == "binding.added"]
    assert added["aor"] == "1042@uctest.local"
    assert not [e for e in events if e["kind"] == "auth.failed"]
