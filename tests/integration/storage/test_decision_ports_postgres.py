"""Decision's real adapters pass the ports' suites (tests/suites/decision_ports.py):
the strategies and signals in PostgreSQL, logged in as decision's own role
(RLS enforced), and the instrument directory on the session's Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from runtime.config import Settings
from runtime.market_cache import INSTRUMENTS_KEY
from runtime.resources import open_postgres
from runtime.security.store_credentials import open_redis
from runtime.storage.postgres import tenant_transaction
from services.decision.adapters.postgres import PostgresSignalStore, PostgresStrategyStore
from services.decision.adapters.redis import RedisInstrumentDirectory
from tests.suites.decision_ports import (
    ANSWER_WITHIN,
    INTENT_TTL,
    InstrumentDirectorySuite,
    Outbox,
    Publish,
    SignalStoreSuite,
    StrategyStoreSuite,
    announce_strategy,
)

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def decision_pool(infra_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """Decision's own pool (its login role, migrated first), as the service opens it."""
    pool = await open_postgres(infra_settings, "decision")
    yield pool
    await pool.close()


@pytest.fixture
def outbox(decision_pool: asyncpg.Pool) -> Outbox:
    """The event ids in decision's outbox for a tenant, in the order written."""

    async def written(tenant: str) -> list[str]:
        async with tenant_transaction(decision_pool, tenant) as conn:
            rows = await conn.fetch(
                "SELECT event_id::text FROM decision.outbox WHERE tenant_id = $1 ORDER BY id", tenant
            )
        return [r["event_id"] for r in rows]

    return written


class TestPostgresStrategyStore(StrategyStoreSuite):
    @pytest.fixture
    def strategies(self, decision_pool: asyncpg.Pool) -> PostgresStrategyStore:
        return PostgresStrategyStore(decision_pool, announce=announce_strategy)


class TestPostgresSignalStore(SignalStoreSuite):
    @pytest.fixture
    def signals(self, decision_pool: asyncpg.Pool) -> PostgresSignalStore:
        return PostgresSignalStore(decision_pool, intent_ttl=INTENT_TTL, answer_within=ANSWER_WITHIN)


class TestRedisInstrumentDirectory(InstrumentDirectorySuite):
    """On a set of its own (the real one, md:instruments, is marketdata's to
    write and other tests' to read), written as marketdata does."""

    @pytest.fixture
    async def key(self, redis_client: Redis) -> AsyncIterator[str]:
        key = f"test:{uuid.uuid4().hex[:12]}:instruments"
        yield key
        await redis_client.delete(key)

    @pytest.fixture
    def directory(self, redis_client: Redis, key: str) -> RedisInstrumentDirectory:
        return RedisInstrumentDirectory(redis_client, key)

    @pytest.fixture
    def publish(self, redis_client: Redis, key: str) -> Publish:
        async def publish(symbols: Sequence[str]) -> None:
            await redis_client.sadd(key, *symbols)

        return publish

    async def test_decision_may_read_the_real_universe(
        self, infra_settings: Settings, redis_client: Redis
    ) -> None:
        decision = open_redis(infra_settings, "decision")
        try:
            listed = await RedisInstrumentDirectory(decision).listed(["BTC-USD", "NOPE-USD"])
        finally:
            await decision.aclose()
        if await redis_client.exists(INSTRUMENTS_KEY):
            assert listed == [
                bool(await redis_client.sismember(INSTRUMENTS_KEY, s)) for s in ["BTC-USD", "NOPE-USD"]
            ]
        else:
            assert listed is None
