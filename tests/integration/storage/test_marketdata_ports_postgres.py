"""The marketdata port suites on the real servers: instruments in PostgreSQL
(schema `marketdata`; the suite's rows inserted for the test and deleted
after it), last quotes in Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from runtime.storage.migrations import migrate_pool
from services.marketdata.adapters.postgres import PostgresInstrumentStore
from services.marketdata.adapters.redis import RedisQuoteCache
from tests.suites.marketdata_ports import InstrumentStoreSuite, QuoteCacheSuite, Universe

pytestmark = pytest.mark.integration


class TestPostgresInstrumentStore(InstrumentStoreSuite):
    @pytest_asyncio.fixture(loop_scope="session")
    async def store(
        self, pg_pool: asyncpg.Pool, universe: Universe
    ) -> AsyncIterator[PostgresInstrumentStore]:
        await migrate_pool(pg_pool, "marketdata")
        await pg_pool.executemany(
            """INSERT INTO marketdata.instruments (symbol, base_asset, quote_asset, asset_class, tick_size,
                   lot_size, min_quantity, status, description)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
            [
                (r.symbol, r.base_asset, r.quote_asset, r.asset_class, r.tick_size, r.lot_size,
                 r.min_quantity, r.status, r.description)
                for r in universe.rows
            ],
        )  # fmt: skip
        yield PostgresInstrumentStore(pg_pool)
        await pg_pool.execute(
            "DELETE FROM marketdata.instruments WHERE symbol = ANY($1::text[])", universe.symbols
        )


class TestRedisQuoteCache(QuoteCacheSuite):
    @pytest.fixture
    def cache(self, redis_client: Redis) -> RedisQuoteCache:
        return RedisQuoteCache(redis_client)
