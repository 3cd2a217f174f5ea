"""PostgreSQL adapter of identity (schema ``identity``).

Functions take a connection so the servicer composes them into one
transaction. Tenant data is only touched through :func:`tenant_tx` (RLS
enforced); :func:`anonymous_tx` runs as the tenant role with no tenant at all
(Login's slug lookup, through the ``login_tenant`` definer function);
:func:`platform_tx` is the service role, for the few cross-tenant jobs named in
the migration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from runtime.storage.postgres import TENANT_ROLE_SQL, tenant_transaction


class UnknownTenant(Exception):
    """The tenant a row refers to does not exist."""


class AlreadyExists(Exception):
    """A unique constraint said no (slug, e-mail, API key name)."""


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


_TENANT = "tenant_id, slug, display_name, status, is_platform, created_at"
_USER = "user_id, tenant_id, email, display_name, password_hash, roles, enabled, created_at"
_KEY = (
    "api_key_id, tenant_id, owner_user_id, name, key_prefix, key_hash, scopes, "
    "created_at, expires_at, revoked_at"
)


def _tenant(r: asyncpg.Record) -> TenantRow:
    return TenantRow(**dict(r))


def _user(r: asyncpg.Record) -> UserRow:
    d = dict(r)
    d["roles"] = tuple(d["roles"])
    return UserRow(**d)


def _key(r: asyncpg.Record) -> ApiKeyRow:
    d = dict(r)
    d["scopes"] = tuple(d["scopes"])
    return ApiKeyRow(**d)


# ---- transactions ------------------------------------------------------------------------------


@asynccontextmanager
async def tenant_tx(pool: asyncpg.Pool, tenant_id: str) -> AsyncIterator[asyncpg.Connection]:
    """A transaction of `tenant_id` under row-level security."""
    async with tenant_transaction(pool, tenant_id) as conn:
        yield conn


@asynccontextmanager
async def anonymous_tx(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """The pool's tenant role with no tenant set: sees no tenant row at all."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(f"SELECT set_config('role', {TENANT_ROLE_SQL}, true)")
        yield conn


@asynccontextmanager
async def platform_tx(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """The service's login role (its ``service_role`` policies of migration
    0002 let it see every tenant's rows): only for the cross-tenant jobs."""
    async with pool.acquire() as conn, conn.transaction():
        yield conn


# ---- tenants -----------------------------------------------------------------------------------


async def login_tenant(conn: asyncpg.Connection, slug: str) -> tuple[str, str] | None:
    row = await conn.fetchrow("SELECT tenant_id, status FROM identity.login_tenant($1)", slug)
    return None if row is None else (row["tenant_id"], row["status"])


async def insert_tenant(conn: asyncpg.Connection, row: TenantRow) -> None:
    try:
        async with conn.transaction():
            await conn.execute(
                f"INSERT INTO identity.tenants ({_TENANT}) VALUES ($1, $2, $3, $4, $5, $6)",
                row.tenant_id,
                row.slug,
                row.display_name,
                row.status,
                row.is_platform,
                row.created_at,
            )
    except asyncpg.UniqueViolationError as exc:
        raise AlreadyExists(f"tenant slug {row.slug!r} is taken") from exc


async def get_tenant(conn: asyncpg.Connection, tenant_id: str) -> TenantRow | None:
    row = await conn.fetchrow(f"SELECT {_TENANT} FROM identity.tenants WHERE tenant_id = $1", tenant_id)
    return None if row is None else _tenant(row)


async def get_tenant_by_slug(conn: asyncpg.Connection, slug: str) -> TenantRow | None:
    row = await conn.fetchrow(f"SELECT {_TENANT} FROM identity.tenants WHERE slug = $1", slug)
    return None if row is None else _tenant(row)


async def list_tenants(conn: asyncpg.Connection, *, after: str, limit: int) -> list[TenantRow]:
    """Oldest first (ids are UUIDv7, so id order is creation order)."""
    rows = await conn.fetch(
        f"SELECT {_TENANT} FROM identity.tenants WHERE tenant_id > $1 ORDER BY tenant_id LIMIT $2",
        after,
        limit,
    )
    return [_tenant(r) for r in rows]


# ---- users -------------------------------------------------------------------------------------


async def insert_user(conn: asyncpg.Connection, row: UserRow) -> None:
    try:
        async with conn.transaction():
            await conn.execute(
                f"INSERT INTO identity.users ({_USER}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                row.user_id,
                row.tenant_id,
                row.email,
                row.display_name,
                row.password_hash,
                list(row.roles),
                row.enabled,
                row.created_at,
            )
    except asyncpg.UniqueViolationError as exc:
        raise AlreadyExists(f"e-mail {row.email!r} is already registered") from exc
    except asyncpg.ForeignKeyViolationError as exc:
        # The caller's tenant has no row (e.g. an API key of a deleted tenant).
        raise UnknownTenant(f"tenant {row.tenant_id} does not exist") from exc


async def get_user(conn: asyncpg.Connection, user_id: str, *, for_update: bool = False) -> UserRow | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_USER} FROM identity.users WHERE user_id = $1{lock}", user_id)
    return None if row is None else _user(row)


