"""The lab's certificate authority on disk: ``<lab run dir>/ca.pem`` and one certificate per
peer under ``certs/``, made at lab start or by ``siplab certs``.

The CA lives as long as the lab's run directory, so a client configured once with ``ca.pem``
verifies every peer of every later run of that lab; peer certificates are issued afresh at each
start, so they always name the peers' current addresses.
"""

from __future__ import annotations

from pathlib import Path

from emulator.lab.model import LabConfig
from registrar.ca import CA_FILE, IssuedCert, LabCA


def ca_path(run_dir: Path) -> Path:
    return run_dir / CA_FILE


def lab_certificates(lab: LabConfig, run_dir: Path) -> dict[str, IssuedCert]:
    """Open (or make) the lab CA in ``run_dir`` and issue a certificate to every peer the lab
    runs, and to every endpoint when the peers ask clients for one (mutual TLS)."""
    ca = LabCA.open(run_dir, f"siplab lab {lab.name} CA")
    issued = {
        peer.name: ca.issue_files(run_dir, peer.name, *lab.peer_tls_names(peer.name))
        for peer in lab.peers
        if not peer.external
    }
    if lab.registrar.tls_client_auth != "none":
        for spec in lab.endpoints:
            assert spec.name is not None
            assert spec.address is not None
            issued[spec.name] = ca.issue_files(run_dir, spec.name, [], [str(spec.address)])
    return issued
