"""Execution's embedded pre-trade check on the session's Redis, logged in as
execution's own ACL user, against state risk wrote as its own user:

- the check reads risk's limits and kill switch the moment risk stores them;
- it counts an order in the rate window once per client order id and takes
  a denied one back out;
- execution's user can write nothing of risk's but the rate window and the
  check markers, not even through a script it loads itself.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, ResponseError
from trading.risk.v1 import risk_service_pb2 as pb

from runtime import decimals
from runtime.config import Settings
from runtime.market_cache import quote_key
from runtime.outbox_redis import RedisOutbox
from runtime.security.store_credentials import open_redis
from runtime.storage.redis import tenant_key
from services.risk import domain
from services.risk.adapters.redis import RedisCheckState, RedisRiskStore
from services.risk.check import PreTradeCheck
from services.risk.wire import limits_to_proto
from tests.support.quotes import fresh_quote

pytestmark = pytest.mark.integration

SYMBOL = "RCHK-USD"


@pytest_asyncio.fixture(loop_scope="session")
async def redis_as(infra_settings: Settings) -> AsyncIterator[dict[str, Redis]]:
    clients = {name: open_redis(infra_settings, name) for name in ("execution", "risk")}
    yield clients
    for client in clients.values():
        await client.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def tenant(redis_client: Redis) -> AsyncIterator[str]:
    name = f"rchk-{uuid.uuid4().hex[:8]}"
    quote = fresh_quote(SYMBOL, "99", "10", "101", "10", sequence=1)
    await redis_client.set(quote_key(SYMBOL), quote.SerializeToString(), ex=300)  # marketdata's part
    yield name
    keys = [k async for k in redis_client.scan_iter(match=f"t:{{{name}}}:*")]
    if keys:
        await redis_client.delete(*keys)


async def _risk_store(redis: Redis) -> RedisRiskStore:
    store = RedisRiskStore(redis, RedisOutbox(redis, "risk"))
    await store.load_scripts()
    return store


async def _embedded(redis: Redis) -> PreTradeCheck:
    state = RedisCheckState(redis)
    await state.load_scripts()
    return PreTradeCheck(state)


def _buy(quantity: str = "1") -> domain.OrderIntent:
    return domain.OrderIntent(SYMBOL, domain.Side.BUY, Decimal(quantity), domain.OrderType.MARKET, None)


async def _window(redis: Redis, tenant: str) -> int:
    return int(await redis.zcard(tenant_key(tenant, "risk", "rate")))


@pytest.mark.asyncio(loop_scope="session")
async def test_the_embedded_check_counts_an_order_once_and_sees_risks_kill_switch(
    redis_as: dict[str, Redis], redis_client: Redis, tenant: str
) -> None:
    risk = await _risk_store(redis_as["risk"])
    check = await _embedded(redis_as["execution"])
    now_us = int(time.time() * 1e6)

    first = await check.run(tenant, _buy(), "c-1", submitted_us=now_us)
    again = await check.run(tenant, _buy(), "c-1", submitted_us=now_us)
    assert first.approved and not first.needs_authority
    assert again.check_id == first.check_id  # a retry keeps the counted check
    assert await _window(redis_client, tenant) == 1
    assert first.quote_bytes(SYMBOL) is not None  # the venue fills at the quote risk approved

    # The kill switch, set through risk's own store, holds for the very next check.
    halted = pb.TradingStatus(state=pb.TRADING_STATE_HALTED, reason="test")
    outcome, _ = await risk.set_status(tenant, halted, announce=lambda _s: [])
    assert outcome == "changed"
    denied = await check.run(tenant, _buy(), "c-2", submitted_us=now_us)
    assert not denied.approved and denied.needs_authority
    assert [d.code for d in denied.result.denials] == ["RISK_TRADING_HALTED"]
    assert await _window(redis_client, tenant) == 1  # the denied order was taken back out


@pytest.mark.asyncio(loop_scope="session")
async def test_the_embedded_check_obeys_risks_limits(redis_as: dict[str, Redis], tenant: str) -> None:
    risk = await _risk_store(redis_as["risk"])
    check = await _embedded(redis_as["execution"])
    limits = limits_to_proto(domain.DEFAULT_LIMITS)
    limits.max_order_notional.CopyFrom(decimals.to_proto(Decimal("500")))
    await risk.set_limits(tenant, limits, expected_version=0, actor="test", announce=lambda _s: [])

    small = await check.run(tenant, _buy("1"), "n-1", submitted_us=None)
    large = await check.run(tenant, _buy("10"), "n-2", submitted_us=None)
    assert small.approved
    assert not large.approved and "RISK_MAX_NOTIONAL_EXCEEDED" in [d.code for d in large.result.denials]


@pytest.mark.asyncio(loop_scope="session")
async def test_executions_user_cannot_change_risks_state(redis_as: dict[str, Redis], tenant: str) -> None:
    redis = redis_as["execution"]
    limits_key = tenant_key(tenant, "risk", "limits")
    with pytest.raises(NoPermissionError):
        await redis.hset(limits_key, "rate", "1000000")
    with pytest.raises(NoPermissionError):
        await redis.set(tenant_key(tenant, "risk", "state"), "x")
    # Nor through a script of its own: each command inside is checked too.
    sha = await redis.script_load("return redis.call('HSET', KEYS[1], 'rate', '1000000')")
    with pytest.raises(ResponseError):
        await redis.evalsha(sha, 1, limits_key)
    # Nor anything of another service's.
    with pytest.raises(NoPermissionError):
        await redis.set(tenant_key(tenant, "gateway", "idem", "k"), "x")
