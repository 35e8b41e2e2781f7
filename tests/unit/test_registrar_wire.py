"""The registrar's wire helpers: STUN Binding answers, digest header syntax, the lab CA."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509

from emulator.lab.certs import lab_certificates
from emulator.lab.model import default_lab
from emulator.sip import digest
from emulator.sip.stun import binding_request, binding_response, is_stun, mapped_address
from registrar.ca import LabCA


@pytest.mark.parametrize("source", [("127.0.0.101", 40000), ("::1", 5060)])
def test_stun_binding_answer_carries_the_source(source: tuple[str, int]) -> None:
    request = binding_request(b"abcdefghijkl")
    assert is_stun(request)
    answer = binding_response(request, source)
    assert answer is not None
    assert answer[8:20] == b"abcdefghijkl"  # the transaction id is echoed
    assert mapped_address(answer) == source


def test_not_stun_or_not_a_binding_request_gets_nothing() -> None:
    assert not is_stun(b"REGISTER sip:uctest.local SIP/2.0\r\n\r\n")
    request = bytearray(binding_request(b"abcdefghijkl"))
    request[1] = 0x11  # a Binding indication, not a request
    assert binding_response(bytes(request), ("127.0.0.1", 1)) is None
    assert binding_response(binding_request(b"abcdefghijkl") + b"xx", ("127.0.0.1", 1)) is None


def test_digest_params_and_errors() -> None:
    scheme, params = digest.parse_params('Digest realm="a \\"b\\"", nc=00000001, qop=auth')
    assert scheme == "digest"
    assert params == {"realm": 'a "b"', "nc": "00000001", "qop": "auth"}
    with pytest.raises(digest.DigestError, match="twice"):
        digest.parse_params("Digest a=1, a=2")
    with pytest.raises(digest.DigestError, match="without"):
        digest.parse_credentials('Digest username="x"')
    with pytest.raises(digest.DigestError, match="not Digest"):
        digest.parse_credentials("Basic eA==")


def test_rfc_7616_sha256_example() -> None:
    # RFC 7616 §3.9.1 (the example's HTTP method and URI; the arithmetic is the same for SIP).
    ha1 = digest.ha1("SHA-256", "Mufasa", "http-auth@example.org", "Circle of Life")
    value = digest.response(
        "SHA-256",
        ha1,
        method="GET",
        uri="/dir/index.html",
        nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        nc="00000001",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert value == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def test_lab_ca_is_kept_and_names_every_peer(tmp_path: Path) -> None:
    lab = default_lab()
    issued = lab_certificates(lab, tmp_path)
    ca_pem = (tmp_path / "ca.pem").read_bytes()
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(issued["exp1"].key.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(issued["exp1"].cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [
        "exp1.uctest.local",
        "habibexpc-cluster.uctest.local",
        "uctest.local",
        "exp1",
    ]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.11")]
    ca = x509.load_pem_x509_certificate(ca_pem)
    cert.verify_directly_issued_by(ca)
    # Opened again (a later start, or siplab certs): the same CA, new leaves from it.
    again = lab_certificates(lab, tmp_path)
    assert (tmp_path / "ca.pem").read_bytes() == ca_pem
    x509.load_pem_x509_certificate(again["exp2"].cert.read_bytes()).verify_directly_issued_by(ca)
    assert LabCA.open(tmp_path, "ignored").cert == ca
