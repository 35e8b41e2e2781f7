"""Digest authentication of REGISTER, sans-I/O (RFC 7616, RFC 8760), with source lockout.

Nonces are kept server-side with the highest nonce-count seen, so a replayed request (same
nonce, same or lower ``nc``) is caught; a nonce past its lifetime, or one this peer never
issued (it restarted, or another peer issued it), gets ``stale=true`` when the digest is
otherwise right, so the client answers again without asking its user for a password.

Failures are counted per source address; ``lockout_failures`` of them inside
``lockout_window`` seconds lock the source out for ``lockout_time`` — it gets 403 with no
challenge, so a scanner guessing passwords learns nothing more.
"""

from __future__ import annotations

import hmac
import random
from collections import deque
from dataclasses import dataclass
from enum import Enum

from emulator.deadlines import Deadlines
from emulator.sip import digest
from emulator.sip.message import Request
from registrar.config import AuthConfig

# A source's failures are forgotten when this many sources are tracked (a wide scan); the
# lockouts themselves are kept.
MAX_TRACKED_SOURCES = 10_000
# Issued nonces kept at most; past it the oldest go first (their clients get stale=true).
MAX_NONCES = 200_000


class Verdict(Enum):
    OK = "ok"
    MISSING = "missing"  # no credentials for our realm: challenge
    STALE = "stale"  # right digest, old or unknown nonce: challenge with stale=true
    FAILED = "failed"  # wrong: counted towards a lockout, challenged again


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    user: str | None = None
    reason: str = ""


@dataclass(slots=True)
class _Nonce:
    expires_at: float
    last_nc: int = 0


class DigestVerifier:
    def __init__(self, config: AuthConfig, realm: str, rng: random.Random) -> None:
        self.config = config
        self.realm = realm
        self._rng = rng
        self._opaque = f"{rng.getrandbits(64):016x}"
        self._nonces: dict[str, _Nonce] = {}
        self._nonce_expiry: Deadlines[str] = Deadlines()
        self._failures: dict[str, deque[float]] = {}
        self._locked: Deadlines[str] = Deadlines()

    # -- challenges -----------------------------------------------------------------

    def challenges(self, now: float, *, stale: bool = False) -> list[str]:
        """``WWW-Authenticate`` values: one fresh nonce, offered with each algorithm."""
        self._forget_nonces(now)
        nonce = f"{self._rng.getrandbits(128):032x}"
        self._nonces[nonce] = _Nonce(now + self.config.nonce_lifetime)
        self._nonce_expiry.set(nonce, now + self.config.nonce_lifetime)
        return [
            digest.challenge(self.realm, nonce, algorithm, opaque=self._opaque, stale=stale)
            for algorithm in self.config.algorithms
        ]

    def _forget_nonces(self, now: float) -> None:
        for nonce in self._nonce_expiry.pop_due(now):
            self._nonces.pop(nonce, None)
        while len(self._nonces) >= MAX_NONCES:
            oldest = next(iter(self._nonces))
            del self._nonces[oldest]
            self._nonce_expiry.cancel(oldest)

    # -- verifying ------------------------------------------------------------------

    def check(self, request: Request, now: float) -> Outcome:
        ours = None
        for value in request.headers.get_all("Authorization"):
            try:
                credentials = digest.parse_credentials(value)
            except digest.DigestError as exc:
                return Outcome(Verdict.FAILED, reason=str(exc))
            if credentials.realm == self.realm:
                ours = credentials
                break
        if ours is None:
            return Outcome(Verdict.MISSING)
        if ours.algorithm not in self.config.algorithms:
            return Outcome(Verdict.FAILED, ours.username, f"algorithm {ours.algorithm} refused")
        if ours.uri != request.uri:
            return Outcome(Verdict.FAILED, ours.username, "digest uri is not the Request-URI")
        password = self.config.password(ours.username)
        if password is None:
            return Outcome(Verdict.FAILED, ours.username, "unknown user")
        expected = digest.response(
            ours.algorithm,
            digest.ha1(ours.algorithm, ours.username, self.realm, password),
            method=request.method,
            uri=ours.uri,
            nonce=ours.nonce,
            nc=ours.nc,
            cnonce=ours.cnonce,
        )
        if not hmac.compare_digest(expected, ours.response):
            return Outcome(Verdict.FAILED, ours.username, "wrong password")
        issued = self._nonces.get(ours.nonce)
        if issued is None or issued.expires_at <= now:
            return Outcome(Verdict.STALE, ours.username, "stale nonce")
        nc = int(ours.nc, 16)
        if nc <= issued.last_nc:
            return Outcome(Verdict.FAILED, ours.username, "nonce-count replayed")
        issued.last_nc = nc
        return Outcome(Verdict.OK, ours.username)

    # -- lockout --------------------------------------------------------------------

    def locked(self, source: str) -> bool:
        return source in self._locked

    def failed(self, source: str, now: float) -> bool:
        """Count a failure from ``source``; True when this one locks it out."""
        if len(self._failures) >= MAX_TRACKED_SOURCES and source not in self._failures:
            self._failures.clear()
        times = self._failures.setdefault(source, deque())
        times.append(now)
        while times and times[0] <= now - self.config.lockout_window:
            times.popleft()
        if len(times) < self.config.lockout_failures:
            return False
        del self._failures[source]
        self._locked.set(source, now + self.config.lockout_time)
        return True

    def next_timer(self) -> float | None:
        return self._locked.next()

    def unlock_due(self, now: float) -> list[str]:
        """Sources whose lockout ended by ``now``."""
        return self._locked.pop_due(now)
