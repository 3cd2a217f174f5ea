"""Identity's ports in process memory, for servicer tests: the store with the
PostgreSQL adapter's transactions, visibility and uniqueness rules, signing
keys, login failures and the API key cache (the same port suites,
``tests/suites/identity_ports.py``).

Transactions run one at a time (one lock for the store: what row locks and
serialisable claims give in PostgreSQL) on a copy of the data that replaces
it only when the block ends normally; committed events are in `events`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import Enum

from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import message as pb_message

from services.identity.apikeys import ApiKeyPrincipal
from services.identity.domain import ADMIN
from services.identity.keys import public_jwk
from services.identity.ports import (
    AlreadyExists,
    ApiKeyRow,
    RefreshRow,
    SigningKey,
    TenantRow,
    UnknownTenant,
    UserRow,
)


@dataclass
class _Data:
    tenants: dict[str, TenantRow] = field(default_factory=dict)
    users: dict[str, UserRow] = field(default_factory=dict)
    refresh: dict[bytes, RefreshRow] = field(default_factory=dict)
    api_keys: dict[str, ApiKeyRow] = field(default_factory=dict)
    idempotency: dict[tuple[str, str, str], tuple[bytes, bytes]] = field(default_factory=dict)

    def copy(self) -> _Data:
        return _Data(
            dict(self.tenants),
            dict(self.users),
            dict(self.refresh),
            dict(self.api_keys),
            dict(self.idempotency),
        )


class _Scope(Enum):
    TENANT = "tenant"
    ANONYMOUS = "anonymous"
    PLATFORM = "platform"


def _usable(expires_at: datetime | None, now: datetime) -> bool:
    return expires_at is None or expires_at > now


class MemoryIdentityTransaction:
    """The IdentityTransaction port on a copy of the store's data."""

    def __init__(self, data: _Data, scope: _Scope, tenant_id: str = "") -> None:
        self._data = data
        self._scope = scope
        self._tenant = tenant_id
        self.events: list[tuple[str, pb_message.Message]] = []

    def _sees(self, tenant_id: str) -> bool:
        if self._scope is _Scope.PLATFORM:
            return True
        return self._scope is _Scope.TENANT and tenant_id == self._tenant

    # ---- tenants

    async def login_tenant(self, slug: str) -> tuple[str, str] | None:
        for row in self._data.tenants.values():
            if row.slug == slug:
                return row.tenant_id, row.status
        return None

    async def insert_tenant(self, row: TenantRow) -> None:
        if row.tenant_id in self._data.tenants or any(
            t.slug == row.slug for t in self._data.tenants.values()
        ):
            raise AlreadyExists(f"tenant slug {row.slug!r} is taken")
        self._data.tenants[row.tenant_id] = row

    async def get_tenant(self, tenant_id: str) -> TenantRow | None:
        row = self._data.tenants.get(tenant_id)
        return row if row is not None and self._sees(row.tenant_id) else None

    async def get_tenant_by_slug(self, slug: str) -> TenantRow | None:
        found = await self.login_tenant(slug)
        return None if found is None else await self.get_tenant(found[0])

    async def list_tenants(self, *, after: str, limit: int) -> list[TenantRow]:
        ids = sorted(t for t in self._data.tenants if t > after and self._sees(t))
        return [self._data.tenants[t] for t in ids[:limit]]

    # ---- users

    def _users(self) -> list[UserRow]:
        return [u for u in self._data.users.values() if self._sees(u.tenant_id)]

    async def insert_user(self, row: UserRow) -> None:
        taken = row.user_id in self._data.users or any(
            u.tenant_id == row.tenant_id and u.email == row.email for u in self._data.users.values()
        )
        if taken:
            raise AlreadyExists(f"e-mail {row.email!r} is already registered")
        if row.tenant_id not in self._data.tenants:
            raise UnknownTenant(f"tenant {row.tenant_id} does not exist")
        self._data.users[row.user_id] = row

    async def get_user(self, user_id: str, *, for_update: bool = False) -> UserRow | None:
        row = self._data.users.get(user_id)
        return row if row is not None and self._sees(row.tenant_id) else None

    async def get_user_by_email(self, email: str) -> UserRow | None:
        return next((u for u in self._users() if u.email == email), None)

    async def list_users(self, *, after: str, limit: int) -> list[UserRow]:
        return sorted((u for u in self._users() if u.user_id > after), key=lambda u: u.user_id)[:limit]

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        row = await self.get_user(user_id)
        if row is not None:
            self._data.users[user_id] = replace(row, password_hash=password_hash)

    async def set_roles(self, user_id: str, roles: Sequence[str]) -> None:
        row = await self.get_user(user_id)
        if row is not None:
            self._data.users[user_id] = replace(row, roles=tuple(roles))

    async def lock_admins(self) -> list[str]:
        return sorted(u.user_id for u in self._users() if ADMIN in u.roles and u.enabled)

    async def users_roles(self, user_ids: Sequence[str]) -> dict[str, tuple[str, ...]]:
        wanted = set(user_ids)
        return {u.user_id: u.roles for u in self._users() if u.user_id in wanted and u.enabled}

    # ---- refresh tokens

    def _refresh(self) -> dict[bytes, RefreshRow]:
        return {h: r for h, r in self._data.refresh.items() if self._sees(r.tenant_id)}

    async def insert_refresh(
        self, token_hash: bytes, tenant_id: str, user_id: str, family_id: str, expires_at: datetime
    ) -> None:
        if token_hash in self._data.refresh:
            raise AlreadyExists("refresh token exists")
        self._data.refresh[token_hash] = RefreshRow(tenant_id, user_id, family_id, expires_at, None, None)

    async def claim_refresh(self, token_hash: bytes) -> RefreshRow | None:
        row = self._refresh().get(token_hash)
        now = datetime.now(UTC)
        if row is None or row.rotated_at is not None or row.revoked_at is not None or row.expires_at <= now:
            return None
        claimed = replace(row, rotated_at=now)
        self._data.refresh[token_hash] = claimed
        return claimed

    async def find_refresh(self, token_hash: bytes) -> RefreshRow | None:
        return self._refresh().get(token_hash)

    async def _revoke(self, matches: dict[bytes, RefreshRow]) -> int:
        now = datetime.now(UTC)
        count = 0
        for token_hash, row in matches.items():
            if row.revoked_at is None and row.rotated_at is None and row.expires_at > now:
                self._data.refresh[token_hash] = replace(row, revoked_at=now)
                count += 1
        return count

    async def revoke_family(self, family_id: str) -> int:
        return await self._revoke({h: r for h, r in self._refresh().items() if r.family_id == family_id})

    async def revoke_user_sessions(self, user_id: str) -> int:
        return await self._revoke({h: r for h, r in self._refresh().items() if r.user_id == user_id})

    # ---- API keys

    def _keys(self) -> list[ApiKeyRow]:
        return [k for k in self._data.api_keys.values() if self._sees(k.tenant_id)]

    async def insert_api_key(self, row: ApiKeyRow) -> None:
        if any(
            k.tenant_id == row.tenant_id
            and k.owner_user_id == row.owner_user_id
            and k.name == row.name
            and k.revoked_at is None
            for k in self._data.api_keys.values()
        ):
            raise AlreadyExists(f"an active API key named {row.name!r} exists")
        if row.api_key_id in self._data.api_keys or any(
            k.key_hash == row.key_hash for k in self._data.api_keys.values()
        ):
            raise AlreadyExists("API key exists")
        self._data.api_keys[row.api_key_id] = row

    async def get_api_key(self, api_key_id: str, *, for_update: bool = False) -> ApiKeyRow | None:
        row = self._data.api_keys.get(api_key_id)
        return row if row is not None and self._sees(row.tenant_id) else None

    async def revoke_api_key(self, api_key_id: str, at: datetime) -> None:
        row = await self.get_api_key(api_key_id)
        if row is not None and row.revoked_at is None:
            self._data.api_keys[api_key_id] = replace(row, revoked_at=at)

    async def list_api_keys(
        self, *, owner: str | None, before: str | None, limit: int, include_revoked: bool
    ) -> list[ApiKeyRow]:
        now = datetime.now(UTC)
        found = [
            k
            for k in self._keys()
            if (owner is None or k.owner_user_id == owner)
            and (before is None or k.api_key_id < before)
            and (include_revoked or (k.revoked_at is None and _usable(k.expires_at, now)))
        ]
        return sorted(found, key=lambda k: k.api_key_id, reverse=True)[:limit]

    async def active_api_keys(self, *, owner: str | None = None) -> list[ApiKeyRow]:
        now = datetime.now(UTC)
        return [
            k
            for k in self._keys()
            if (owner is None or k.owner_user_id == owner)
            and k.revoked_at is None
            and _usable(k.expires_at, now)
        ]

    # ---- idempotency and events

    async def idempotent_response(self, tenant_id: str, method: str, key: str) -> tuple[bytes, bytes] | None:
        if not self._sees(tenant_id):
            return None
        return self._data.idempotency.get((tenant_id, method, key))

    async def save_idempotent_response(
        self, tenant_id: str, method: str, key: str, request_hash: bytes, response: bytes
    ) -> None:
        if (tenant_id, method, key) in self._data.idempotency:
            raise AlreadyExists("idempotency key recorded")
        self._data.idempotency[(tenant_id, method, key)] = (request_hash, response)

    async def record(self, tenant_id: str, payload: pb_message.Message) -> None:
        self.events.append((tenant_id, payload))


