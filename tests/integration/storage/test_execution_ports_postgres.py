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


@pytest.mark.asyncio(loop_scope="session")
async def test_the_one_round_trip_placement_runs_as_the_tenant_role_under_rls(
    execution_pool: asyncpg.Pool,
) -> None:
    """execution.place_order switches to the tenant role and tenant itself, so
    the placement is held to row-level security like a tenant transaction
    (the login role's own policy would let it write any row)."""
    async with execution_pool.acquire() as conn, conn.transaction():
        login = await conn.fetchval("SELECT current_user")
        placed = await conn.fetchval(
            "SELECT execution.place_order($1, gen_random_uuid(), 'rls-probe', '\\x00', 'BTC-USD',"
            " 1::smallint, 1::smallint, 3::smallint, 1, NULL, 1::smallint, 0, 0, '', 0::smallint,"
            " '', '', 'paper', '', '',"
            " NULL, now(), now(), 1, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}',"
            " '{}', '{}', '{}', '{}', '{}')",
            "rls-tenant-a",
        )
        assert placed == 1
        assert await conn.fetchval("SELECT current_user") == "trading_execution_tenant" != login
        assert await conn.fetchval("SELECT current_setting('app.tenant_id')") == "rls-tenant-a"
        # As the tenant role, another tenant's row is refused by the policy.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO execution.orders (tenant_id, order_id, client_order_id, request_hash, symbol,"
                " side, type, time_in_force, quantity, status, created_at, updated_at, version)"
                " VALUES ('rls-tenant-b', gen_random_uuid(), 'x', '\\x00', 'BTC-USD', 1, 1, 3, 1, 1, now(),"
                " now(), 1)"
            )
    # The refused insert aborted the transaction: the probe order is rolled back with it.
    async with execution_pool.acquire() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM execution.orders WHERE client_order_id = 'rls-probe'")
            == 0
        )
