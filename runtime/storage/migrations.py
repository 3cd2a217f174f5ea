"""Versioned SQL migrations, one ordered set per service.

Files live in ``services/<name>/migrations/NNNN_description.sql`` (``0001_orders.sql``,
``0002_outbox.sql``, ...). Rules:

- Each service owns its own PostgreSQL schema named after it (``CREATE SCHEMA
  IF NOT EXISTS <service>`` is done here) and migrations run with
  ``search_path = <service>, public``, so unqualified names land in it. No
  service touches another's schema; they talk through APIs and events.
- Each file is applied once, in version order, inside its own transaction,
  and recorded in ``public.schema_migrations`` (service, version, name,
  sha256 checksum). Statements that cannot run in a transaction
  (``CREATE INDEX CONCURRENTLY``) are not supported.
- An applied file must never change: a checksum mismatch raises
  :class:`ChecksumMismatch` and the service refuses to start. Fix forward
  with a new file.
- A PostgreSQL advisory lock per service serialises concurrent replicas: the
  first applies, the others wait and then find nothing to do.
- A service of :data:`runtime.security.postgres_roles.POSTGRES_GRANTS` gets
  its roles first (owner, app, tenant; created if missing), its schema is
  owned by ``trading_<svc>_owner`` and every file runs as that role
  (``SET LOCAL ROLE``), so the service's login role never owns a table.
  Afterwards the app and tenant roles get exactly the rights of that table
  (:func:`runtime.security.postgres_roles.apply_grants`). Any other schema
  (tests' throw-away ones) runs as the connecting user and grants the
  umbrella tenant role (:data:`runtime.storage.postgres.TENANT_ROLE`) DML
  rights, so RLS policies apply to tenant transactions.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
import zlib
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import asyncpg

from runtime.security.postgres_roles import (
    POSTGRES_GRANTS,
    adopt_schema,
    apply_grants,
    ensure_service_roles,
    owner_role,
)
from runtime.storage.postgres import TENANT_ROLE, ensure_tenant_role, quote_ident

log = logging.getLogger(__name__)

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9][a-z0-9_]*)\.sql$")
_SERVICE_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# First key of the two-int advisory locks taken here ("migr" in ASCII).
_LOCK_NAMESPACE = 0x6D696772


class MigrationError(RuntimeError):
    """Migrations cannot be applied safely; the service must not start."""


class ChecksumMismatch(MigrationError):
    """An already-applied migration file was edited."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str
    checksum: str


def _checksum(sql: str) -> str:
    # Normalised line endings: a CRLF checkout must not look like an edit.
    return hashlib.sha256(sql.replace("\r\n", "\n").encode()).hexdigest()


def discover(directory: Path) -> list[Migration]:
    """The migrations in `directory`, sorted by version; bad names and duplicate versions raise."""
    found: dict[int, Migration] = {}
    if not directory.is_dir():
        return []
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        m = _FILE_RE.match(path.name)
        if m is None:
            raise MigrationError(f"{path}: migration files are named NNNN_description.sql")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"{path}: version {version} also in {found[version].path.name}")
        sql = path.read_text(encoding="utf-8")
        found[version] = Migration(version, m.group(2), path, sql, _checksum(sql))
    return [found[v] for v in sorted(found)]


def service_migrations_dir(service: str) -> Path:
    """``services/<service>/migrations`` of the installed services package."""
    return Path(str(files(f"services.{service}") / "migrations"))


def _lock_key(service: str) -> int:
    # Signed 32-bit, as the two-int advisory lock functions want.
    return zlib.crc32(service.encode()) - (1 << 31)


