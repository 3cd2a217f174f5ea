"""Refresh token format and the hash of high-entropy secrets. Pure: no I/O."""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import uuid

REFRESH_PREFIX = "rt_"
_SECRET_BYTES = 32


class MalformedRefreshToken(ValueError):
    """Not a refresh token this server issued."""


def new_refresh_token(tenant_id: str) -> str:
    """An opaque refresh token: ``rt_`` + base64url(tenant uuid (16 bytes) +
    256 random bits). The tenant inside lets RefreshToken/Logout, which carry
    no tenant metadata, open a tenant (RLS) transaction before the lookup;
    only the hash of the whole token is stored."""
    raw = uuid.UUID(tenant_id).bytes + secrets.token_bytes(_SECRET_BYTES)
    return REFRESH_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def refresh_token_tenant(token: str) -> str:
    """The tenant id a refresh token claims (not yet verified: the hash lookup does that)."""
    if not token.startswith(REFRESH_PREFIX):
        raise MalformedRefreshToken("not a refresh token")
    body = token[len(REFRESH_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError) as exc:
        raise MalformedRefreshToken("not a refresh token") from exc
    if len(raw) != 16 + _SECRET_BYTES:
        raise MalformedRefreshToken("not a refresh token")
    return str(uuid.UUID(bytes=raw[:16]))


def token_hash(token: str) -> bytes:
    """SHA-256 of a high-entropy secret (refresh token, API key).

    A fast hash is right here, unlike for passwords: the secret carries 256
    random bits, so there is nothing to brute-force or look up in a dictionary
    and slow hashing (argon2) would only add its cost to every request. The
    hash is a lookup key; a leaked table of hashes does not give the secrets.
    """
    return hashlib.sha256(token.encode()).digest()
