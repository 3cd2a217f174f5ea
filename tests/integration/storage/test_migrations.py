"""Migration runner against the real PostgreSQL (the session's test database)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from runtime.config import Settings
from runtime.storage.migrations import ChecksumMismatch, MigrationError, discover, migrate


def _write(directory: Path, name: str, sql: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(sql)


@pytest.fixture
def service(unique_id: str) -> str:
    return f"svc_{unique_id}"


async def _connect(settings: Settings) -> asyncpg.Connection:
    return await asyncpg.connect(settings.postgres.dsn)


async def test_applies_in_order_into_the_service_schema_and_is_idempotent(
    infra_settings: Settings, tmp_path: Path, service: str
) -> None:
    _write(tmp_path, "0001_items.sql", "CREATE TABLE items (id int PRIMARY KEY, note text NOT NULL);")
    _write(tmp_path, "0002_seed.sql", "INSERT INTO items VALUES (1, 'first');")
    conn = await _connect(infra_settings)
    try:
        applied = await migrate(conn, service, tmp_path)
        assert [m.version for m in applied] == [1, 2]
        # Unqualified names landed in the service's own schema.
        assert await conn.fetchval(f"SELECT note FROM {service}.items WHERE id = 1") == "first"
        assert await conn.fetchval("SELECT to_regclass('public.items')") is None
        rows = await conn.fetch(
            "SELECT version, name, checksum FROM schema_migrations WHERE service = $1 ORDER BY version",
            service,
        )
        assert [(r["version"], r["name"]) for r in rows] == [(1, "items"), (2, "seed")]
        assert [r["checksum"] for r in rows] == [m.checksum for m in discover(tmp_path)]

        assert await migrate(conn, service, tmp_path) == []
        assert await conn.fetchval(f"SELECT count(*) FROM {service}.items") == 1

        _write(tmp_path, "0003_more.sql", "INSERT INTO items VALUES (2, 'second');")
        assert [m.version for m in await migrate(conn, service, tmp_path)] == [3]
        assert await conn.fetchval(f"SELECT count(*) FROM {service}.items") == 2
    finally:
        await conn.close()


async def test_edited_applied_migration_refuses_to_start(
    infra_settings: Settings, tmp_path: Path, service: str
) -> None:
    _write(tmp_path, "0001_items.sql", "CREATE TABLE items (id int);")
    conn = await _connect(infra_settings)
    try:
        await migrate(conn, service, tmp_path)
        _write(tmp_path, "0001_items.sql", "CREATE TABLE items (id bigint);")
        _write(tmp_path, "0002_next.sql", "CREATE TABLE other (id int);")
        with pytest.raises(ChecksumMismatch, match=r"0001_items\.sql"):
            await migrate(conn, service, tmp_path)
        # Nothing after the mismatch ran, and the lock was released.
        assert await conn.fetchval(f"SELECT to_regclass('{service}.other')") is None
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
                " WHERE l.locktype = 'advisory' AND d.datname = current_database()"
            )
            == 0
        )
    finally:
        await conn.close()


async def test_failed_migration_rolls_back_and_is_not_recorded(
    infra_settings: Settings, tmp_path: Path, service: str
) -> None:
    _write(tmp_path, "0001_ok.sql", "CREATE TABLE a (id int);")
    _write(tmp_path, "0002_broken.sql", "CREATE TABLE b (id int); SELECT * FROM no_such_table;")
    conn = await _connect(infra_settings)
    try:
        with pytest.raises(asyncpg.UndefinedTableError):
            await migrate(conn, service, tmp_path)
        versions = await conn.fetch("SELECT version FROM schema_migrations WHERE service = $1", service)
        assert [r["version"] for r in versions] == [1]
        assert await conn.fetchval(f"SELECT to_regclass('{service}.b')") is None
    finally:
        await conn.close()


async def test_concurrent_runners_apply_each_migration_once(
    infra_settings: Settings, tmp_path: Path, service: str
) -> None:
    # The sleep keeps the first runner inside the lock long enough for the others to contend.
    _write(tmp_path, "0001_log.sql", "CREATE TABLE runs (n int); SELECT pg_sleep(0.3);")
    _write(tmp_path, "0002_count.sql", "INSERT INTO runs VALUES (1);")
    conns = [await _connect(infra_settings) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c, service, tmp_path) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, 2]
        assert await conns[0].fetchval(f"SELECT count(*) FROM {service}.runs") == 1
        assert (
            await conns[0].fetchval("SELECT count(*) FROM schema_migrations WHERE service = $1", service) == 2
        )
    finally:
        for c in conns:
            await c.close()


async def test_out_of_order_and_badly_named_files_are_refused(
    infra_settings: Settings, tmp_path: Path, service: str
) -> None:
    _write(tmp_path, "0002_second.sql", "CREATE TABLE second (id int);")
    conn = await _connect(infra_settings)
    try:
        await migrate(conn, service, tmp_path)
        _write(tmp_path, "0001_first.sql", "CREATE TABLE first (id int);")
        with pytest.raises(MigrationError, match="older than applied"):
            await migrate(conn, service, tmp_path)
    finally:
        await conn.close()
    bad = tmp_path / "bad"
    _write(bad, "1_no_padding.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_description"):
        discover(bad)
    dup = tmp_path / "dup"
    _write(dup, "0001_a.sql", "SELECT 1;")
    _write(dup, "0001_b.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match="version 1"):
        discover(dup)
