"""PostgreSQL adapter of the vector port: one table with a pgvector column
and an HNSW index (cosine), under row-level security.

The table lives in the owning service's schema and comes from that
service's vector migrations (decision:
services/decision/migrations_vectors/0001_market_states.sql, which explains
the columns, indexes and policies). :func:`open_pgvector` prepares the
server (the ``vector`` extension, the migrations, recorded as
``<service>.vectors``; the service's login role) and opens a pool as
``trading_<svc>_app`` on ``settings.vectors.postgres_dsn``.

Scopes: market records are read and written as the service's role (the
``market_data`` policy lets exactly ``scope = 'market'`` through); a
tenant's records only inside its tenant transaction
(:func:`runtime.storage.postgres.tenant_transaction`, the
``tenant_isolation`` policy). The SQL names the scope too.

Searches order by ``embedding <=> query`` (cosine distance) with a LIMIT,
which the planner answers from the HNSW index; ``hnsw.ef_search`` is set on
each connection (``settings.vectors.ef_search``) and ``hnsw.iterative_scan``
is ``relaxed_order`` so a filter (symbol, time) that rejects most of the
index's first candidates still fills ``k`` (pgvector 0.8; the few results
that come out of order are sorted by the port's
:class:`runtime.vectors.port.CheckedSearch`).

Vectors travel in pgvector's binary format (a 2-byte dimension, 2 unused
bytes, big-endian float32s), through a codec registered per connection.
"""

from __future__ import annotations

import json
import struct
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from runtime.config import Settings
from runtime.security.postgres_roles import POSTGRES_GRANTS, set_app_password, tenant_role
from runtime.security.store_credentials import postgres_dsn, postgres_password
from runtime.storage.migrations import MigrationError, migrate
from runtime.storage.postgres import create_pool, quote_ident, tenant_transaction
from runtime.vectors.port import (
    MARKET,
    CheckedSearch,
    Neighbour,
    PayloadValue,
    VectorRecord,
    check_scope,
)

_HEADER = struct.Struct(">HH")
# Rows per DELETE of the retention (short transactions, bounded WAL per step).
_DELETE_BATCH = 10_000


class Embedding:
    """A vector as a query argument. asyncpg reads a list inside an array
    argument as a nested array; this wrapper is one element."""

    __slots__ = ("values",)

    def __init__(self, values: Sequence[float]) -> None:
        self.values = values


def encode_vector(value: Embedding | Sequence[float]) -> bytes:
    values = value.values if isinstance(value, Embedding) else value
    array = np.asarray(values, dtype=">f4")
    return _HEADER.pack(len(array), 0) + array.tobytes()


def decode_vector(data: bytes) -> list[float]:
    dimension, _ = _HEADER.unpack_from(data)
    values: list[float] = np.frombuffer(data, dtype=">f4", count=dimension, offset=_HEADER.size).tolist()
    return values


async def register_vector_codec(conn: asyncpg.Connection) -> None:
    """The binary codec of pgvector's ``vector`` type on `conn` (wherever the extension lives)."""
    schema = await conn.fetchval(
        "SELECT n.nspname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
        " WHERE t.typname = 'vector'"
    )
    if schema is None:
        raise MigrationError("the pgvector extension is not installed in this database")
    await conn.set_type_codec(
        "vector", schema=schema, encoder=encode_vector, decoder=decode_vector, format="binary"
    )


def _payload(raw: Any) -> dict[str, PayloadValue]:
    value = json.loads(raw) if isinstance(raw, str) else raw
    return dict(value or {})


