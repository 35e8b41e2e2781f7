"""TLS for the 5061 listener: a certificate for the peer's address, made at start.

trustme makes a throwaway CA and a leaf certificate for an IP address in a few milliseconds;
the lab CA that clients can verify against comes with the registrar's TLS issue.
"""

from __future__ import annotations

import ssl

import trustme


def server_context(address: str) -> ssl.SSLContext:
    ca = trustme.CA(organization_name="siplab lab CA")
    leaf = ca.issue_cert(address)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    return context
