"""Features' Redis adapters pass the ports' suites (tests/suites/features_ports.py)
on the session's Redis: the vector store as features' own ACL user; the
instrument universe on a set of the test's own through the admin user (an
unpublished universe cannot be staged on the shared ``md:instruments``, the
one key of it features' user may read), and as features' user on the real set."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from runtime.config import Settings
from runtime.market_cache import INSTRUMENTS_KEY
from runtime.security.store_credentials import open_redis
from services.features.adapters.redis import RedisInstrumentUniverse, RedisVectorStore, vector_key
from services.features.ports import Listing
from tests.suites.features_ports import InstrumentUniverseSuite, PublishUniverse, VectorStoreSuite, new_symbol

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def features_redis(infra_settings: Settings) -> AsyncIterator[Redis]:
    client = open_redis(infra_settings, "features")
    yield client
    await client.aclose()


class TestRedisVectorStore(VectorStoreSuite):
    @pytest_asyncio.fixture(loop_scope="session")
    async def vectors(self, features_redis: Redis, redis_client: Redis) -> AsyncIterator[RedisVectorStore]:
        yield RedisVectorStore(features_redis)
        keys = [k async for k in redis_client.scan_iter(match=vector_key("F*"))]
        if keys:
            await redis_client.delete(*keys)


class TestRedisInstrumentUniverse(InstrumentUniverseSuite):
    @pytest_asyncio.fixture(loop_scope="session")
    async def universe_key(self, redis_client: Redis) -> AsyncIterator[str]:
        key = f"test:instruments:{uuid.uuid4().hex[:10]}"
        yield key
        await redis_client.delete(key)

    @pytest.fixture
    def universe(self, redis_client: Redis, universe_key: str) -> RedisInstrumentUniverse:
        return RedisInstrumentUniverse(redis_client, key=universe_key)

    @pytest.fixture
    def publish_universe(self, redis_client: Redis, universe_key: str) -> PublishUniverse:
        async def publish(symbols: Iterable[str]) -> None:
            await redis_client.sadd(universe_key, *symbols)

        return publish


async def test_features_user_reads_marketdatas_universe(features_redis: Redis, redis_client: Redis) -> None:
    listed = new_symbol()
    await redis_client.sadd(INSTRUMENTS_KEY, listed)
    try:
        universe = RedisInstrumentUniverse(features_redis)
        assert await universe.listing(listed) is Listing.LISTED
        assert await universe.listing(new_symbol()) is Listing.UNLISTED
    finally:
        await redis_client.srem(INSTRUMENTS_KEY, listed)