class PgVectorStore(CheckedSearch):
    """The vector port on `table` of `schema` (see the module docstring)."""

    def __init__(
        self, pool: asyncpg.Pool, *, schema: str, table: str, dimension: int, owns_pool: bool = False
    ) -> None:
        self._pool = pool
        self._table = f"{quote_ident(schema)}.{quote_ident(table)}"
        self._dimension = dimension
        self._owns_pool = owns_pool

    @property
    def dimension(self) -> int:
        return self._dimension

    @asynccontextmanager
    async def _scoped(self, scope: str) -> AsyncIterator[asyncpg.Connection]:
        check_scope(scope)
        if scope == MARKET:
            async with self._pool.acquire() as conn:
                yield conn
        else:
            async with tenant_transaction(self._pool, scope) as conn:
                yield conn

    async def upsert(self, scope: str, records: Sequence[VectorRecord]) -> None:
        if not records:
            return
        for r in records:
            r.check(self._dimension)
        sql = (
            f"INSERT INTO {self._table} (scope, id, symbol, at, embedding, payload)"
            " SELECT $1, r.id, r.symbol, r.at, r.embedding, r.payload::jsonb"
            " FROM unnest($2::uuid[], $3::text[], $4::timestamptz[], $5::vector[], $6::text[])"
            " AS r(id, symbol, at, embedding, payload)"
            " ON CONFLICT (scope, id) DO UPDATE SET symbol = EXCLUDED.symbol, at = EXCLUDED.at,"
            " embedding = EXCLUDED.embedding, payload = EXCLUDED.payload"
        )
        async with self._scoped(scope) as conn:
            await conn.execute(
                sql,
                scope,
                [r.id for r in records],
                [r.symbol for r in records],
                [r.at for r in records],
                [Embedding(r.vector) for r in records],
                [json.dumps(dict(r.payload), separators=(",", ":")) for r in records],
            )

    async def _nearest(
        self,
        scope: str,
        query: list[float],
        k: int,
        *,
        symbol: str | None,
        start: datetime | None,
        end: datetime | None,
    ) -> list[Neighbour]:
        where = ["scope = $1"]
        args: list[Any] = [scope, Embedding(query), k]
        for column, op, value in (("symbol", "=", symbol), ("at", ">=", start), ("at", "<", end)):
            if value is not None:
                args.append(value)
                where.append(f"{column} {op} ${len(args)}")
        sql = (
            f"SELECT id::text, symbol, at, payload, embedding <=> $2 AS distance FROM {self._table}"
            f" WHERE {' AND '.join(where)} ORDER BY embedding <=> $2 LIMIT $3"
        )
        async with self._scoped(scope) as conn:
            rows = await conn.fetch(sql, *args)
        # An iterative (relaxed order) index scan may return a few out of
        # order: CheckedSearch sorts them.
        return [
            Neighbour(r["id"], r["symbol"], r["at"], _payload(r["payload"]), 1.0 - float(r["distance"]))
            for r in rows
        ]

    async def delete_older_than(self, scope: str, before: datetime) -> int:
        deleted = 0
        sql = (
            f"DELETE FROM {self._table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {self._table}"
            f" WHERE scope = $1 AND at < $2 LIMIT {_DELETE_BATCH}))"
        )
        while True:
            async with self._scoped(scope) as conn:
                status = await conn.execute(sql, scope, before)
            n = int(status.split()[-1])
            deleted += n
            if n < _DELETE_BATCH:
                return deleted

    async def count(self, scope: str) -> int:
        async with self._scoped(scope) as conn:
            n: int = await conn.fetchval(f"SELECT count(*) FROM {self._table} WHERE scope = $1", scope)
        return n

    async def close(self) -> None:
        if self._owns_pool:
            await self._pool.close()


def migrations_dir(service: str) -> Path:
    """``services/<service>/migrations_vectors``: the tables that need pgvector."""
    from runtime.storage.migrations import service_migrations_dir

    return service_migrations_dir(service).parent / "migrations_vectors"


def _dsn(settings: Settings, service: str) -> str:
    """The service's login on the vectors server (its role, no password)."""
    on_vectors = settings.postgres.model_copy(update={"dsn": settings.vectors.postgres_dsn})
    return postgres_dsn(settings.model_copy(update={"postgres": on_vectors}), service)


async def prepare_pgvector(settings: Settings, service: str) -> None:
    """Through the migrator's DSN (``settings.vectors.postgres_dsn``): the
    ``vector`` extension (a superuser's, or a provisioning job's, right), the
    service's vector migrations and its login role's password."""
    conn = await asyncpg.connect(settings.vectors.postgres_dsn, timeout=settings.postgres.command_timeout_s)
    try:
        available = await conn.fetchval("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
        if not available:
            raise MigrationError(
                f"the PostgreSQL at {settings.vectors.postgres_dsn} has no pgvector extension"
                " (TRADING_VECTORS__POSTGRES_DSN must name one that has it,"
                " or set TRADING_VECTORS__WEAVIATE_URL)"
            )
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        await migrate(conn, service, migrations_dir(service), record_as=f"{service}.vectors")
        if service in POSTGRES_GRANTS:
            await set_app_password(conn, service, postgres_password(settings, service)())
    finally:
        await conn.close()


async def open_pgvector(settings: Settings, service: str, *, table: str, dimension: int) -> PgVectorStore:
    """The service's store on ``settings.vectors.postgres_dsn``: prepared first
    when ``postgres.migrate_on_start``; a pool of its own login role."""
    if settings.postgres.migrate_on_start:
        await prepare_pgvector(settings, service)
    ef_search = settings.vectors.ef_search

    async def setup(conn: asyncpg.Connection) -> None:
        await register_vector_codec(conn)
        # Session settings of the pool's connections (asyncpg's reset is off in create_pool).
        await conn.execute(f"SET hnsw.ef_search = {int(ef_search)}; SET hnsw.iterative_scan = relaxed_order")

    pool = await create_pool(
        settings.postgres,
        dsn=_dsn(settings, service),
        password=postgres_password(settings, service),
        application_name=f"{service}-vectors",
        tenant_role=tenant_role(service),
        max_size=settings.vectors.pool_max_size,
        init=setup,
    )
    try:
        dims = await pool.fetchval(
            "SELECT a.atttypmod FROM pg_attribute a"
            " WHERE a.attrelid = $1::regclass AND a.attname = 'embedding'",
            f"{quote_ident(service)}.{quote_ident(table)}",
        )
    except BaseException:
        await pool.close()
        raise
    if dims != dimension:
        await pool.close()
        raise MigrationError(f"{service}.{table} stores vectors of {dims} dimensions, not {dimension}")
    return PgVectorStore(pool, schema=service, table=table, dimension=dimension, owns_pool=True)