class MemoryIdentityStore:
    """The IdentityStore port in memory; `events` holds the committed events, in order."""

    def __init__(self) -> None:
        self._data = _Data()
        self._lock = asyncio.Lock()
        self.events: list[tuple[str, pb_message.Message]] = []

    @asynccontextmanager
    async def _transaction(
        self, scope: _Scope, tenant_id: str = ""
    ) -> AsyncIterator[MemoryIdentityTransaction]:
        async with self._lock:
            tx = MemoryIdentityTransaction(self._data.copy(), scope, tenant_id)
            yield tx
            self._data = tx._data
            self.events.extend(tx.events)

    def tenant(self, tenant_id: str) -> AbstractAsyncContextManager[MemoryIdentityTransaction]:
        if not tenant_id:
            raise ValueError("tenant_id must not be empty")
        return self._transaction(_Scope.TENANT, tenant_id)

    def anonymous(self) -> AbstractAsyncContextManager[MemoryIdentityTransaction]:
        return self._transaction(_Scope.ANONYMOUS)

    def platform(self) -> AbstractAsyncContextManager[MemoryIdentityTransaction]:
        return self._transaction(_Scope.PLATFORM)


class MemoryEventRelay:
    """The EventRelay port in memory: counts the wake-ups (the events are the store's)."""

    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1