async def get_user_by_email(conn: asyncpg.Connection, email: str) -> UserRow | None:
    row = await conn.fetchrow(f"SELECT {_USER} FROM identity.users WHERE email = $1", email)
    return None if row is None else _user(row)


async def list_users(conn: asyncpg.Connection, *, after: str, limit: int) -> list[UserRow]:
    rows = await conn.fetch(
        f"SELECT {_USER} FROM identity.users WHERE user_id > $1 ORDER BY user_id LIMIT $2", after, limit
    )
    return [_user(r) for r in rows]


async def set_password_hash(conn: asyncpg.Connection, user_id: str, password_hash: str) -> None:
    await conn.execute(
        "UPDATE identity.users SET password_hash = $2, updated_at = now() WHERE user_id = $1",
        user_id,
        password_hash,
    )


async def set_roles(conn: asyncpg.Connection, user_id: str, roles: Sequence[str]) -> None:
    await conn.execute(
        "UPDATE identity.users SET roles = $2, updated_at = now() WHERE user_id = $1", user_id, list(roles)
    )


async def lock_admins(conn: asyncpg.Connection) -> list[str]:
    """Ids of the tenant's enabled admins, locked (serialises last-admin checks)."""
    rows = await conn.fetch(
        "SELECT user_id FROM identity.users WHERE 'ADMIN' = ANY(roles) AND enabled"
        " ORDER BY user_id FOR UPDATE"
    )
    return [r["user_id"] for r in rows]


# ---- refresh tokens ----------------------------------------------------------------------------


async def insert_refresh(
    conn: asyncpg.Connection,
    token_hash: bytes,
    tenant_id: str,
    user_id: str,
    family_id: str,
    expires_at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO identity.refresh_tokens (token_hash, tenant_id, user_id, family_id, expires_at)"
        " VALUES ($1, $2, $3, $4, $5)",
        token_hash,
        tenant_id,
        user_id,
        family_id,
        expires_at,
    )


async def claim_refresh(conn: asyncpg.Connection, token_hash: bytes) -> RefreshRow | None:
    """Mark an active, unexpired token rotated and return it; None if it is
    not active (unknown, already rotated, revoked or expired). Atomic, so two
    concurrent refreshes of one token cannot both succeed."""
    row = await conn.fetchrow(
        """UPDATE identity.refresh_tokens SET rotated_at = now()
           WHERE token_hash = $1 AND rotated_at IS NULL AND revoked_at IS NULL AND expires_at > now()
           RETURNING tenant_id, user_id, family_id, expires_at, rotated_at, revoked_at""",
        token_hash,
    )
    return None if row is None else RefreshRow(**dict(row))


async def find_refresh(conn: asyncpg.Connection, token_hash: bytes) -> RefreshRow | None:
    row = await conn.fetchrow(
        "SELECT tenant_id, user_id, family_id, expires_at, rotated_at, revoked_at"
        " FROM identity.refresh_tokens WHERE token_hash = $1",
        token_hash,
    )
    return None if row is None else RefreshRow(**dict(row))


async def revoke_family(conn: asyncpg.Connection, family_id: str) -> int:
    """Revoke the family's tokens that could still be used; returns how many."""
    result = await conn.execute(
        """UPDATE identity.refresh_tokens SET revoked_at = now()
           WHERE family_id = $1 AND revoked_at IS NULL AND rotated_at IS NULL AND expires_at > now()""",
        family_id,
    )
    return int(result.split()[-1])


