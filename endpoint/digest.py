"""HTTP digest authentication for SIP, client side: RFC 3261 §22.4 with RFC 7616's algorithms.

A registrar challenges with ``WWW-Authenticate`` (401) or a proxy with ``Proxy-Authenticate``
(407); the client answers the strongest challenge it understands (SHA-256 before MD5, RFC 7616
§3.7) with an ``Authorization`` / ``Proxy-Authorization`` header. Pure functions, no state
except the nonce count the caller keeps.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Final

# RFC 7616 §3.2: the algorithms, strongest first; "-sess" variants hash the cnonce into HA1.
ALGORITHMS: Final[dict[str, str]] = {
    "SHA-256": "sha256",
    "SHA-256-SESS": "sha256",
    "MD5": "md5",
    "MD5-SESS": "md5",
}

_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*(?:,|$)')


class DigestError(ValueError):
    """A challenge the client cannot answer (not Digest, no nonce, unknown algorithm)."""


@dataclass(frozen=True, slots=True)
class Challenge:
    realm: str
    nonce: str
    algorithm: str  # upper case, as in ALGORITHMS
    qop: tuple[str, ...]
    opaque: str | None
    stale: bool


def parse_challenge(value: str) -> Challenge:
    """One ``WWW-Authenticate`` / ``Proxy-Authenticate`` value."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"not a Digest challenge: {scheme!r}")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if match is None:
            raise DigestError(f"bad challenge parameters: {rest[pos:]!r}")
        name, raw = match.group(1).lower(), match.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[name] = raw
        pos = match.end()
    if "nonce" not in params or "realm" not in params:
        raise DigestError("a Digest challenge needs realm and nonce")
    algorithm = params.get("algorithm", "MD5").upper()
    if algorithm not in ALGORITHMS:
        raise DigestError(f"unsupported digest algorithm {algorithm}")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    if qop and "auth" not in qop:
        raise DigestError(f"unsupported qop {params['qop']!r} (only auth)")
    return Challenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=algorithm,
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
    )


def strongest(values: list[str]) -> Challenge:
    """The challenge to answer among several (RFC 7616 §3.7: the first one the client
    supports in the server's order of preference, which lists the strongest first; here the
    strongest supported, whatever the order)."""
    found: list[Challenge] = []
    errors: list[str] = []
    for value in values:
        try:
            found.append(parse_challenge(value))
        except DigestError as exc:
            errors.append(str(exc))
    if not found:
        raise DigestError("; ".join(errors) or "no challenge")
    order = list(ALGORITHMS)
    return min(found, key=lambda c: order.index(c.algorithm))


def _hash(algorithm: str, text: str) -> str:
    return hashlib.new(ALGORITHMS[algorithm], text.encode()).hexdigest()


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authorization(
    challenge: Challenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    nc: int,
    cnonce: str | None = None,
) -> str:
    """The credentials header value answering ``challenge`` (RFC 7616 §3.4)."""
    algorithm = challenge.algorithm
    cnonce = cnonce or secrets.token_hex(8)
    ha1 = _hash(algorithm, f"{username}:{challenge.realm}:{password}")
    if algorithm.endswith("-SESS"):
        ha1 = _hash(algorithm, f"{ha1}:{challenge.nonce}:{cnonce}")
    ha2 = _hash(algorithm, f"{method}:{uri}")
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(challenge.realm)}",
        f"nonce={_quote(challenge.nonce)}",
        f"uri={_quote(uri)}",
    ]
    if challenge.qop:
        count = f"{nc:08x}"
        response = _hash(algorithm, f"{ha1}:{challenge.nonce}:{count}:{cnonce}:auth:{ha2}")
        parts += [f"response={_quote(response)}", "qop=auth", f"nc={count}"]
        parts.append(f"cnonce={_quote(cnonce)}")
    else:
        # RFC 2069 compatibility (RFC 3261 §22.4 still allows it): no qop, no cnonce.
        response = _hash(algorithm, f"{ha1}:{challenge.nonce}:{ha2}")
        parts.append(f"response={_quote(response)}")
    parts.append(f"algorithm={algorithm}")
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    return "Digest " + ", ".join(parts)