class MemorySigningKeyStore:
    """The SigningKeyStore port in memory (keys unencrypted: nothing leaves the process)."""

    def __init__(self) -> None:
        self.current_unreadable = False
        self._current: SigningKey | None = None
        # (public JWK, created at, publish until) of retired keys.
        self._retired: list[tuple[dict[str, str], datetime, datetime]] = []
        self._lock = asyncio.Lock()

    async def rotate(self, *, retire_grace_s: float, only_if_older_than_s: float | None = None) -> str:
        async with self._lock:
            now = datetime.now(UTC)
            current = self._current
            if (
                current is not None
                and only_if_older_than_s is not None
                and now - current.created_at < timedelta(seconds=only_if_older_than_s)
            ):
                return current.kid
            private = ec.generate_private_key(ec.SECP256R1())
            kid = public_jwk(private.public_key())["kid"]
            if current is not None:
                until = now + timedelta(seconds=retire_grace_s)
                self._retired.append(
                    (public_jwk(current.private_key.public_key()), current.created_at, until)
                )
            self._retired = [r for r in self._retired if r[2] >= now - timedelta(days=7)]
            self._current = SigningKey(kid, private, now)
            return kid

    async def current(self) -> SigningKey | None:
        return self._current

    async def published(self) -> list[dict[str, str]]:
        now = datetime.now(UTC)
        retired = sorted((r for r in self._retired if r[2] > now), key=lambda r: r[1], reverse=True)
        current = [] if self._current is None else [public_jwk(self._current.private_key.public_key())]
        return current + [jwk for jwk, _, _ in retired]


class MemoryLoginFailures:
    """The LoginFailures port in memory (windows on the monotonic clock)."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, float]] = {}  # key -> (failures, window end)

    def _live(self, key: str) -> tuple[int, float] | None:
        found = self._counts.get(key)
        if found is not None and found[1] <= time.monotonic():
            del self._counts[key]
            return None
        return found

    async def count(self, key: str) -> tuple[int, float]:
        found = self._live(key)
        return (0, 0.0) if found is None else (found[0], float(int(found[1] - time.monotonic())))

    async def add(self, key: str, *, window_s: int) -> None:
        found = self._live(key)
        failures, ends = (0, time.monotonic() + window_s) if found is None else found
        self._counts[key] = (failures + 1, ends)

    async def clear(self, key: str) -> None:
        self._counts.pop(key, None)


class MemoryApiKeyCache:
    """The ApiKeyCache port in memory: `principals` by secret hash (expiry
    kept as the principal's own time), `used` by key id."""

    def __init__(self) -> None:
        self.principals: dict[bytes, ApiKeyPrincipal] = {}
        self.used: dict[str, float] = {}

    async def publish(self, secret_hash: bytes, principal: ApiKeyPrincipal, *, now: float) -> None:
        if principal.expires_at is not None and principal.expires_at <= now:
            self.principals.pop(secret_hash, None)
        else:
            self.principals[secret_hash] = principal

    async def withdraw(self, secret_hash: bytes) -> None:
        self.principals.pop(secret_hash, None)

    async def principal(self, secret_hash: bytes) -> ApiKeyPrincipal | None:
        principal = self.principals.get(secret_hash)
        if principal is not None and principal.expires_at is not None and principal.expires_at <= time.time():
            return None  # expired, as a key with a TTL in Redis
        return principal

    async def last_used(self, api_key_ids: Sequence[str]) -> list[float | None]:
        return [self.used.get(i) for i in api_key_ids]