_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS public.schema_migrations (
    service     text        NOT NULL,
    version     integer     NOT NULL,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms integer     NOT NULL,
    PRIMARY KEY (service, version)
)
"""


async def _bootstrap(conn: asyncpg.Connection) -> None:
    # A transaction-scoped lock shared by all services: concurrent
    # CREATE TABLE/ROLE IF NOT EXISTS can still collide on the catalogs.
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, 0)", _LOCK_NAMESPACE)
        await conn.execute(_BOOTSTRAP)
        await ensure_tenant_role(conn)


async def _acquire_lock(conn: asyncpg.Connection, service: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", _LOCK_NAMESPACE, _lock_key(service)):
        if time.monotonic() >= deadline:
            raise MigrationError(
                f"{service}: migration lock still held by another process after {timeout_s}s"
            )
        await asyncio.sleep(0.05)


async def migrate(
    conn: asyncpg.Connection,
    service: str,
    directory: Path | None = None,
    *,
    lock_timeout_s: float = 60.0,
    record_as: str | None = None,
) -> list[Migration]:
    """Apply `service`'s pending migrations on `conn`; returns those applied now.

    `directory` defaults to ``services/<service>/migrations``. `record_as`
    (default `service`) is the name the files are recorded and locked under:
    a second set of the same service's schema (decision's vector tables,
    which need pgvector and may live on another server) keeps its own
    versions even where both sets share a database. Raises
    :class:`ChecksumMismatch` when an applied file changed, and
    :class:`MigrationError` for other unsafe states (a pending file older
    than the newest applied one).
    """
    if not _SERVICE_RE.match(service):
        raise MigrationError(f"invalid service name {service!r} (lower-case identifier)")
    migrations = discover(directory if directory is not None else service_migrations_dir(service))
    schema = quote_ident(service)
    owned = service in POSTGRES_GRANTS
    key = record_as or service
    await _bootstrap(conn)
    await _acquire_lock(conn, key, lock_timeout_s)
    try:
        rows = await conn.fetch(
            "SELECT version, name, checksum FROM public.schema_migrations WHERE service = $1", key
        )
        applied = {r["version"]: r for r in rows}
        on_disk = {m.version: m for m in migrations}
        for m in migrations:
            row = applied.get(m.version)
            if row is not None and row["checksum"] != m.checksum:
                raise ChecksumMismatch(
                    f"{service}: migration {m.path.name} was changed after it was applied "
                    f"(recorded {row['checksum'][:12]}, file {m.checksum[:12]}); add a new migration instead"
                )
        for version in sorted(set(applied) - set(on_disk)):
            # A newer replica may already have applied it during a rolling deploy.
            log.warning("%s: applied migration %04d has no file here", service, version)
        pending = [m for m in migrations if m.version not in applied]
        newest = max(applied, default=0)
        late = [m for m in pending if m.version < newest]
        if late:
            raise MigrationError(
                f"{service}: {late[0].path.name} is older than applied version {newest:04d}; renumber it"
            )
        if owned:
            await ensure_service_roles(conn, service)
            owner = quote_ident(owner_role(service))
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {owner}")
            await adopt_schema(conn, service)
        else:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for m in pending:
            started = time.perf_counter()
            async with conn.transaction():
                await conn.execute(f"SET LOCAL search_path TO {schema}, public")
                if owned:
                    await conn.execute(f"SET LOCAL ROLE {owner}")
                await conn.execute(m.sql)
                if owned:
                    await conn.execute("RESET ROLE")
                await conn.execute(
                    "INSERT INTO public.schema_migrations (service, version, name, checksum, duration_ms)"
                    " VALUES ($1, $2, $3, $4, $5)",
                    key,
                    m.version,
                    m.name,
                    m.checksum,
                    int((time.perf_counter() - started) * 1000),
                )
            log.info("%s: applied migration %s", service, m.path.name)
        if owned:
            await apply_grants(conn, service)
        else:
            await _grant_tenant_role(conn, schema)
        return pending
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1, $2)", _LOCK_NAMESPACE, _lock_key(key))


async def _grant_tenant_role(conn: asyncpg.Connection, schema: str) -> None:
    role = quote_ident(TENANT_ROLE)
    await conn.execute(
        f"GRANT USAGE ON SCHEMA {schema} TO {role};"
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role};"
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role};"
    )


async def migrate_pool(pool: asyncpg.Pool, service: str, directory: Path | None = None) -> list[Migration]:
    """:func:`migrate` on a connection borrowed from `pool`."""
    async with pool.acquire() as conn:
        return await migrate(conn, service, directory)
