"""PostgreSQL adapters of identity (schema ``identity``): the IdentityStore and
SigningKeyStore ports of services.identity.ports.

A transaction (:class:`PostgresIdentityTransaction`) is one connection in one
PostgreSQL transaction. Tenant data is only touched in :meth:`PostgresIdentityStore.tenant`
transactions (RLS enforced); :meth:`~PostgresIdentityStore.anonymous` runs as
the tenant role with no tenant at all (Login's slug lookup, through the
``login_tenant`` definer function); :meth:`~PostgresIdentityStore.platform`
is the service role, for the few cross-tenant jobs named in the migration.

Events go through identity's outbox (runtime/outbox.py): :meth:`PostgresIdentityTransaction.record`
adds the event to ``identity.outbox`` inside the transaction, so an event
exists exactly when its change committed; the shared
:class:`runtime.outbox.OutboxRelay` publishes it to Kafka (at least once,
consumers dedupe by event id), keyed by tenant: one tenant's events go out in
the order they were written. Events never carry passwords, secrets or hashes
(the payload types have no such fields).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf import message as pb_message

from runtime.context import current_context
from runtime.messaging import new_envelope
from runtime.outbox import KAFKA, OutboxWriter
from runtime.storage.postgres import TENANT_ROLE_SQL, tenant_transaction
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

log = logging.getLogger(__name__)

PRODUCER = "identity"
OUTBOX = OutboxWriter("identity")
# Advisory lock serialising rotations of concurrent replicas / the CLI.
_ROTATE_LOCK = 0x6B657973  # "keys"

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


class PostgresIdentityTransaction:
    """The IdentityTransaction port on one connection inside its transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    # ---- tenants

    async def login_tenant(self, slug: str) -> tuple[str, str] | None:
        row = await self._conn.fetchrow("SELECT tenant_id, status FROM identity.login_tenant($1)", slug)
        return None if row is None else (row["tenant_id"], row["status"])

    async def insert_tenant(self, row: TenantRow) -> None:
        try:
            async with self._conn.transaction():
                await self._conn.execute(
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

    async def get_tenant(self, tenant_id: str) -> TenantRow | None:
        row = await self._conn.fetchrow(
            f"SELECT {_TENANT} FROM identity.tenants WHERE tenant_id = $1", tenant_id
        )
        return None if row is None else _tenant(row)

    async def get_tenant_by_slug(self, slug: str) -> TenantRow | None:
        row = await self._conn.fetchrow(f"SELECT {_TENANT} FROM identity.tenants WHERE slug = $1", slug)
        return None if row is None else _tenant(row)

    async def list_tenants(self, *, after: str, limit: int) -> list[TenantRow]:
        """Oldest first (ids are UUIDv7, so id order is creation order)."""
        rows = await self._conn.fetch(
            f"SELECT {_TENANT} FROM identity.tenants WHERE tenant_id > $1 ORDER BY tenant_id LIMIT $2",
            after,
            limit,
        )
        return [_tenant(r) for r in rows]

    # ---- users

    async def insert_user(self, row: UserRow) -> None:
        try:
            async with self._conn.transaction():
                await self._conn.execute(
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

    async def get_user(self, user_id: str, *, for_update: bool = False) -> UserRow | None:
        lock = " FOR UPDATE" if for_update else ""
        row = await self._conn.fetchrow(
            f"SELECT {_USER} FROM identity.users WHERE user_id = $1{lock}", user_id
        )
        return None if row is None else _user(row)

    async def get_user_by_email(self, email: str) -> UserRow | None:
        row = await self._conn.fetchrow(f"SELECT {_USER} FROM identity.users WHERE email = $1", email)
        return None if row is None else _user(row)

    async def list_users(self, *, after: str, limit: int) -> list[UserRow]:
        rows = await self._conn.fetch(
            f"SELECT {_USER} FROM identity.users WHERE user_id > $1 ORDER BY user_id LIMIT $2", after, limit
        )
        return [_user(r) for r in rows]

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        await self._conn.execute(
            "UPDATE identity.users SET password_hash = $2, updated_at = now() WHERE user_id = $1",
            user_id,
            password_hash,
        )

    async def set_roles(self, user_id: str, roles: Sequence[str]) -> None:
        await self._conn.execute(
            "UPDATE identity.users SET roles = $2, updated_at = now() WHERE user_id = $1",
            user_id,
            list(roles),
        )

    async def lock_admins(self) -> list[str]:
        """Ids of the tenant's enabled admins, locked (serialises last-admin checks)."""
        rows = await self._conn.fetch(
            "SELECT user_id FROM identity.users WHERE 'ADMIN' = ANY(roles) AND enabled"
            " ORDER BY user_id FOR UPDATE"
        )
        return [r["user_id"] for r in rows]

    # ---- refresh tokens

    async def insert_refresh(
        self,
        token_hash: bytes,
        tenant_id: str,
        user_id: str,
        family_id: str,
        expires_at: datetime,
    ) -> None:
        await self._conn.execute(
            "INSERT INTO identity.refresh_tokens (token_hash, tenant_id, user_id, family_id, expires_at)"
            " VALUES ($1, $2, $3, $4, $5)",
            token_hash,
            tenant_id,
            user_id,
            family_id,
            expires_at,
        )

    async def claim_refresh(self, token_hash: bytes) -> RefreshRow | None:
        """Mark an active, unexpired token rotated and return it; None if it is
        not active (unknown, already rotated, revoked or expired). Atomic, so two
        concurrent refreshes of one token cannot both succeed."""
        row = await self._conn.fetchrow(
            """UPDATE identity.refresh_tokens SET rotated_at = now()
               WHERE token_hash = $1 AND rotated_at IS NULL AND revoked_at IS NULL AND expires_at > now()
               RETURNING tenant_id, user_id, family_id, expires_at, rotated_at, revoked_at""",
            token_hash,
        )
        return None if row is None else RefreshRow(**dict(row))

    async def find_refresh(self, token_hash: bytes) -> RefreshRow | None:
        row = await self._conn.fetchrow(
            "SELECT tenant_id, user_id, family_id, expires_at, rotated_at, revoked_at"
            " FROM identity.refresh_tokens WHERE token_hash = $1",
            token_hash,
        )
        return None if row is None else RefreshRow(**dict(row))

    async def revoke_family(self, family_id: str) -> int:
        """Revoke the family's tokens that could still be used; returns how many."""
        result = await self._conn.execute(
            """UPDATE identity.refresh_tokens SET revoked_at = now()
               WHERE family_id = $1 AND revoked_at IS NULL AND rotated_at IS NULL AND expires_at > now()""",
            family_id,
        )
        return int(result.split()[-1])

    async def revoke_user_sessions(self, user_id: str) -> int:
        result = await self._conn.execute(
            """UPDATE identity.refresh_tokens SET revoked_at = now()
               WHERE user_id = $1 AND revoked_at IS NULL AND rotated_at IS NULL AND expires_at > now()""",
            user_id,
        )
        return int(result.split()[-1])

    # ---- API keys

    async def insert_api_key(self, row: ApiKeyRow) -> None:
        try:
            async with self._conn.transaction():
                await self._conn.execute(
                    f"INSERT INTO identity.api_keys ({_KEY})"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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

    async def get_api_key(self, api_key_id: str, *, for_update: bool = False) -> ApiKeyRow | None:
        lock = " FOR UPDATE" if for_update else ""
        row = await self._conn.fetchrow(
            f"SELECT {_KEY} FROM identity.api_keys WHERE api_key_id = $1{lock}", api_key_id
        )
        return None if row is None else _key(row)

    async def revoke_api_key(self, api_key_id: str, at: datetime) -> None:
        await self._conn.execute(
            "UPDATE identity.api_keys SET revoked_at = $2 WHERE api_key_id = $1 AND revoked_at IS NULL",
            api_key_id,
            at,
        )

    async def list_api_keys(
        self, *, owner: str | None, before: str | None, limit: int, include_revoked: bool
    ) -> list[ApiKeyRow]:
        """Newest first; `owner` None means every key of the tenant."""
        rows = await self._conn.fetch(
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

    async def active_api_keys(self, *, owner: str | None = None) -> list[ApiKeyRow]:
        """Keys that work now (of one user, or every key the connection may see)."""
        rows = await self._conn.fetch(
            f"""SELECT {_KEY} FROM identity.api_keys
                WHERE ($1::text IS NULL OR owner_user_id = $1)
                  AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())""",
            owner,
        )
        return [_key(r) for r in rows]

    async def users_roles(self, user_ids: Sequence[str]) -> dict[str, tuple[str, ...]]:
        rows = await self._conn.fetch(
            "SELECT user_id, roles FROM identity.users WHERE user_id = ANY($1::text[]) AND enabled",
            list(user_ids),
        )
        return {r["user_id"]: tuple(r["roles"]) for r in rows}

    # ---- idempotency

    async def idempotent_response(self, tenant_id: str, method: str, key: str) -> tuple[bytes, bytes] | None:
        """(request hash, response) recorded for this key, if any."""
        row = await self._conn.fetchrow(
            "SELECT request_hash, response FROM identity.idempotency"
            " WHERE tenant_id = $1 AND method = $2 AND key = $3",
            tenant_id,
            method,
            key,
        )
        return None if row is None else (bytes(row["request_hash"]), bytes(row["response"]))

    async def save_idempotent_response(
        self, tenant_id: str, method: str, key: str, request_hash: bytes, response: bytes
    ) -> None:
        await self._conn.execute(
            "INSERT INTO identity.idempotency (tenant_id, method, key, request_hash, response)"
            " VALUES ($1, $2, $3, $4, $5)",
            tenant_id,
            method,
            key,
            request_hash,
            response,
        )

    async def record(self, tenant_id: str, payload: pb_message.Message) -> None:
        envelope = new_envelope(
            payload,
            tenant_id=tenant_id,
            correlation_id=current_context().correlation_id,
            producer=PRODUCER,
        )
        await OUTBOX.add(self._conn, KAFKA, envelope)


class PostgresIdentityStore:
    """The IdentityStore port on PostgreSQL (see the module docstring)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def tenant(self, tenant_id: str) -> AsyncIterator[PostgresIdentityTransaction]:
        """A transaction of `tenant_id` under row-level security."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            yield PostgresIdentityTransaction(conn)

    @asynccontextmanager
    async def anonymous(self) -> AsyncIterator[PostgresIdentityTransaction]:
        """The pool's tenant role with no tenant set: sees no tenant row at all."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SELECT set_config('role', {TENANT_ROLE_SQL}, true)")
            yield PostgresIdentityTransaction(conn)

    @asynccontextmanager
    async def platform(self) -> AsyncIterator[PostgresIdentityTransaction]:
        """The service's login role (its ``service_role`` policies of migration
        0002 let it see every tenant's rows): only for the cross-tenant jobs."""
        async with self._pool.acquire() as conn, conn.transaction():
            yield PostgresIdentityTransaction(conn)


class PostgresSigningKeyStore:
    """The SigningKeyStore port: keys in ``identity.signing_keys`` (platform
    table, service role), private keys AES-256-GCM encrypted under the KEK
    (services.identity.keys)."""

    def __init__(self, pool: asyncpg.Pool, kek: bytes) -> None:
        self._pool = pool
        self._aead = AESGCM(kek)
        # Set when the current key was sealed with another KEK (the KEK was
        # replaced): it cannot sign any more, so a new key is made at once.
        self.current_unreadable = False

    def _encrypt(self, kid: str, key: ec.EllipticCurvePrivateKey) -> bytes:
        der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, der, kid.encode())

    def _decrypt(self, kid: str, blob: bytes) -> ec.EllipticCurvePrivateKey:
        der = self._aead.decrypt(blob[:12], blob[12:], kid.encode())
        key = serialization.load_der_private_key(der, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    async def rotate(self, *, retire_grace_s: float, only_if_older_than_s: float | None = None) -> str:
        """Make a new current key and retire the previous one (published for
        `retire_grace_s` more). With `only_if_older_than_s`, rotate only when
        there is no current key or it is older than that (start-up / auto
        rotation); returns the current kid either way."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _ROTATE_LOCK)
            current = await conn.fetchrow(
                "SELECT kid, created_at FROM identity.signing_keys WHERE retired_at IS NULL"
            )
            now = datetime.now(UTC)
            if (
                current is not None
                and only_if_older_than_s is not None
                and now - current["created_at"] < timedelta(seconds=only_if_older_than_s)
            ):
                return str(current["kid"])
            private = ec.generate_private_key(ec.SECP256R1())
            jwk = public_jwk(private.public_key())
            kid = jwk["kid"]
            await conn.execute(
                "UPDATE identity.signing_keys SET retired_at = $1, publish_until = $2"
                " WHERE retired_at IS NULL",
                now,
                now + timedelta(seconds=retire_grace_s),
            )
            # Retired keys long past publication are of no further use.
            await conn.execute(
                "DELETE FROM identity.signing_keys WHERE publish_until < $1", now - timedelta(days=7)
            )
            await conn.execute(
                "INSERT INTO identity.signing_keys (kid, private_key_enc, public_jwk, created_at)"
                " VALUES ($1, $2, $3, $4)",
                kid,
                self._encrypt(kid, private),
                jwk,
                now,
            )
        log.info("identity: signing key rotated, current kid %s", kid)
        return kid

    async def current(self) -> SigningKey | None:
        row = await self._pool.fetchrow(
            "SELECT kid, private_key_enc, created_at FROM identity.signing_keys WHERE retired_at IS NULL"
        )
        if row is None:
            return None
        try:
            private_key = self._decrypt(row["kid"], row["private_key_enc"])
        except InvalidTag:
            log.error(
                "identity: signing key %s was sealed with another key-encryption key; making a new one",
                row["kid"],
            )
            self.current_unreadable = True
            return None
        self.current_unreadable = False
        return SigningKey(row["kid"], private_key, row["created_at"])

    async def published(self) -> list[dict[str, str]]:
        """Public JWKs to publish: the current key first, then retired keys
        whose tokens may still be valid, newest first."""
        rows = await self._pool.fetch(
            """SELECT public_jwk FROM identity.signing_keys
               WHERE retired_at IS NULL OR publish_until > now()
               ORDER BY retired_at IS NOT NULL, created_at DESC"""
        )
        return [dict(r["public_jwk"]) for r in rows]
