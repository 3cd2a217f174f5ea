"""Risk's Redis adapter passes the port's suite (tests/suites/risk_ports.py) on
the session's Redis, logged in as risk's own ACL user (so the suite also
proves the user may run every command and key the adapter uses), with its
outbox under the production name; the test set-up writes quotes as the admin
(in marketdata's place) and removes the suite's keys afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from trading.common.v1 import market_pb2

from runtime.config import Settings
from runtime.market_cache import quote_key
from runtime.outbox_redis import RedisOutbox
from runtime.security.store_credentials import open_redis
from services.risk.adapters.redis import RedisRiskStore
from tests.suites.risk_ports import PutQuote, RiskStoreSuite, StoredRows

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def risk_redis(infra_settings: Settings) -> AsyncIterator[Redis]:
    client = open_redis(infra_settings, "risk")
    yield client
    await client.aclose()


async def _drop_suite_keys(redis: Redis) -> None:
    """The suite's tenants' keys (``rs-...``, their outbox streams included:
    a relay then forgets them from its index) and its quotes (``R...``)."""
    for pattern in ("t:{rs-*", "md:quote:R*"):
        keys = [k async for k in redis.scan_iter(match=pattern)]
        if keys:
            await redis.delete(*keys)


class TestRedisRiskStore(RiskStoreSuite):
    @pytest_asyncio.fixture(loop_scope="session")
    async def store(self, risk_redis: Redis, redis_client: Redis) -> AsyncIterator[RedisRiskStore]:
        outbox = RedisOutbox(risk_redis, "risk")
        store = RedisRiskStore(risk_redis, outbox)
        await store.load_scripts()
        yield store
        await _drop_suite_keys(redis_client)

    @pytest.fixture
    def put_quote(self, redis_client: Redis) -> PutQuote:
        async def put(symbol: str, quote: market_pb2.Quote) -> None:
            await redis_client.set(quote_key(symbol), quote.SerializeToString(), ex=300)

        return put

    @pytest.fixture
    def stored_rows(self, store: RedisRiskStore, redis_client: Redis) -> StoredRows:
        async def rows(tenant: str) -> list[tuple[str, bytes]]:
            entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis_client.xrange(  # type: ignore[assignment]
                store.outbox.stream(tenant)
            )
            return [(f[b"d"].decode(), f[b"e"]) for _, f in entries]

        return rows
