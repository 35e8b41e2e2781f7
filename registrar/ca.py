"""A certificate authority for one lab's whole life, and the certificates it issues.

The CA's certificate (``ca.pem``) is what clients trust: ``openssl s_client -CAfile ca.pem``,
sipsak, an endpoint with ``TlsVerify: On``. Its key (``ca.key``, mode 0600) stays next to it
so that ``siplab certs`` and a lab started later issue from the same CA. Keys are ECDSA P-256:
issuing one takes about a millisecond, and every TLS 1.2+ client speaks it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
CERTS_DIR = "certs"
# Long enough for any lab; clients check dates, so "now" is backdated a little for clock skew.
VALIDITY = datetime.timedelta(days=3650)
SKEW = datetime.timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class IssuedCert:
    cert: Path  # the leaf certificate (PEM)
    key: Path  # its private key (PEM, mode 0600)


class LabCA:
    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert

    @classmethod
    def create(cls, common_name: str) -> LabCA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "siplab"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - SKEW)
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def open(cls, directory: Path, common_name: str) -> LabCA:
        """The CA kept in ``directory``, made there first if there is none."""
        cert_path, key_path = directory / CA_FILE, directory / CA_KEY_FILE
        if cert_path.is_file() and key_path.is_file():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_path} is not an EC private key")
            return cls(key, x509.load_pem_x509_certificate(cert_path.read_bytes()))
        ca = cls.create(common_name)
        directory.mkdir(parents=True, exist_ok=True)
        _write_key(key_path, ca.key)
        _write_atomic(cert_path, ca.cert_pem())
        return ca

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self, common_name: str, dns_names: list[str], addresses: list[str]
    ) -> tuple[bytes, bytes]:
        """A leaf certificate (for server and client use) and its key, both PEM."""
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys(dns_names)]
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in dict.fromkeys(addresses)]
        now = datetime.datetime.now(datetime.UTC)
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - SKEW)
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    def issue_files(
        self, directory: Path, name: str, dns_names: list[str], addresses: list[str]
    ) -> IssuedCert:
        """Issue a certificate for ``name`` into ``directory/certs/NAME.pem`` and ``.key``."""
        cert_pem, key_pem = self.issue(name, dns_names, addresses)
        folder = directory / CERTS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        issued = IssuedCert(folder / f"{name}.pem", folder / f"{name}.key")
        _write_atomic(issued.key, key_pem, mode=0o600)
        _write_atomic(issued.cert, cert_pem)
        return issued


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomic(path, pem, mode=0o600)


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    # A key must never exist, even for a moment, with wider permissions than ``mode``.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(tmp, mode)
    tmp.replace(path)
