"""The portfolio's real adapters pass the ports' suites (tests/suites/portfolio_ports.py):
the books in PostgreSQL, logged in as portfolio's own role (RLS enforced), and
the quote cache on the session's Redis as portfolio's ACL user."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio
from redis.asyncio import Redis
from trading.common.v1 import market_pb2

from runtime.config import Settings
from runtime.market_cache import quote_key
from runtime.resources import open_postgres
from runtime.security.store_credentials import open_redis
from services.portfolio.adapters.postgres import PostgresBookStore
from services.portfolio.adapters.redis import RedisQuoteCache
from tests.suites.portfolio_ports import BookStoreSuite, PutQuote, QuoteCacheSuite, new_symbol

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def portfolio_pool(infra_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """Portfolio's own pool (its login role, migrated first), as the service opens it."""
    pool = await open_postgres(infra_settings, "portfolio")
    yield pool
    await pool.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def portfolio_redis(infra_settings: Settings) -> AsyncIterator[Redis]:
    client = open_redis(infra_settings, "portfolio")
    yield client
    await client.aclose()


class TestPostgresBookStore(BookStoreSuite):
    @pytest.fixture
    def store(self, portfolio_pool: asyncpg.Pool) -> PostgresBookStore:
        return PostgresBookStore(portfolio_pool)


class TestRedisQuoteCache(QuoteCacheSuite):
    @pytest.fixture
    def quotes(self, portfolio_redis: Redis) -> RedisQuoteCache:
        return RedisQuoteCache(portfolio_redis)

    @pytest.fixture
    def put_quote(self, redis_client: Redis) -> PutQuote:
        """Writes as marketdata does (portfolio's user may only read quotes)."""

        async def put(symbol: str, quote: market_pb2.Quote) -> None:
            await redis_client.set(quote_key(symbol), quote.SerializeToString(), ex=300)

        return put

    async def test_a_garbled_entry_is_left_out(self, quotes: RedisQuoteCache, redis_client: Redis) -> None:
        garbled, text = new_symbol(), new_symbol()
        await redis_client.set(quote_key(garbled), b"\xff\x00 not a quote", ex=300)
        await redis_client.set(quote_key(text), "", ex=300)
        assert await quotes.marks([garbled, text]) == {}
