"""A registrar peer on real UDP, TCP and TLS sockets, driven by a plain socket client: register,
refresh, unregister, maintenance, Via received/rport, outbound flows, STUN, the lab CA (checked
by Python's ssl and by openssl s_client), mutual TLS, digest auth, metrics and a graceful stop."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from emulator.lab.testing import TestLab
from emulator.sip.framing import StreamFramer
from emulator.sip.message import Response, new_branch, parse_message, parse_name_addr, parse_via
from emulator.sip.stun import binding_request, mapped_address
from registrar.ca import LabCA

pytestmark = pytest.mark.integration

TIMEOUT = 5.0
INSTANCE = '"<urn:uuid:00000000-0000-1000-8000-00000000cafe>"'


class SipClient:
    """One SIP client socket (UDP, TCP or TLS) from the test's own loopback address."""

    def __init__(self, sock: socket.socket, transport: str, peer: tuple[str, int]) -> None:
        self.sock = sock
        self.transport = transport
        self.peer = peer
        self.framer = StreamFramer()
        self.pending: list[Response] = []

    @property
    def local(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def request(
        self,
        method: str = "REGISTER",
        *,
        aor: str = "1001@uctest.local",
        cseq: int = 1,
        expires: int | None = 4,
        contact: str | None = None,
        via_extra: str = "",
        headers: tuple[str, ...] = (),
    ) -> Response:
        host, port = self.local
        if contact is None:
            contact = f"<sip:{aor.split('@')[0]}@{host}:{port};transport={self.transport}>"
        lines = [
            f"{method} sip:uctest.local SIP/2.0",
            f"Via: SIP/2.0/{self.transport.upper()} {host}:{port};branch={new_branch()}{via_extra}",
            "Max-Forwards: 70",
            f"From: <sip:{aor}>;tag=t{cseq}",
            f"To: <sip:{aor}>",
            f"Call-ID: test-{host}-{port}",
            f"CSeq: {cseq} {method}",
            f"Contact: {contact}",
            *([f"Expires: {expires}"] if expires is not None else []),
            *headers,
            "Content-Length: 0",
        ]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode()
        if self.transport == "udp":
            self.sock.sendto(data, self.peer)
        else:
            self.sock.sendall(data)
        return self.response()

    def response(self) -> Response:
        while not self.pending:
            if self.transport == "udp":
                data, _ = self.sock.recvfrom(65535)
                message = parse_message(data)
                assert isinstance(message, Response)
                return message
            data = self.sock.recv(65535)
            assert data, "the peer closed the connection"
            self.pending += [m for m in self.framer.feed(data) if isinstance(m, Response)]
        return self.pending.pop(0)


def client_context(ca: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


@contextlib.contextmanager
def connect(
    transport: str,
    peer: tuple[str, int],
    local_host: str,
    context: ssl.SSLContext | None = None,
    server_name: str = "exp1.uctest.local",
) -> Iterator[SipClient]:
    if transport == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((local_host, 0))
    else:
        sock = socket.create_connection(peer, timeout=TIMEOUT, source_address=(local_host, 0))
        if transport == "tls":
            assert context is not None
            sock = context.wrap_socket(sock, server_hostname=server_name)
    sock.settimeout(TIMEOUT)
    try:
        yield SipClient(sock, transport, peer)
    finally:
        sock.close()


def peer_address(lab: TestLab, name: str = "exp1") -> str:
    return str(lab.config.peer(name).address)


def client_host(lab: TestLab) -> str:
    return peer_address(lab).rsplit(".", 1)[0] + ".150"


def no_endpoints(prefix: str) -> list[object]:
    return []


def expires_of(response: Response) -> list[int]:
    return [
        int(parse_name_addr(c).params["expires"] or 0) for c in response.headers.get_all("Contact")
    ]


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_register_refresh_unregister(make_lab: Callable[..., TestLab], transport: str) -> None:
    lab = make_lab(endpoints=no_endpoints)
    host = peer_address(lab)
    port = 5061 if transport == "tls" else 5060
    context = client_context(lab.run_dir / "ca.pem") if transport == "tls" else None
    seq = lab.seq()
    with connect(transport, (host, port), client_host(lab), context) as client:
        first = client.request(cseq=1, expires=3600, via_extra=";rport")
        assert first.status == 200
        assert expires_of(first) == [4]  # the lab's max_expires
        top = parse_via(first.headers.get_all("Via")[0])
        assert top.params["rport"] == str(client.local[1])
        assert top.params["received"] == client.local[0]
        lab.until(lambda e: e["kind"] == "binding.added", since=seq, timeout=TIMEOUT)
        bindings = lab.bindings("exp1")["bindings"]
        assert [b["flow"] for b in bindings] == [
            f"{transport} {host}:{port}->{client.local[0]}:{client.local[1]}"
        ]
        assert client.request(cseq=2).status == 200
        lab.until(lambda e: e["kind"] == "binding.refreshed", since=seq, timeout=TIMEOUT)
        gone = client.request(cseq=3, expires=0)
        assert gone.status == 200
        assert gone.headers.get_all("Contact") == []
        lab.until(
            lambda e: e["kind"] == "binding.removed" and e["reason"] == "unregistered",
            since=seq,
            timeout=TIMEOUT,
        )
    assert lab.bindings("exp1")["registrations"] == 0


def test_maintenance_503_with_the_exact_warning_and_options_still_answered(
    make_lab: Callable[..., TestLab],
) -> None:
    lab = make_lab(endpoints=no_endpoints)
    host = peer_address(lab)
    with connect("tcp", (host, 5060), client_host(lab)) as client:
        assert client.request(cseq=1).status == 200
        assert lab.siplab("maintenance", "exp1", "on").returncode == 0
        refused = client.request(cseq=2)
        assert refused.status == 503
        assert refused.headers.get("Warning") == f'382 {host} "System in Maintenance Mode"'
        assert client.request("OPTIONS", cseq=3).status == 200
        assert lab.bindings("exp1")["registrations"] == 1  # kept until it expires


def test_lab_ca_verifies_every_name_with_python_ssl_and_openssl(
    make_lab: Callable[..., TestLab],
) -> None:
    lab = make_lab(endpoints=no_endpoints)
    ca = lab.run_dir / "ca.pem"
    status = lab.siplab("status")
    assert f"ca  {ca}" in status.stdout
    host = peer_address(lab)
    context = client_context(ca)
    for name in ("exp1.uctest.local", "habibexpc-cluster.uctest.local", "uctest.local", host):
        with (
            socket.create_connection((host, 5061), timeout=TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    with (
        socket.create_connection((host, 5061), timeout=TIMEOUT) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        context.wrap_socket(raw, server_hostname="exp2.uctest.local")
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")

    def s_client(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [openssl, "s_client", "-connect", f"{host}:5061", "-CAfile", str(ca),
             "-verify_return_error", "-verify_hostname", name, "-servername", name],
            input="", capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

    good = s_client("exp1.uctest.local")
    assert good.returncode == 0, good.stderr
    assert "Verify return code: 0 (ok)" in good.stdout
    bad = s_client("exp2.uctest.local")
    assert bad.returncode != 0
    # A peer restarted by the lab serves a certificate from the same CA.
    lab.restart("exp1")
    assert s_client("exp1.uctest.local").returncode == 0


def test_mutual_tls_requires_a_certificate_from_the_lab_ca(
    make_lab: Callable[..., TestLab],
) -> None:
    lab = make_lab(
        endpoints=no_endpoints,
        registrar={"min_expires": 1, "max_expires": 4, "default_expires": 4,
                   "tls_client_auth": "required"},
    )  # fmt: skip
    host, ca = peer_address(lab), lab.run_dir / "ca.pem"
    # TLS 1.3 reports the missing certificate after the handshake, at the first read.
    with (
        connect("tls", (host, 5061), client_host(lab), client_context(ca)) as anonymous,
        pytest.raises((ssl.SSLError, ConnectionError, AssertionError)),
    ):
        anonymous.request()
    cert, key = LabCA.open(lab.run_dir, "unused").issue("client", [], [client_host(lab)])
    (lab.run_dir / "client.pem").write_bytes(cert)
    (lab.run_dir / "client.key").write_bytes(key)
    context = client_context(ca, (lab.run_dir / "client.pem", lab.run_dir / "client.key"))
    with connect("tls", (host, 5061), client_host(lab), context) as client:
        assert client.request().status == 200


def test_outbound_flow_ends_its_binding_when_it_closes_and_stun_answers_on_udp(
    make_lab: Callable[..., TestLab],
) -> None:
    lab = make_lab(endpoints=no_endpoints, registrar={"flow_timer": 30})
    host = peer_address(lab)
    seq = lab.seq()
    with connect("tcp", (host, 5060), client_host(lab)) as client:
        local = client.local
        contact = (
            f"<sip:1001@{local[0]}:{local[1]};transport=tcp;ob>;+sip.instance={INSTANCE};reg-id=1"
        )
        ok = client.request(contact=contact, expires=60, headers=("Supported: outbound",))
        assert ok.status == 200
        assert ok.headers.get("Require") == "outbound"
        assert ok.headers.get("Flow-Timer") == "30"
        (binding,) = lab.bindings("exp1")["bindings"]
        assert binding["reg_id"] == 1
        # CRLF keep-alive ping gets a pong on the same flow.
        client.sock.sendall(b"\r\n\r\n")
        assert client.sock.recv(16) == b"\r\n"
    removed = lab.until(
        lambda e: e["kind"] == "binding.removed" and e["reason"] == "flow closed",
        since=seq,
        timeout=TIMEOUT,
        what="the outbound binding to end with its flow",
    )
    assert removed["aor"] == "1001@uctest.local"
    assert lab.bindings("exp1")["registrations"] == 0
    with connect("udp", (host, 5060), client_host(lab)) as udp:
        udp.sock.sendto(binding_request(b"0123456789ab"), (host, 5060))
        answer, _ = udp.sock.recvfrom(2048)
        assert mapped_address(answer) == udp.local


def test_digest_auth_capacity_and_metrics(make_lab: Callable[..., TestLab]) -> None:
    from emulator.sip import digest

    lab = make_lab(
        endpoints=no_endpoints,
        registrar={"min_expires": 1, "max_expires": 60, "default_expires": 60, "capacity": 1,
                   "auth": {"users": {"1001": "secret", "1002": "other"}}},
    )  # fmt: skip
    host = peer_address(lab)
    with connect("udp", (host, 5060), client_host(lab)) as client:
        challenge = client.request(cseq=1)
        assert challenge.status == 401
        _, params = digest.parse_params(challenge.headers.get_all("WWW-Authenticate")[0])

        def credentials(user: str, password: str, nc: int) -> str:
            value = digest.authorization(
                username=user, realm=params["realm"], password=password, method="REGISTER",
                uri="sip:uctest.local", nonce=params["nonce"], nc=nc, cnonce="abc",
                algorithm=params["algorithm"], opaque=params["opaque"],
            )  # fmt: skip
            return f"Authorization: {value}"

        ok = client.request(cseq=2, headers=(credentials("1001", "secret", 1),))
        assert ok.status == 200
        full = client.request(
            aor="1002@uctest.local", cseq=3, headers=(credentials("1002", "other", 2),)
        )
        assert full.status == 503
        assert full.reason == "Registration Capacity Reached"
    metrics = urllib.request.urlopen(f"http://{host}:9160/metrics", timeout=TIMEOUT).read()
    text = metrics.decode()
    assert 'siplab_registrar_requests_total{code="401",method="REGISTER"} 1.0' in text
    assert 'siplab_registrar_refused_total{reason="capacity"} 1.0' in text
    assert "siplab_registrar_aors 1.0" in text


def test_graceful_stop_closes_connections(make_lab: Callable[..., TestLab]) -> None:
    lab = make_lab(endpoints=no_endpoints)
    host = peer_address(lab)
    with connect("tcp", (host, 5060), client_host(lab)) as client:
        assert client.request().status == 200
        lab.stop("exp1")
        with contextlib.suppress(ConnectionResetError):
            assert client.sock.recv(1) == b""  # FIN (or RST): the connection is gone
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, 5060), timeout=TIMEOUT).close()
