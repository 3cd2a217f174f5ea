"""Redis client and tenant-scoped keys on the real (shared) Redis."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from runtime.config import RedisSettings, Settings
from runtime.security.store_credentials import REDIS_ADMIN, open_redis
from runtime.storage.redis import create_redis, tenant_key


def test_tenant_key_scopes_and_rejects_forgeable_ids() -> None:
    assert tenant_key("acme", "quote", "BTC-USD") == "t:{acme}:quote:BTC-USD"
    assert tenant_key("acme", "orders", 42) == "t:{acme}:orders:42"
    for bad in ("", "a:b", "a}b", "{a"):
        with pytest.raises(ValueError):
            tenant_key(bad, "x")
    with pytest.raises(ValueError):
        tenant_key("acme")


async def test_round_trip_and_tenant_separation(redis_client: Redis, unique_id: str) -> None:
    a, b = f"a{unique_id}", f"b{unique_id}"
    await redis_client.set(tenant_key(a, "limit"), "100", ex=30)
    await redis_client.set(tenant_key(b, "limit"), "5", ex=30)
    assert await redis_client.get(tenant_key(a, "limit")) == b"100"
    assert await redis_client.get(tenant_key(b, "limit")) == b"5"
    # A tenant's keys are enumerable by its prefix only.
    keys = [k async for k in redis_client.scan_iter(match=tenant_key(a, "*"))]
    assert keys == [tenant_key(a, "limit").encode()]
    # Hash-tagged keys of one tenant can be used together in one atomic script.
    total = await redis_client.eval(
        "return redis.call('INCRBY', KEYS[1], 1) + redis.call('INCRBY', KEYS[2], 2)",
        2,
        tenant_key(a, "n1"),
        tenant_key(a, "n2"),
    )
    assert total == 3
    await redis_client.delete(
        tenant_key(a, "limit"), tenant_key(b, "limit"), tenant_key(a, "n1"), tenant_key(a, "n2")
    )


async def test_settings_drive_the_client(infra_settings: Settings) -> None:
    client = open_redis(infra_settings, REDIS_ADMIN, decode_responses=True)
    try:
        assert await client.ping() is True
        pool_kwargs = client.connection_pool.connection_kwargs
        assert pool_kwargs["socket_timeout"] == infra_settings.redis.socket_timeout_s
    finally:
        await client.aclose()


async def test_unreachable_server_fails_fast() -> None:
    from tools.infra import free_port

    client = create_redis(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", socket_timeout_s=0.2))
    try:
        with pytest.raises(RedisConnectionError):
            await client.ping()
    finally:
        await client.aclose()
