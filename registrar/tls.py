"""TLS for the 5061 listener: the peer's certificate from the lab CA, TLS 1.2 or later.

Without a configured certificate (a peer run by hand) the peer makes a throwaway CA and a
certificate for its address, as before the lab CA existed: TLS works, verification cannot.
"""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

from registrar.ca import LabCA
from registrar.config import RegistrarConfig

_CLIENT_AUTH = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


def server_context(config: RegistrarConfig) -> ssl.SSLContext:
    """OSError or ssl.SSLError when the configured files cannot be used."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Session tickets after a TLS 1.3 handshake break sipsak (it reads them as SIP and gives
    # up); a registrar gains nothing from resumption anyway.
    context.num_tickets = 0
    if config.tls_cert is not None and config.tls_key is not None:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    else:
        _load_throwaway(context, str(config.address))
    context.verify_mode = _CLIENT_AUTH[config.tls_client_auth]
    if config.tls_client_ca is not None:
        context.load_verify_locations(cafile=config.tls_client_ca)
    return context


def _load_throwaway(context: ssl.SSLContext, address: str) -> None:
    cert, key = LabCA.create("siplab throwaway CA").issue(address, [], [address])
    # ssl loads a chain only from files; they live only as long as this call.
    with tempfile.TemporaryDirectory(prefix="siplab-tls-") as folder:
        cert_path, key_path = Path(folder, "cert.pem"), Path(folder, "key.pem")
        cert_path.write_bytes(cert)
        key_path.write_bytes(key)
        context.load_cert_chain(cert_path, key_path)
