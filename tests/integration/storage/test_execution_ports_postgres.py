"""Execution's real adapters pass the ports' suites (tests/suites/execution_ports.py):
the orders in PostgreSQL, logged in as execution's own role (RLS enforced on
the tenant paths, the matcher's scans across tenants as in production), and
marketdata's cache on the session's Redis read as execution's ACL user."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest
import pytest_asyncio
from redis.asyncio import Redis
from trading.common.v1 import market_pb2

from runtime.config import Settings
from runtime.decimals import to_proto
from runtime.market_cache import INSTRUMENTS_KEY, quote_key
from runtime.resources import open_postgres
from runtime.security.store_credentials import open_redis
from services.execution.adapters.postgres import PostgresOrderStore
from services.execution.adapters.redis import RedisMarketQuotes
from services.execution.domain import Quote
from tests.suites.execution_ports import MarketQuotesSuite, OrderStoreSuite

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def execution_pool(infra_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """Execution's own pool (its login role, migrated first), as the service opens it."""
    pool = await open_postgres(infra_settings, "execution")
    yield pool
    await pool.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def execution_redis(infra_settings: Settings) -> AsyncIterator[Redis]:
    client = open_redis(infra_settings, "execution")
    yield client
    await client.aclose()


class TestPostgresOrderStore(OrderStoreSuite):
    @pytest.fixture
    def store(self, execution_pool: asyncpg.Pool) -> PostgresOrderStore:
        return PostgresOrderStore(execution_pool)


class RedisMarket:
    """Writes marketdata's cache as marketdata does (execution's user may only read it),
    and takes the instruments it listed out of the shared set again."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self.listed: list[str] = []

    async def list_instruments(self, symbols: Sequence[str]) -> None:
        await self._redis.sadd(INSTRUMENTS_KEY, *symbols)
        self.listed += symbols

    async def put(self, quote: Quote) -> None:
        msg = market_pb2.Quote(
            symbol=quote.symbol,
            bid_price=to_proto(quote.bid),
            bid_size=to_proto(quote.bid_size),
            ask_price=to_proto(quote.ask),
            ask_size=to_proto(quote.ask_size),
            sequence=quote.sequence,
        )
        await self._redis.set(quote_key(quote.symbol), msg.SerializeToString(), ex=300)


class TestRedisMarketQuotes(MarketQuotesSuite):
    @pytest.fixture
    def quotes(self, execution_redis: Redis) -> RedisMarketQuotes:
        return RedisMarketQuotes(execution_redis)

    @pytest_asyncio.fixture(loop_scope="session")
    async def market(self, redis_client: Redis) -> AsyncIterator[RedisMarket]:
        market = RedisMarket(redis_client)
        yield market
        if market.listed:
            await redis_client.srem(INSTRUMENTS_KEY, *market.listed)
