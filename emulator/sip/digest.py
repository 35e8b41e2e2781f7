"""HTTP Digest for SIP (RFC 7616 with RFC 8760's algorithms for SIP): the arithmetic and the
header syntax, shared by the registrar (which verifies) and endpoints (which answer).

Only ``qop=auth`` is spoken: ``auth-int`` hashes the body, which a REGISTER does not carry.
The ``-sess`` variants are not offered (RFC 8760 §2.2 leaves them out of SIP's registry).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

ALGORITHMS: dict[str, Callable[[bytes], str]] = {
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
    "MD5": lambda data: hashlib.md5(data, usedforsecurity=False).hexdigest(),
}


class DigestError(ValueError):
    """An Authorization or WWW-Authenticate value that cannot be used."""


_PARAM_RE = re.compile(
    r'[ \t]*([A-Za-z0-9_\-]+)[ \t]*=[ \t]*("(?:[^"\\]|\\.)*"|[^\s,"]+)[ \t]*(?:,|$)'
)


def parse_params(value: str) -> tuple[str, dict[str, str]]:
    """``Digest a="b", c=d`` -> ``("digest", {"a": "b", "c": "d"})``; names lower-cased."""
    scheme, _, rest = value.strip().partition(" ")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        found = _PARAM_RE.match(rest, pos)
        if found is None or found.end() == pos:
            raise DigestError(f"malformed auth parameters near {rest[pos : pos + 30]!r}")
        name, raw = found.group(1).lower(), found.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        if name in params:
            raise DigestError(f"auth parameter {name!r} appears twice")
        params[name] = raw
        pos = found.end()
    return scheme.lower(), params


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    return ALGORITHMS[algorithm](f"{username}:{realm}:{password}".encode())


def response(
    algorithm: str,
    ha1_value: str,
    *,
    method: str,
    uri: str,
    nonce: str,
    nc: str,
    cnonce: str,
    qop: str = "auth",
) -> str:
    """RFC 7616 §3.4.1 ``response`` for qop=auth, from HA1 (so the password need not be kept)."""
    digest = ALGORITHMS[algorithm]
    ha2 = digest(f"{method}:{uri}".encode())
    return digest(f"{ha1_value}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())


@dataclass(frozen=True, slots=True)
class Credentials:
    """The parts of an ``Authorization: Digest`` value the verifier needs."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str
    qop: str
    nc: str
    cnonce: str
    opaque: str | None


def parse_credentials(value: str) -> Credentials:
    scheme, params = parse_params(value)
    if scheme != "digest":
        raise DigestError(f"auth scheme {scheme!r} is not Digest")
    missing = [
        n for n in ("username", "realm", "nonce", "uri", "response", "nc", "cnonce")
        if n not in params
    ]  # fmt: skip
    if missing:
        raise DigestError(f"Digest credentials without {', '.join(missing)}")
    algorithm = params.get("algorithm", "MD5")
    canonical = next((a for a in ALGORITHMS if a.lower() == algorithm.lower()), None)
    if canonical is None:
        raise DigestError(f"algorithm {algorithm!r} is not offered")
    qop = params.get("qop", "")
    if qop != "auth":
        raise DigestError("only qop=auth is offered")
    nc = params["nc"]
    if not re.fullmatch(r"[0-9A-Fa-f]{8}", nc):
        raise DigestError(f"nc {nc[:20]!r} is not 8 hex digits")
    return Credentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"].lower(),
        algorithm=canonical,
        qop=qop,
        nc=nc,
        cnonce=params["cnonce"],
        opaque=params.get("opaque"),
    )


def challenge(realm: str, nonce: str, algorithm: str, *, opaque: str, stale: bool) -> str:
    """One ``WWW-Authenticate`` value (RFC 7616 §3.3); a server sends one per algorithm."""
    parts = [
        f"realm={quote(realm)}",
        f"nonce={quote(nonce)}",
        f"opaque={quote(opaque)}",
        f"algorithm={algorithm}",
        'qop="auth"',
    ]
    if stale:
        parts.append("stale=true")
    return "Digest " + ", ".join(parts)


def authorization(
    *,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    nc: int,
    cnonce: str,
    algorithm: str = "SHA-256",
    opaque: str | None = None,
) -> str:
    """An ``Authorization`` value answering a challenge (the client side, RFC 7616 §3.4)."""
    nc_text = f"{nc:08x}"
    digest = response(
        algorithm,
        ha1(algorithm, username, realm, password),
        method=method,
        uri=uri,
        nonce=nonce,
        nc=nc_text,
        cnonce=cnonce,
    )
    parts = [
        f"username={quote(username)}",
        f"realm={quote(realm)}",
        f"nonce={quote(nonce)}",
        f"uri={quote(uri)}",
        f"response={quote(digest)}",
        f"algorithm={algorithm}",
        f"cnonce={quote(cnonce)}",
        "qop=auth",
        f"nc={nc_text}",
    ]
    if opaque is not None:
        parts.append(f"opaque={quote(opaque)}")
    return "Digest " + ", ".join(parts)
