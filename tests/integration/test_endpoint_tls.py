"""TlsVerify On against a CA file, on real loopback sockets: each bad certificate is a clear
``Failed`` reason, and a good one connects.

A TLS listener (the transport the registrar uses) presents certificates made by trustme; the
endpoint connects with the context and server name its shell uses.
"""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
import trustme

from emulator.sip.message import Message
from emulator.sip.transport import Flow, SipTransport
from endpoint.config import EndpointConfig
from endpoint.host import client_tls_context, connect_error_reason
from tests.labs import allocate_prefix

pytestmark = pytest.mark.integration


class _Quiet:
    def message_received(self, message: Message, flow: Flow) -> None: ...

    def bad_message(self, flow: Flow, error: str) -> None: ...

    def flow_closed(self, flow: Flow, reason: str) -> None: ...


def _config(ca_file: Path, prefix: str) -> EndpointConfig:
    return EndpointConfig(
        name="ep",
        uri="1001@uctest.local",
        proxy="uctest.local",
        address=f"{prefix}.101",  # type: ignore[arg-type]
        dns=[f"{prefix}.10:1053"],
        tls_verify=True,
        ca_file=ca_file,
    )


async def _attempt(leaf: trustme.LeafCert, ca: trustme.CA, tmp_path: Path, name: str) -> str:
    prefix = allocate_prefix()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server, client = SipTransport(_Quiet()), SipTransport(_Quiet())
    try:
        host, port = await server.listen("tls", f"{prefix}.11", 0, server_context)
        try:
            await client.connect(
                "tls",
                (host, port),
                local_host=f"{prefix}.101",
                ssl_context=client_tls_context(_config(ca_file, prefix)),
                server_hostname=name,
                timeout=5,
            )
        except (OSError, TimeoutError) as exc:
            return connect_error_reason(exc)
        return "connected"
    finally:
        await client.close()
        await server.close()


async def test_a_certificate_from_the_lab_ca_for_the_right_name_connects(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("exp1.uctest.local")
    assert await _attempt(leaf, ca, tmp_path, "exp1.uctest.local") == "connected"


async def test_wrong_ca(tmp_path: Path) -> None:
    leaf = trustme.CA().issue_cert("exp1.uctest.local")
    reason = await _attempt(leaf, trustme.CA(), tmp_path, "exp1.uctest.local")
    assert reason == "TLS certificate verify failed: unable to get local issuer certificate"


async def test_wrong_name(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("exp2.uctest.local")
    reason = await _attempt(leaf, ca, tmp_path, "exp1.uctest.local")
    assert reason == (
        "TLS certificate verify failed: Hostname mismatch, certificate is not valid for "
        "'exp1.uctest.local'."
    )


async def test_expired(tmp_path: Path) -> None:
    ca = trustme.CA()
    now = datetime.datetime.now(datetime.UTC)
    leaf = ca.issue_cert(
        "exp1.uctest.local",
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )
    reason = await _attempt(leaf, ca, tmp_path, "exp1.uctest.local")
    assert reason == "TLS certificate verify failed: certificate has expired"