async def revoke_user_sessions(conn: asyncpg.Connection, user_id: str) -> int:
    result = await conn.execute(
        """UPDATE identity.refresh_tokens SET revoked_at = now()
           WHERE user_id = $1 AND revoked_at IS NULL AND rotated_at IS NULL AND expires_at > now()""",
        user_id,
    )
    return int(result.split()[-1])


# ---- API keys ----------------------------------------------------------------------------------


async def insert_api_key(conn: asyncpg.Connection, row: ApiKeyRow) -> None:
    try:
        async with conn.transaction():
            await conn.execute(
                f"INSERT INTO identity.api_keys ({_KEY}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                row.api_key_id,
                row.tenant_id,
                row.owner_user_id,
                row.name,
                row.key_prefix,
                row.key_hash,
                list(row.scopes),
                row.created_at,
                row.expires_at,
                row.revoked_at,
            )
    except asyncpg.UniqueViolationError as exc:
        raise AlreadyExists(f"an active API key named {row.name!r} exists") from exc


async def get_api_key(
    conn: asyncpg.Connection, api_key_id: str, *, for_update: bool = False
) -> ApiKeyRow | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_KEY} FROM identity.api_keys WHERE api_key_id = $1{lock}", api_key_id)
    return None if row is None else _key(row)


async def revoke_api_key(conn: asyncpg.Connection, api_key_id: str, at: datetime) -> None:
    await conn.execute(
        "UPDATE identity.api_keys SET revoked_at = $2 WHERE api_key_id = $1 AND revoked_at IS NULL",
        api_key_id,
        at,
    )


async def list_api_keys(
    conn: asyncpg.Connection, *, owner: str | None, before: str | None, limit: int, include_revoked: bool
) -> list[ApiKeyRow]:
    """Newest first; `owner` None means every key of the tenant."""
    rows = await conn.fetch(
        f"""SELECT {_KEY} FROM identity.api_keys
            WHERE ($1::text IS NULL OR owner_user_id = $1)
              AND ($2::text IS NULL OR api_key_id < $2)
              AND ($3 OR (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())))
            ORDER BY api_key_id DESC LIMIT $4""",
        owner,
        before,
        include_revoked,
        limit,
    )
    return [_key(r) for r in rows]


async def active_api_keys(conn: asyncpg.Connection, *, owner: str | None = None) -> list[ApiKeyRow]:
    """Keys that work now (of one user, or every key the connection may see)."""
    rows = await conn.fetch(
        f"""SELECT {_KEY} FROM identity.api_keys
            WHERE ($1::text IS NULL OR owner_user_id = $1)
              AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())""",
        owner,
    )
    return [_key(r) for r in rows]


async def users_roles(conn: asyncpg.Connection, user_ids: Sequence[str]) -> dict[str, tuple[str, ...]]:
    rows = await conn.fetch(
        "SELECT user_id, roles FROM identity.users WHERE user_id = ANY($1::text[]) AND enabled",
        list(user_ids),
    )
    return {r["user_id"]: tuple(r["roles"]) for r in rows}


# ---- idempotency -------------------------------------------------------------------------------


async def idempotent_response(
    conn: asyncpg.Connection, tenant_id: str, method: str, key: str
) -> tuple[bytes, bytes] | None:
    """(request hash, response) recorded for this key, if any."""
    row = await conn.fetchrow(
        "SELECT request_hash, response FROM identity.idempotency"
        " WHERE tenant_id = $1 AND method = $2 AND key = $3",
        tenant_id,
        method,
        key,
    )
    return None if row is None else (bytes(row["request_hash"]), bytes(row["response"]))


async def save_idempotent_response(
    conn: asyncpg.Connection, tenant_id: str, method: str, key: str, request_hash: bytes, response: bytes
) -> None:
    await conn.execute(
        "INSERT INTO identity.idempotency (tenant_id, method, key, request_hash, response)"
        " VALUES ($1, $2, $3, $4, $5)",
        tenant_id,
        method,
        key,
        request_hash,
        response,
    )
