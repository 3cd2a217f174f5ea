"""The data-store client histograms on the real servers: what a service's
PostgreSQL pool, Redis client and ClickHouse adapter record, by operation and
outcome (runtime.storage.metrics)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from redis.exceptions import ResponseError

from runtime.config import Settings
from runtime.security.store_credentials import REDIS_ADMIN, redis_auth
from runtime.storage.clickhouse import ConnectClickHouse
from runtime.storage.metrics import StoreClientMetrics
from runtime.storage.postgres import create_pool, tenant_transaction
from runtime.storage.redis import create_redis, tenant_key


def _count(registry: CollectorRegistry, name: str, service: str, operation: str, outcome: str) -> float:
    labels = {"service": service, "operation": operation, "outcome": outcome}
    return registry.get_sample_value(f"{name}_count", labels) or 0.0


async def test_postgres_statements_by_kind_and_outcome(infra_settings: Settings) -> None:
    registry = CollectorRegistry()
    pool = await create_pool(
        infra_settings.postgres,
        application_name="metrics_probe",
        min_size=1,
        max_size=1,
        metrics=StoreClientMetrics(registry),
    )
    name = "trading_postgres_client_seconds"
    try:
        assert await pool.fetchval("SELECT 1") == 1
        await pool.execute("CREATE TEMP TABLE IF NOT EXISTS metrics_probe (a int)")
        await pool.execute("INSERT INTO metrics_probe VALUES ($1)", 1)
        async with tenant_transaction(pool, "tenant-a") as conn:
            await conn.fetchval("SELECT current_setting('app.tenant_id')")
        with pytest.raises(asyncpg.DivisionByZeroError):
            await pool.fetchval("SELECT 1 / 0")
        await asyncio.sleep(0)  # asyncpg hands the records over with call_soon
        service = "metrics_probe"
        # The fetchval above, set_config, the current_setting inside the transaction.
        assert _count(registry, name, service, "query", "ok") >= 3
        assert _count(registry, name, service, "execute", "ok") == 2
        assert _count(registry, name, service, "transaction", "ok") == 2  # BEGIN, COMMIT
        assert _count(registry, name, service, "query", "error") == 1
        assert (
            registry.get_sample_value(
                f"{name}_bucket", {"service": service, "operation": "execute", "outcome": "ok", "le": "10.0"}
            )
            == 2
        )
    finally:
        await pool.close()


async def test_redis_commands_pipelines_and_errors(infra_settings: Settings, unique_id: str) -> None:
    registry = CollectorRegistry()
    auth = redis_auth(infra_settings, REDIS_ADMIN)
    client = create_redis(
        infra_settings.redis,
        username=auth["username"],
        password=auth["password"],
        metrics=StoreClientMetrics(registry),
    )
    name = "trading_redis_client_seconds"
    key = tenant_key(f"m{unique_id}", "n")
    try:
        await client.set(key, "not a number", ex=30)
        assert await client.get(key) == b"not a number"
        with pytest.raises(ResponseError):
            await client.incr(key)
        pipe = client.pipeline(transaction=False)
        pipe.get(key)
        pipe.ttl(key)
        assert (await pipe.execute())[0] == b"not a number"
        async with client.pipeline(transaction=True) as multi:
            multi.set(key, "1", ex=30)
            multi.incr(key)
            assert await multi.execute() == [True, 2]
        assert await client.eval("return 7", 0) == 7
        await client.delete(key)
        user = REDIS_ADMIN  # service defaults to the ACL user
        for command in ("SET", "GET", "EVAL", "DEL", "PIPELINE", "MULTI"):
            assert _count(registry, name, user, command, "ok") == 1, command
        assert _count(registry, name, user, "INCRBY", "error") == 1  # incr() sends INCRBY
    finally:
        await client.aclose()


async def test_clickhouse_calls_by_operation(clickhouse: ConnectClickHouse, unique_id: str) -> None:
    # The session's adapter records on the default registry as "trading".
    name = "trading_clickhouse_client_seconds"

    def counts() -> dict[tuple[str, str], float]:
        return {
            (op, outcome): _count(REGISTRY, name, "trading", op, outcome)
            for op in ("command", "query", "insert", "ping")
            for outcome in ("ok", "error")
        }

    before = counts()
    table = f"probe_{unique_id}"
    await clickhouse.command(f"CREATE TABLE {table} (a UInt32) ENGINE = MergeTree ORDER BY a")
    assert await clickhouse.insert(table, [[1], [2]], ["a"]) == 2
    assert (await clickhouse.query(f"SELECT count() FROM {table}")).rows == [(2,)]
    with pytest.raises(Exception, match=r"(?i)unknown|exist"):
        await clickhouse.query(f"SELECT * FROM {table}_missing")
    assert await clickhouse.ping()
    await clickhouse.command(f"DROP TABLE {table}")
    after = counts()
    delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert delta == {
        ("command", "ok"): 2,
        ("insert", "ok"): 1,
        ("query", "ok"): 1,
        ("query", "error"): 1,
        ("ping", "ok"): 1,
    }
