"""API key secrets and the shared cache that lets the gateway verify them.

The contract has no "verify API key" RPC, and calling identity on every
request would put a network hop on the hot path anyway. Identity therefore
keeps one Redis entry per *active* key, written in the same step that commits
the key and deleted before a revocation commits:

    identity:apikey:{sha256(secret) hex}  ->  JSON principal (tenant, owner,
                                              effective scopes, roles, expiry)

The entry is looked up by the hash of the presented secret, before any tenant
is known, so it cannot be tenant-scoped with ``tenant_key`` (like
``md:quote:*``, it is platform-wide). It holds no secret: knowing the hash does
not give the key. Entries of expiring keys carry a Redis TTL, and identity
rebuilds the whole set from PostgreSQL at start-up (:func:`resync`), so a
flushed cache heals on the next identity start.

Why SHA-256 and not argon2: the secret is 256 random bits, so a fast hash
cannot be brute-forced and argon2 would only make every API call slow (tens
of milliseconds of CPU). No pepper is needed for the same reason, which also
keeps the gateway free of server secrets.

:class:`ApiKeyVerifier` is what the gateway imports.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from redis.asyncio import Redis

from services.identity.domain import token_hash

# Secrets look like "tk_live_<43 base64url chars>"; the first 12 characters
# are the key_prefix shown in listings.
SECRET_PREFIX = "tk_live_"
KEY_PREFIX_LENGTH = 12
CACHE_PREFIX = "identity:apikey:"
# Hash of last-use times (api_key_id -> unix seconds), written by verifiers.
LAST_USED_KEY = "identity:apikey_last_used"
# A verifier records a key's use at most this often.
LAST_USED_EVERY_S = 60.0


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def key_prefix(secret: str) -> str:
    return secret[:KEY_PREFIX_LENGTH]


def looks_like_api_key(credential: str) -> bool:
    """True for credentials shaped like our API keys (vs. a JWT)."""
    return credential.startswith(SECRET_PREFIX)


def cache_key(secret_hash: bytes) -> str:
    return CACHE_PREFIX + secret_hash.hex()


@dataclass(frozen=True, slots=True)
class ApiKeyPrincipal:
    """Who a call made with an API key acts as. `subject` is the owner user
    (the key acts as that user); `scopes` are the key's scopes limited to
    what the owner's roles still grant."""

    api_key_id: str
    tenant_id: str
    subject: str
    scopes: frozenset[str]
    roles: frozenset[str]
    expires_at: float | None

    def to_json(self) -> str:
        return json.dumps(
            {
                "api_key_id": self.api_key_id,
                "tenant_id": self.tenant_id,
                "subject": self.subject,
                "scopes": sorted(self.scopes),
                "roles": sorted(self.roles),
                "expires_at": self.expires_at,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> ApiKeyPrincipal:
        obj = json.loads(data)
        return cls(
            api_key_id=str(obj["api_key_id"]),
            tenant_id=str(obj["tenant_id"]),
            subject=str(obj["subject"]),
            scopes=frozenset(obj["scopes"]),
            roles=frozenset(obj["roles"]),
            expires_at=None if obj["expires_at"] is None else float(obj["expires_at"]),
        )


async def publish(redis: Redis, secret_hash: bytes, principal: ApiKeyPrincipal, *, now: float) -> None:
    """Make a key usable (or update its scopes). An already expired key is removed instead."""
    key = cache_key(secret_hash)
    if principal.expires_at is None:
        await redis.set(key, principal.to_json())
        return
    ttl_ms = int((principal.expires_at - now) * 1000)
    if ttl_ms <= 0:
        await redis.delete(key)
    else:
        await redis.set(key, principal.to_json(), px=ttl_ms)


async def withdraw(redis: Redis, secret_hash: bytes) -> None:
    """Make a key unusable from now on."""
    await redis.delete(cache_key(secret_hash))


async def resync(redis: Redis, active: Iterable[tuple[bytes, ApiKeyPrincipal]], *, now: float) -> int:
    """Make the cache hold exactly `active` (the truth from PostgreSQL): entries
    of keys revoked while Redis missed the delete are removed. Returns the count kept."""
    wanted = {cache_key(h): (h, p) for h, p in active}
    stale = [k async for k in redis.scan_iter(match=CACHE_PREFIX + "*", count=500) if _text(k) not in wanted]
    if stale:
        await redis.delete(*stale)
    for secret_hash, principal in wanted.values():
        await publish(redis, secret_hash, principal, now=now)
    return len(wanted)


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key


class ApiKeyVerifier:
    """Checks a presented API key secret: one SHA-256 and one Redis GET.

    Returns the principal, or None for an unknown, revoked or expired key
    (callers answer 401 without saying which). Records the key's last use in
    Redis at most once a minute per key and process.
    """

    def __init__(self, redis: Redis, *, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._clock = clock
        self._last_recorded: dict[str, float] = {}

    async def verify(self, secret: str) -> ApiKeyPrincipal | None:
        if not looks_like_api_key(secret) or len(secret) > 128:
            return None
        data = await self._redis.get(cache_key(token_hash(secret)))
        if data is None:
            return None
        principal = ApiKeyPrincipal.from_json(data)
        now = self._clock()
        if principal.expires_at is not None and principal.expires_at <= now:
            return None
        last = self._last_recorded.get(principal.api_key_id)
        if last is None or now - last >= LAST_USED_EVERY_S:
            if len(self._last_recorded) > 100_000:
                self._last_recorded.clear()
            self._last_recorded[principal.api_key_id] = now
            await self._redis.hset(LAST_USED_KEY, principal.api_key_id, str(now))
        return principal
