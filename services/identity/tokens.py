"""Offline verification of identity's access tokens against its JWKS: what the
gateway (and any service) imports. No I/O of its own: the JWKS comes from an
injected async `fetch` (e.g. a GetJwks call), so it is testable and
transport-neutral.

* Keys are cached by ``kid``. A token naming an unknown kid triggers one
  refetch (concurrent callers share it), at most once per
  `min_refresh_interval_s` (a caller within the interval waits for the next
  allowed fetch if that is at most `max_wait_s` away, else is refused), so a
  flood of forged kids cannot hammer identity.
  The set is also refetched when older than `max_age_s`, so a withdrawn key
  stops verifying; if identity is unreachable then, the cached keys stay in use.
* Checks: ES256 signature only (no ``none``/HS*: algorithm confusion), issuer,
  audience, ``exp``/``iat`` with leeway, required claims.
* Successful verifications are cached by token string until the token
  expires (bounded), so the steady state of a client reusing its token costs
  a dict lookup and an expiry check instead of an ECDSA verification.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.algorithms import ECAlgorithm

log = logging.getLogger(__name__)

ALGORITHM = "ES256"
REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat", "jti", "tenant")

JwksFetcher = Callable[[], Awaitable[Mapping[str, Any]]]


class TokenError(Exception):
    """The token is not acceptable. `reason` is stable and safe to log:
    malformed, unknown_key, bad_signature, expired, wrong_audience,
    wrong_issuer, missing_claim, not_yet_valid."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The verified facts of an access token."""

    subject: str
    tenant_id: str
    roles: frozenset[str]
    scopes: frozenset[str]
    token_id: str
    key_id: str
    issued_at: float
    expires_at: float


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def unverified_kid(token: str) -> str:
    """The ``kid`` of a JWT's header (not verified: only to pick the key)."""
    try:
        header = json.loads(_b64decode(token[: token.index(".")]))
    except (ValueError, binascii.Error) as exc:
        raise TokenError("malformed", "not a JWT") from exc
    if not isinstance(header, dict):
        raise TokenError("malformed", "not a JWT")
    if header.get("alg") != ALGORITHM:
        raise TokenError("malformed", f"token algorithm must be {ALGORITHM}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenError("malformed", "token has no kid")
    return kid


def keys_from_jwks(jwks: Mapping[str, Any]) -> dict[str, Any]:
    """Verification keys by kid from a JWKS document; non-ES256 keys are skipped."""
    keys: dict[str, Any] = {}
    for jwk in jwks.get("keys", ()):
        if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256" and jwk.get("alg", ALGORITHM) == ALGORITHM:
            keys[str(jwk["kid"])] = ECAlgorithm.from_jwk(dict(jwk))
    return keys


class JwksVerifier:
    """Verifies access tokens; see the module docstring."""

    def __init__(
        self,
        fetch: JwksFetcher,
        *,
        issuer: str,
        audience: str,
        leeway_s: float = 5.0,
        min_refresh_interval_s: float = 1.0,
        max_wait_s: float = 1.0,
        max_age_s: float = 300.0,
        cache_size: int = 50_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch = fetch
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_s
        self._min_refresh = min_refresh_interval_s
        self._max_wait = max_wait_s
        self._max_age = max_age_s
        self._cache_size = cache_size
        self._clock = clock
        self._jwt = jwt.PyJWT()
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None  # monotonic
        self._refresh: asyncio.Task[None] | None = None
        self._verified: dict[str, AccessClaims] = {}

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    async def refresh(self) -> None:
        """Refetch the key set now (shared by concurrent callers)."""
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._do_refresh())
        await asyncio.shield(self._refresh)

    async def _do_refresh(self) -> None:
        jwks = await self._fetch()
        keys = keys_from_jwks(jwks)
        # Drop verified tokens of withdrawn keys.
        gone = set(self._keys) - set(keys)
        if gone:
            self._verified = {t: c for t, c in self._verified.items() if c.key_id not in gone}
        self._keys = keys
        self._fetched_at = time.monotonic()

    async def _maybe_refresh(self, *, unknown_kid: bool) -> None:
        age = None if self._fetched_at is None else time.monotonic() - self._fetched_at
        if age is not None and unknown_kid and age < self._min_refresh:
            # Bounded: at most one refetch per interval. A kid seen just after a
            # rotation is worth a short wait for the next allowed fetch; beyond
            # `max_wait_s` the token is refused instead.
            remaining = self._min_refresh - age
            if remaining > self._max_wait:
                return
            await asyncio.sleep(remaining)
            if self._fetched_at is not None and time.monotonic() - self._fetched_at < self._min_refresh:
                return  # another caller refetched while we waited
        elif age is not None and not unknown_kid and age < self._max_age:
            return
        try:
            await self.refresh()
        except Exception as exc:
            if not self._keys:
                raise
            log.warning("JWKS refresh failed, keeping %d cached keys: %r", len(self._keys), exc)

    async def verify(self, token: str) -> AccessClaims:
        """The claims of a valid token; raises :class:`TokenError` otherwise."""
        now = self._clock()
        cached = self._verified.get(token)
        if cached is not None:
            if now < cached.expires_at + self._leeway:
                if self._fetched_at is not None and time.monotonic() - self._fetched_at < self._max_age:
                    return cached
            else:
                del self._verified[token]
                raise TokenError("expired", "token has expired")
        kid = unverified_kid(token)
        await self._maybe_refresh(unknown_kid=kid not in self._keys)
        key = self._keys.get(kid)
        if key is None:
            raise TokenError("unknown_key", "token signed by an unknown key")
        claims = self._decode(token, key, kid, now)
        if len(self._verified) >= self._cache_size:
            self._verified.clear()
        self._verified[token] = claims
        return claims

    def _decode(self, token: str, key: Any, kid: str, now: float) -> AccessClaims:
        try:
            payload = self._jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": list(REQUIRED_CLAIMS), "verify_iat": False},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("expired", "token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenError("wrong_audience", "token is for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise TokenError("wrong_issuer", "token is from another issuer") from exc
        except jwt.InvalidSignatureError as exc:
            raise TokenError("bad_signature", "token signature does not verify") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError("missing_claim", str(exc)) from exc
        except jwt.ImmatureSignatureError as exc:
            raise TokenError("not_yet_valid", "token is not valid yet") from exc
        except jwt.InvalidTokenError as exc:
            raise TokenError("malformed", "token is malformed") from exc
        if float(payload["iat"]) > now + self._leeway:
            raise TokenError("not_yet_valid", "token issued in the future")
        roles, scopes = payload.get("roles", []), payload.get("scopes", [])
        if not (isinstance(roles, list) and isinstance(scopes, list)):
            raise TokenError("malformed", "roles and scopes must be lists")
        return AccessClaims(
            subject=str(payload["sub"]),
            tenant_id=str(payload["tenant"]),
            roles=frozenset(map(str, roles)),
            scopes=frozenset(map(str, scopes)),
            token_id=str(payload["jti"]),
            key_id=kid,
            issued_at=float(payload["iat"]),
            expires_at=float(payload["exp"]),
        )
