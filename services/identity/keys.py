"""The ES256 signing key ring over the SigningKeyStore port (keys in
PostgreSQL, encrypted: services.identity.adapters.postgres); rotation; JWKS.

Table ``identity.signing_keys`` holds one *current* key (``retired_at`` NULL)
and the retired ones whose tokens may still be valid (``publish_until`` in the
future). Rotation makes a new current key and retires the old one with
``publish_until = now + access token lifetime + the ring's reload interval +
clock skew``: a replica that signed with the old key just before noticing the
rotation still issues tokens that verify until they expire. GetJwks publishes
the current key first, then every retired key not yet past ``publish_until``.

Private keys are stored AES-256-GCM encrypted (the key id as associated data)
under a key-encryption key (KEK) from ``TRADING_IDENTITY__KEY_ENCRYPTION_KEY``
(base64url, 32 bytes) or the secret ``identity/kek`` (runtime.security.secrets:
environment or mounted file; in production from a secret manager / KMS;
generated per checkout only in development, never in the repository). A key
sealed under a replaced KEK cannot be read: a new one is made at once. The
table also has row-level security enabled with no policy, so the
unprivileged tenant role cannot read it at all.

Rotate from the command line (applies to every replica within seconds)::

    python -m services.identity.keys rotate
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from runtime.config import Settings
from runtime.security.secrets import get_secret
from services.identity.ports import SigningKey, SigningKeyStore

log = logging.getLogger(__name__)

ALGORITHM = "ES256"
# Clock skew between the machines signing and verifying tokens.
CLOCK_SKEW_S = 60.0


class KeyConfigError(RuntimeError):
    """The key-encryption key is missing or malformed."""


def key_encryption_key(settings: Settings, configured: str = "") -> bytes:
    """The KEK: ``configured`` (TRADING_IDENTITY__KEY_ENCRYPTION_KEY, base64url)
    or else the secret ``identity/kek`` (environment or mounted file; generated
    only in development). No key is ever in the repository."""
    if not configured:
        configured = get_secret(settings, "identity", "kek", nbytes=32)
    try:
        kek = base64.urlsafe_b64decode(configured + "=" * (-len(configured) % 4))
    except ValueError as exc:
        raise KeyConfigError("key-encryption key is not base64url") from exc
    if len(kek) != 32:
        raise KeyConfigError("key-encryption key must be 32 bytes (AES-256)")
    return kek


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The JWK of a P-256 public key; `kid` is its RFC 7638 thumbprint."""
    numbers = public_key.public_numbers()
    x, y = _b64(numbers.x.to_bytes(32, "big")), _b64(numbers.y.to_bytes(32, "big"))
    # RFC 7638: required members only, lexicographic order, no whitespace.
    canonical = json.dumps({"crv": "P-256", "kty": "EC", "x": x, "y": y}, separators=(",", ":"))
    kid = _b64(hashlib.sha256(canonical.encode()).digest())
    return {"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": ALGORITHM, "use": "sig"}


class KeyRing:
    """The signing side used by the servicer: signs access tokens with the
    current key and serves the JWKS, both cached for `reload_every_s` so a
    rotation made elsewhere (CLI, another replica) is picked up within it.
    Rotates automatically once the current key is `rotate_after_s` old."""

    def __init__(
        self,
        store: SigningKeyStore,
        *,
        access_ttl_s: float,
        rotate_after_s: float,
        reload_every_s: float = 10.0,
    ) -> None:
        self._store = store
        self._rotate_after_s = rotate_after_s
        self._reload_every_s = reload_every_s
        self.retire_grace_s = access_ttl_s + reload_every_s + CLOCK_SKEW_S
        self._current: SigningKey | None = None
        self._jwks: list[dict[str, str]] = []
        self._loaded_at = -1e18
        self._lock = asyncio.Lock()

    async def _reload_if_stale(self) -> None:
        if time.monotonic() - self._loaded_at < self._reload_every_s and self._current is not None:
            return
        async with self._lock:
            if time.monotonic() - self._loaded_at < self._reload_every_s and self._current is not None:
                return
            current = await self._store.current()
            age = None if current is None else (datetime.now(UTC) - current.created_at).total_seconds()
            if current is None or (age is not None and age >= self._rotate_after_s):
                await self._store.rotate(
                    retire_grace_s=self.retire_grace_s,
                    only_if_older_than_s=None if self._store.current_unreadable else self._rotate_after_s,
                )
                current = await self._store.current()
            assert current is not None
            self._current = current
            self._jwks = await self._store.published()
            self._loaded_at = time.monotonic()

    async def rotate(self) -> str:
        """Rotate now and use the new key at once in this process."""
        kid = await self._store.rotate(retire_grace_s=self.retire_grace_s)
        self._loaded_at = -1e18
        await self._reload_if_stale()
        return kid

    async def jwks(self) -> list[dict[str, str]]:
        await self._reload_if_stale()
        return list(self._jwks)

    async def sign(self, claims: Mapping[str, Any]) -> tuple[str, str]:
        """The signed JWT of `claims` and the kid it names."""
        await self._reload_if_stale()
        key = self._current
        assert key is not None
        token = jwt.encode(dict(claims), key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})
        return token, key.kid


async def _main(argv: list[str]) -> int:
    from runtime.config import get_settings
    from runtime.security.store_credentials import postgres_dsn, postgres_password
    from runtime.storage.postgres import create_pool
    from services.identity.adapters.postgres import PostgresSigningKeyStore
    from services.identity.settings import IdentitySettings

    if argv[1:] != ["rotate"]:
        print("usage: python -m services.identity.keys rotate", file=sys.stderr)
        return 2
    settings, identity = get_settings(), IdentitySettings()
    # As identity itself: its login role owns the key ring's rows (no one else may).
    pool = await create_pool(
        settings.postgres,
        dsn=postgres_dsn(settings, "identity"),
        password=postgres_password(settings, "identity"),
        min_size=1,
        max_size=1,
        application_name="identity-keys",
    )
    try:
        store = PostgresSigningKeyStore(pool, key_encryption_key(settings, identity.key_encryption_key))
        grace = identity.access_token_ttl_s + identity.key_reload_s + CLOCK_SKEW_S
        print(await store.rotate(retire_grace_s=grace))
    finally:
        await pool.close()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(asyncio.run(_main(sys.argv)))
