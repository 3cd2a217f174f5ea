"""The Idempotency-Key store on the real Redis, as the gateway's own ACL user,
with many requests in flight at once: their commands share pipelines
(gateway.redis_batch), and each key is still claimed once, replayed with the
first answer, refused for another request, and released for a retry."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.responses import Response
from trading.marketdata.v1 import marketdata_service_pb2 as md

from gateway.idempotency import IdempotencyStore, Slot
from gateway.problems import Problem
from gateway.redis_batch import Batcher, Command
from runtime.config import RedisSettings, Settings
from runtime.security.store_credentials import open_redis
from runtime.storage.redis import create_redis, tenant_key
from tools.infra import free_port

RPC = "/trading.marketdata.v1.MarketDataService/GetQuote"


@pytest_asyncio.fixture(loop_scope="session")
async def gateway_redis(infra_settings: Settings) -> AsyncIterator[Redis]:
    client = open_redis(infra_settings, "gateway")
    yield client
    await client.aclose()


def _set(key: str) -> Command:
    return lambda r: r.set(key, key, px=60_000)


def _get(key: str) -> Command:
    return lambda r: r.get(key)


def _request(symbol: str = "BTC-USD") -> md.GetQuoteRequest:
    return md.GetQuoteRequest(symbol=symbol)


async def test_concurrent_requests_with_one_key_claim_it_once(gateway_redis: Redis) -> None:
    store = IdempotencyStore(gateway_redis)
    tenant, key = f"t-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex

    async def claim() -> Slot | Problem:
        try:
            claimed = await store.claim(tenant, "alice", RPC, key, _request())
        except Problem as problem:
            return problem
        assert isinstance(claimed, Slot)
        return claimed

    outcomes = await asyncio.gather(*(claim() for _ in range(20)))
    slots = [o for o in outcomes if isinstance(o, Slot)]
    assert len(slots) == 1 and slots[0].key
    assert {o.reason for o in outcomes if isinstance(o, Problem)} == {"IDEMPOTENCY_KEY_IN_PROGRESS"}
    await store.finish(slots[0], Response(b'{"quote":{}}', media_type="application/json"))
    replay = await store.begin(tenant, "alice", RPC, key, _request())
    assert isinstance(replay, Response) and replay.body == b'{"quote":{}}'
    assert replay.headers["idempotent-replayed"] == "true"
    with pytest.raises(Problem) as reused:
        await store.claim(tenant, "alice", RPC, key, _request("ETH-USD"))
    assert reused.value.status == 422 and reused.value.reason == "IDEMPOTENCY_KEY_REUSED"
    # Another caller of the tenant with the same key has a slot of its own.
    assert isinstance(await store.claim(tenant, "bob", RPC, key, _request()), Slot)


async def test_many_keys_in_flight_each_get_their_own_answer(gateway_redis: Redis) -> None:
    store = IdempotencyStore(gateway_redis)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    keys = [uuid.uuid4().hex for _ in range(200)]
    slots = await asyncio.gather(*(store.claim(tenant, "alice", RPC, k, _request()) for k in keys))
    assert all(isinstance(s, Slot) and s.key for s in slots)
    answers = [Response(f'{{"n":{i}}}'.encode(), media_type="application/json") for i in range(len(keys))]
    await asyncio.gather(*(store.finish(s, a) for s, a in zip(slots, answers, strict=True)))  # type: ignore[arg-type]
    replays = await asyncio.gather(*(store.begin(tenant, "alice", RPC, k, _request()) for k in keys))
    assert [r.body for r in replays if isinstance(r, Response)] == [a.body for a in answers]


async def test_a_failed_call_releases_its_key(gateway_redis: Redis) -> None:
    store = IdempotencyStore(gateway_redis)
    tenant, key = f"t-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    slot = await store.claim(tenant, "alice", RPC, key, _request())
    assert isinstance(slot, Slot)
    await store.finish(slot, Response(b"{}", status_code=503, media_type="application/problem+json"))
    assert await gateway_redis.get(slot.key) is None
    assert isinstance(await store.claim(tenant, "alice", RPC, key, _request()), Slot)


async def test_batched_commands_get_their_own_replies_and_errors(gateway_redis: Redis) -> None:
    batcher = Batcher(gateway_redis, max_batch=16)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    keys = [tenant_key(tenant, "gateway", "idem", str(i)) for i in range(100)]
    pipelines = 0
    make = gateway_redis.pipeline

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal pipelines
        pipelines += 1
        return make(*args, **kwargs)  # type: ignore[arg-type]

    setattr(gateway_redis, "pipeline", counted)  # noqa: B010 (a bound method replaced for the test)
    try:
        sets = await asyncio.gather(*(batcher.execute(_set(k)) for k in keys))
        assert sets == [True] * len(keys)
        gets = await asyncio.gather(*(batcher.execute(_get(k)) for k in keys))
        assert gets == [k.encode() for k in keys]
        # A command the ACL refuses fails alone; the others of its batch answer.
        outside = f"md:{uuid.uuid4().hex}"
        mixed = await asyncio.gather(
            batcher.execute(lambda r: r.get(keys[0])),
            batcher.execute(lambda r: r.set(outside, "x")),
            batcher.execute(lambda r: r.get(keys[1])),
            return_exceptions=True,
        )
        assert mixed[0] == keys[0].encode() and mixed[2] == keys[1].encode()
        assert isinstance(mixed[1], RedisError)
    finally:
        del gateway_redis.pipeline
    # 200 commands in flight together went out in pipelines of at most 16.
    assert 200 / 16 <= pipelines <= 40
    await gateway_redis.delete(*keys)


async def test_redis_down_forwards_the_key_only() -> None:
    down = create_redis(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", socket_timeout_s=0.2))
    try:
        store = IdempotencyStore(down)
        claims = (store.claim("t-1", "alice", RPC, f"k{i}", _request()) for i in range(3))
        slots = await asyncio.gather(*claims)
        assert all(isinstance(s, Slot) and not s.key for s in slots)
        await store.finish(slots[0], Response(b"{}", media_type="application/json"))  # type: ignore[arg-type]
        batcher = Batcher(down)
        with pytest.raises(RedisError):
            await batcher.execute(lambda r: r.get("t:{t-1}:gateway:x"))
    finally:
        await down.aclose()
