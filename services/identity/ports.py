"""The interfaces identity's servicer depends on, and their values.

- :class:`IdentityStore`: tenants, users, refresh tokens, API keys and
  idempotent responses, in transactions (:class:`IdentityTransaction`) that
  also carry the events of their changes (the outbox);
- :class:`SigningKeyStore`: the ES256 signing keys (:class:`services.identity.keys.KeyRing`
  signs and serves the JWKS from it);
- :class:`LoginFailures`: the failed-login counter of the login rate limit;
- :class:`ApiKeyCache`: the API keys the gateway verifies (services.identity.apikeys).

Adapters: `adapters.postgres` (store, signing keys), `adapters.redis` (login
failures, API key cache), `adapters.memory` (all four, in process). One suite
per port, ``tests/suites/identity_ports.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import message as pb_message

from services.identity.apikeys import ApiKeyPrincipal


class UnknownTenant(Exception):
    """The tenant a row refers to does not exist."""


class AlreadyExists(Exception):
    """A uniqueness rule said no (slug, e-mail, API key name)."""


@dataclass(frozen=True, slots=True)
class TenantRow:
    tenant_id: str
    slug: str
    display_name: str
    status: str
    is_platform: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class UserRow:
    user_id: str
    tenant_id: str
    email: str
    display_name: str
    password_hash: str
    roles: tuple[str, ...]
    enabled: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    api_key_id: str
    tenant_id: str
    owner_user_id: str
    name: str
    key_prefix: str
    key_hash: bytes
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class RefreshRow:
    tenant_id: str
    user_id: str
    family_id: str
    expires_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None


class IdentityTransaction(Protocol):
    """One transaction of the identity store: everything done through it
    commits together when its block ends normally, and nothing of it when the
    block raises. What it sees depends on how it was opened (see
    :class:`IdentityStore`). Ids are UUIDv7 text (callers make them), so id
    order is creation order."""

    # ---- tenants

    async def login_tenant(self, slug: str) -> tuple[str, str] | None:
        """(tenant id, status) of the tenant with `slug`, whoever may see it (Login's lookup)."""
        ...

    async def insert_tenant(self, row: TenantRow) -> None:
        """Store a new tenant; AlreadyExists when its slug is taken."""
        ...

    async def get_tenant(self, tenant_id: str) -> TenantRow | None: ...

    async def get_tenant_by_slug(self, slug: str) -> TenantRow | None: ...

    async def list_tenants(self, *, after: str, limit: int) -> list[TenantRow]:
        """Oldest first: ids greater than `after`, at most `limit`."""
        ...

    # ---- users

    async def insert_user(self, row: UserRow) -> None:
        """Store a new user; AlreadyExists when its e-mail is registered in
        the tenant, UnknownTenant when the tenant has no row."""
        ...

    async def get_user(self, user_id: str, *, for_update: bool = False) -> UserRow | None:
        """The user; `for_update` holds it until the transaction ends."""
        ...

    async def get_user_by_email(self, email: str) -> UserRow | None: ...

    async def list_users(self, *, after: str, limit: int) -> list[UserRow]:
        """Oldest first: ids greater than `after`, at most `limit`."""
        ...

    async def set_password_hash(self, user_id: str, password_hash: str) -> None: ...

    async def set_roles(self, user_id: str, roles: Sequence[str]) -> None: ...

    async def lock_admins(self) -> list[str]:
        """Ids of the tenant's enabled admins, ordered, held until the
        transaction ends (serialises last-admin checks)."""
        ...

    async def users_roles(self, user_ids: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """The roles of those of `user_ids` that are enabled users."""
        ...

    # ---- refresh tokens

    async def insert_refresh(
        self, token_hash: bytes, tenant_id: str, user_id: str, family_id: str, expires_at: datetime
    ) -> None: ...

    async def claim_refresh(self, token_hash: bytes) -> RefreshRow | None:
        """Mark an active, unexpired token rotated and return it; None if it
        is not active (unknown, rotated, revoked or expired). Two concurrent
        claims of one token: one wins."""
        ...

    async def find_refresh(self, token_hash: bytes) -> RefreshRow | None: ...

    async def revoke_family(self, family_id: str) -> int:
        """Revoke the family's tokens that could still be used; how many."""
        ...

    async def revoke_user_sessions(self, user_id: str) -> int:
        """Revoke every usable token of the user; how many."""
        ...

    # ---- API keys

    async def insert_api_key(self, row: ApiKeyRow) -> None:
        """Store a new key; AlreadyExists when its owner has an unrevoked key of that name."""
        ...

    async def get_api_key(self, api_key_id: str, *, for_update: bool = False) -> ApiKeyRow | None: ...

    async def revoke_api_key(self, api_key_id: str, at: datetime) -> None:
        """Revoke the key at `at` (a revoked key stays revoked at its first time)."""
        ...

    async def list_api_keys(
        self, *, owner: str | None, before: str | None, limit: int, include_revoked: bool
    ) -> list[ApiKeyRow]:
        """Newest first (ids less than `before`); `owner` None: every key of
        the tenant; without `include_revoked`, only keys that work now."""
        ...

    async def active_api_keys(self, *, owner: str | None = None) -> list[ApiKeyRow]:
        """Keys that work now (not revoked, not expired), of one user or every key seen."""
        ...

    # ---- idempotency and events

    async def idempotent_response(self, tenant_id: str, method: str, key: str) -> tuple[bytes, bytes] | None:
        """(request hash, response) recorded for this key of the method, if any."""
        ...

    async def save_idempotent_response(
        self, tenant_id: str, method: str, key: str, request_hash: bytes, response: bytes
    ) -> None: ...

    async def record(self, tenant_id: str, payload: pb_message.Message) -> None:
        """The event of a change, published (at least once, in order per
        tenant) exactly when the transaction commits."""
        ...


class EventRelay(Protocol):
    """The relay that publishes committed events (runtime.outbox.OutboxRelay)."""

    def wake(self) -> None:
        """A hint: events were just committed, publish them now rather than at the next poll."""
        ...


class IdentityStore(Protocol):
    """Identity's data, in transactions of three kinds:

    - :meth:`tenant`: one tenant's rows only (another tenant's do not exist
      for it); an empty tenant id raises ValueError;
    - :meth:`anonymous`: no tenant's rows at all, only Login's slug lookup
      (:meth:`IdentityTransaction.login_tenant`);
    - :meth:`platform`: every tenant's rows, for the cross-tenant jobs
      (delegations, the operator's tenant reads, the API key cache rebuild).
    """

    def tenant(self, tenant_id: str) -> AbstractAsyncContextManager[IdentityTransaction]: ...

    def anonymous(self) -> AbstractAsyncContextManager[IdentityTransaction]: ...

    def platform(self) -> AbstractAsyncContextManager[IdentityTransaction]: ...


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey
    created_at: datetime


class SigningKeyStore(Protocol):
    """The platform's signing keys: at most one current key; retired keys
    stay published for a grace period (tokens they signed may still be valid)."""

    # Set when the current key cannot be read (sealed with another key-encryption key).
    current_unreadable: bool

    async def rotate(self, *, retire_grace_s: float, only_if_older_than_s: float | None = None) -> str:
        """Make a new current key and retire the previous one (published for
        `retire_grace_s` more). With `only_if_older_than_s`, rotate only when
        there is no current key or it is older than that; returns the current
        kid either way. Concurrent rotations serialize."""
        ...

    async def current(self) -> SigningKey | None:
        """The current key, or None (none yet, or unreadable)."""
        ...

    async def published(self) -> list[dict[str, str]]:
        """Public JWKs to publish: the current key first, then retired keys
        still in their grace period, newest first."""
        ...


class LoginFailures(Protocol):
    """Failed logins per key (a hash of tenant slug and e-mail), counted in a
    window that starts at the first failure."""

    async def count(self, key: str) -> tuple[int, float]:
        """(failures in the current window, seconds until it ends; 0 when none)."""
        ...

    async def add(self, key: str, *, window_s: int) -> None:
        """Count one failure (the first one opens a window of `window_s`)."""
        ...

    async def clear(self, key: str) -> None:
        """Forget the key's failures (a successful login)."""
        ...


class ApiKeyCache(Protocol):
    """The API keys the gateway accepts, by secret hash (what
    :class:`services.identity.apikeys.ApiKeyVerifier` reads), and when each
    was last used."""

    async def publish(self, secret_hash: bytes, principal: ApiKeyPrincipal, *, now: float) -> None:
        """Make a key usable or update it (an already expired key is removed instead)."""
        ...

    async def withdraw(self, secret_hash: bytes) -> None:
        """Make a key unusable from now on."""
        ...

    async def principal(self, secret_hash: bytes) -> ApiKeyPrincipal | None:
        """Whom a key with this secret hash acts as now; None when it is not usable."""
        ...

    async def last_used(self, api_key_ids: Sequence[str]) -> list[float | None]:
        """When each key was last used (Unix seconds), aligned with `api_key_ids`."""
        ...
