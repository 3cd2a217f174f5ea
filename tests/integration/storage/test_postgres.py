"""Pool and tenant isolation (row-level security) on the real PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from runtime.config import Settings
from runtime.storage.migrations import migrate
from runtime.storage.postgres import (
    TENANT_ROLE,
    create_pool,
    retry_transient,
    run_in_tenant,
    tenant_rls_sql,
    tenant_transaction,
)
from tests.support.faultproxy import FaultProxy


async def test_pool_session_settings_and_jsonb_codec(pg_pool: asyncpg.Pool) -> None:
    async with pg_pool.acquire() as conn:
        assert await conn.fetchval("SHOW timezone") == "UTC"
        assert await conn.fetchval("SHOW jit") == "off"
        doc = {"symbol": "BTC-USD", "levels": [1, 2], "nested": {"ok": True}}
        assert await conn.fetchval("SELECT $1::jsonb", doc) == doc
        assert await conn.fetchval("SELECT '{\"a\": 1}'::json") == {"a": 1}


async def test_tenant_setting_is_transaction_local(pg_pool: asyncpg.Pool) -> None:
    async with tenant_transaction(pg_pool, "tenant-a") as conn:
        assert await conn.fetchval("SELECT current_setting('app.tenant_id')") == "tenant-a"
        assert await conn.fetchval("SELECT current_user") == TENANT_ROLE
    # Same pool (max one idle connection is likely reused): nothing leaks past the transaction.
    for _ in range(3):
        async with pg_pool.acquire() as conn:
            assert await conn.fetchval("SELECT current_setting('app.tenant_id', true)") in (None, "")
            assert await conn.fetchval("SELECT current_user") != TENANT_ROLE
    with pytest.raises(ValueError):
        async with tenant_transaction(pg_pool, ""):
            pass


@pytest.fixture
async def rls_table(infra_settings: Settings, tmp_path: Path, unique_id: str) -> str:
    """A tenant table with ENABLE + FORCE row-level security, created by a real migration."""
    service = f"rls_{unique_id}"
    sql = (
        "CREATE TABLE orders (id serial PRIMARY KEY, tenant_id text NOT NULL, symbol text NOT NULL);\n"
        + tenant_rls_sql("orders")
    )
    (tmp_path / "0001_orders.sql").write_text(sql)
    conn = await asyncpg.connect(infra_settings.postgres.dsn)
    try:
        await migrate(conn, service, tmp_path)
        assert await conn.fetchval(
            "SELECT relrowsecurity AND relforcerowsecurity FROM pg_class WHERE oid = $1::regclass",
            f"{service}.orders",
        )
        assert not await conn.fetchval(
            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = $1", TENANT_ROLE
        )
    finally:
        await conn.close()
    return f"{service}.orders"


async def test_rls_isolates_tenants(pg_pool: asyncpg.Pool, rls_table: str) -> None:
    async def insert(conn: asyncpg.Connection, tenant: str, symbol: str) -> None:
        await conn.execute(f"INSERT INTO {rls_table} (tenant_id, symbol) VALUES ($1, $2)", tenant, symbol)

    async def symbols(conn: asyncpg.Connection) -> list[str]:
        return [r["symbol"] for r in await conn.fetch(f"SELECT symbol FROM {rls_table} ORDER BY symbol")]

    async with tenant_transaction(pg_pool, "tenant-a") as conn:
        await insert(conn, "tenant-a", "AAPL")
        await insert(conn, "tenant-a", "MSFT")
    async with tenant_transaction(pg_pool, "tenant-b") as conn:
        await insert(conn, "tenant-b", "BTC-USD")

    assert await run_in_tenant(pg_pool, "tenant-a", symbols) == ["AAPL", "MSFT"]
    assert await run_in_tenant(pg_pool, "tenant-b", symbols) == ["BTC-USD"]
    assert await run_in_tenant(pg_pool, "tenant-c", symbols) == []

    # Neither writes nor updates nor deletes reach another tenant's rows.
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with tenant_transaction(pg_pool, "tenant-a") as conn:
            await insert(conn, "tenant-b", "FORGED")
    async with tenant_transaction(pg_pool, "tenant-a") as conn:
        assert await conn.execute(f"UPDATE {rls_table} SET symbol = 'X' WHERE tenant_id = 'tenant-b'") == (
            "UPDATE 0"
        )
        assert await conn.execute(f"DELETE FROM {rls_table} WHERE tenant_id = 'tenant-b'") == "DELETE 0"
    assert await run_in_tenant(pg_pool, "tenant-b", symbols) == ["BTC-USD"]

    # The superuser login itself bypasses RLS: proof the filtering above is the policy's doing.
    async with pg_pool.acquire() as conn:
        assert await conn.fetchval(f"SELECT count(*) FROM {rls_table}") == 3


async def test_a_reused_connection_carries_no_state_of_its_last_user(infra_settings: Settings) -> None:
    """The pool skips asyncpg's per-release RESET ALL (runtime.storage.postgres):
    transaction-scoped state must still be gone, also after a failed transaction."""
    pool = await create_pool(infra_settings.postgres, min_size=1, max_size=1)  # one connection, reused
    try:
        with pytest.raises(RuntimeError):
            async with tenant_transaction(pool, "tenant-a") as conn:
                await conn.execute("SELECT pg_advisory_xact_lock(4242)")
                raise RuntimeError("the caller fails mid-transaction")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT current_setting('app.tenant_id', true)") in (None, "")
            assert await conn.fetchval("SELECT current_user") != TENANT_ROLE
            assert not conn.is_in_transaction()
            held = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            )
            assert held == 0
    finally:
        await pool.close()


async def test_retry_transient_rides_out_a_dropped_connection_and_not_a_bad_statement(
    infra_settings: Settings,
) -> None:
    """Consumers (portfolio fills, audit appends) wrap their writes in
    retry_transient: a connection cut mid-life is retried on a new one; a
    statement PostgreSQL refuses is raised at once."""
    dsn = urlsplit(infra_settings.postgres.dsn)
    async with FaultProxy(dsn.hostname or "127.0.0.1", dsn.port or 5432) as proxy:
        proxied = dsn._replace(netloc=f"{dsn.username}@{proxy.address}").geturl()
        pool = await create_pool(infra_settings.postgres, dsn=proxied, min_size=1, max_size=1)
        try:
            assert await pool.fetchval("SELECT 1") == 1
            proxy.cut()  # the pooled connection dies under the next call
            calls = 0

            async def select() -> int:
                nonlocal calls
                calls += 1
                value: int = await pool.fetchval("SELECT 2")
                return value

            assert await retry_transient(select, within_s=10, what="a select") == 2
            assert calls >= 2

            calls = 0

            async def bad() -> None:
                nonlocal calls
                calls += 1
                await pool.execute("SELECT * FROM no_such_table_here")

            with pytest.raises(asyncpg.UndefinedTableError):
                await retry_transient(bad, within_s=10, what="a bad select")
            assert calls == 1
        finally:
            await pool.close()
