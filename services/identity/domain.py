"""Pure identity rules: roles and their scopes, password hashing policy,
refresh token format. No I/O.

Scopes of each role follow the comments of `trading.identity.v1.Role`; "every
`*:read` scope" is derived from the contracts (every read scope some RPC
declares in its `(trading.common.v1.method)` policy), so a new service's read
scope reaches viewers without a change here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

# Role names as stored in PostgreSQL and carried in tokens / `x-roles`
# (the Role enum names without the ROLE_ prefix).
TRADER = "TRADER"
VIEWER = "VIEWER"
ADMIN = "ADMIN"
ROLES: tuple[str, ...] = (TRADER, VIEWER, ADMIN)

ADMIN_SCOPE = "admin"
# Read scopes every role gets even if no RPC declares them yet (the Role
# comments name them: orders, positions, analytics).
BASE_READ_SCOPES = frozenset({"marketdata:read", "orders:read", "positions:read", "analytics:read"})
TRADER_EXTRA = frozenset({"orders:write", "strategies:write", "webhooks:write", "identity:write"})
ADMIN_EXTRA = frozenset({ADMIN_SCOPE, "risk:write", "risk:admin"})


@dataclass(frozen=True, slots=True)
class RoleScopes:
    """Scopes granted by each role, given the read scopes the contracts declare."""

    read: frozenset[str]

    @classmethod
    def from_declared(cls, declared: Iterable[str]) -> RoleScopes:
        return cls(read=BASE_READ_SCOPES | {s for s in declared if s.endswith(":read")})

    def of_role(self, role: str) -> frozenset[str]:
        if role == TRADER:
            return self.read | TRADER_EXTRA
        if role == VIEWER:
            return self.read
        if role == ADMIN:
            return self.read | ADMIN_EXTRA
        raise ValueError(f"unknown role {role!r}")

    def of_roles(self, roles: Iterable[str]) -> frozenset[str]:
        """The union of the scopes of `roles` (a user with several roles gets all)."""
        out: frozenset[str] = frozenset()
        for role in roles:
            out |= self.of_role(role)
        return out


def normalize_email(email: str) -> str:
    """E-mails are unique per tenant case-insensitively: stored lower-cased."""
    return email.strip().lower()


# ---- passwords -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    """argon2id parameters. Defaults: RFC 9106's second recommended option
    (t=3, m=64 MiB, p=4), argon2-cffi's own defaults."""

    time_cost: int = 3
    memory_cost_kib: int = 65536
    parallelism: int = 4

    def hasher(self) -> PasswordHasher:
        return PasswordHasher(
            time_cost=self.time_cost,
            memory_cost=self.memory_cost_kib,
            parallelism=self.parallelism,
            type=Type.ID,
        )


class Passwords:
    """Hash and check passwords with argon2id; say when a stored hash was made
    with other parameters so login can re-hash it (the password is only known
    at that moment)."""

    def __init__(self, policy: PasswordPolicy) -> None:
        self._hasher = policy.hasher()
        # Verified against when the user does not exist, so an unknown e-mail
        # costs the same time as a wrong password (no user enumeration by timing).
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        """True when `password` matches `stored`; None (no such user) still costs one hash."""
        try:
            return self._hasher.verify(stored if stored is not None else self._dummy, password) and (
                stored is not None
            )
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)


# ---- refresh tokens --------------------------------------------------------------------------

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
