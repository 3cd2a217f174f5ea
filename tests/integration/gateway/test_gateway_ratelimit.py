"""The per-tenant rate limiter on the real Redis, as the gateway's own ACL
user: several limiters on one Redis are several gateway replicas. Leases
never admit more than the limit per window across replicas, refuse at most
the stated tolerance early, stay exact for small limits, and cost a busy
tenant a round trip per lease, not per request."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from gateway.ratelimit import RateLimiter
from runtime.config import RedisSettings, Settings
from runtime.security.store_credentials import open_redis
from runtime.storage.redis import create_redis, tenant_key
from tools.infra import free_port


@pytest_asyncio.fixture(loop_scope="session")
async def replicas(infra_settings: Settings) -> AsyncIterator[list[Redis]]:
    """Three Redis clients as the gateway's ACL user: one per gateway replica."""
    clients = [open_redis(infra_settings, "gateway") for _ in range(3)]
    yield clients
    for client in clients:
        await client.aclose()


class _Counted:
    """Counts the lease scripts a limiter runs (its Redis round trips)."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.calls = 0
        script = limiter._script

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await script(*args, **kwargs)

        limiter._script = counted  # type: ignore[assignment]


def _tenant() -> str:
    return f"rl-{uuid.uuid4().hex[:10]}"


async def _hits(limiter: RateLimiter, tenant: str, n: int) -> list[bool]:
    decisions = await asyncio.gather(*(limiter.hit(tenant) for _ in range(n)))
    assert all(d is not None for d in decisions)
    return [d.allowed for d in decisions if d is not None]


async def test_busy_replicas_admit_exactly_the_limit(replicas: list[Redis]) -> None:
    limit = 300  # max_lease 6
    limiters = [RateLimiter(r, limit, 30) for r in replicas]
    assert {lim.max_lease for lim in limiters} == {6}
    tenant = _tenant()
    allowed = 0
    # 1,200 requests in concurrent waves over the three replicas: four times
    # the limit, so every replica ends up spending every token it leased.
    for _ in range(40):
        for lim in limiters:
            allowed += sum(await _hits(lim, tenant, 10))
    assert allowed == limit
    assert int(await replicas[0].get(tenant_key(tenant, "gateway", "ratelimit")) or 0) == limit
    # Once Redis reported the window full, refusals cost no round trip.
    counted = _Counted(limiters[0])
    assert not any(await _hits(limiters[0], tenant, 50))
    assert counted.calls == 0


async def test_tokens_left_on_idle_replicas_are_the_only_early_refusals(replicas: list[Redis]) -> None:
    limit = 300  # max_lease 6: a replica holds at most 1.25 x 6 unspent tokens
    limiters = [RateLimiter(r, limit, 30) for r in replicas]
    tenant = _tenant()
    allowed = 0
    for lim in limiters:
        allowed += sum(await _hits(lim, tenant, 30))
    assert allowed == 90
    # Now only the last replica is called: the others keep what they leased.
    for _ in range(60):
        allowed += sum(await _hits(limiters[-1], tenant, 10))
    assert limit - (len(limiters) - 1) * 1.25 * 6 <= allowed <= limit


async def test_small_limits_are_exact_across_replicas_until_the_window_ends(replicas: list[Redis]) -> None:
    a, b = RateLimiter(replicas[0], 3, 1), RateLimiter(replicas[1], 3, 1)
    assert a.max_lease == b.max_lease == 1
    tenant = _tenant()
    for lim in (a, b, a):
        decision = await lim.hit(tenant)
        assert decision is not None and decision.allowed
    refused = await b.hit(tenant)
    assert refused is not None and not refused.allowed and 0 < refused.reset_s <= 1.0
    counted = _Counted(a)
    for _ in range(3):
        refused = await a.hit(tenant)
        assert refused is not None and not refused.allowed
    # One round trip found the window full; the refusals after it cost none.
    assert counted.calls == 1
    # Concurrent first requests of one replica on a fresh tenant: exactly the limit.
    fresh = _tenant()
    assert sum(await _hits(a, fresh, 20)) == 3
    await asyncio.sleep(1.1)  # the window ends: a new one, counted from zero
    assert sum(await _hits(b, fresh, 5)) == 3
    assert sum(await _hits(a, fresh, 5)) == 0


async def test_a_busy_tenant_costs_a_round_trip_per_lease(replicas: list[Redis]) -> None:
    limiter = RateLimiter(replicas[0], 1_000_000_000, 60)  # the benchmark's setting
    assert limiter.max_lease == 1000
    counted = _Counted(limiter)
    tenant = _tenant()
    for _ in range(50):
        assert all(await _hits(limiter, tenant, 100))
    # 5,000 requests: leases of 1, 2, 4, ... 512, then 1,000 at a time.
    assert counted.calls <= 20
    await asyncio.sleep(0.05)  # a lease renewed in the background lands
    count = int(await replicas[0].get(tenant_key(tenant, "gateway", "ratelimit")) or 0)
    assert 5000 <= count <= 5000 + 2 * 1000


async def test_tokens_of_an_ended_window_are_not_spent_in_the_next(replicas: list[Redis]) -> None:
    limiter = RateLimiter(replicas[0], 400, 1)  # max_lease 8
    tenant = _tenant()
    key = tenant_key(tenant, "gateway", "ratelimit")
    assert all(await _hits(limiter, tenant, 30))
    await asyncio.sleep(0.05)
    leased = int(await replicas[0].get(key) or 0)
    assert leased > 30  # it holds tokens it has not spent
    await asyncio.sleep(1.1)
    counted = _Counted(limiter)
    decision = await limiter.hit(tenant)
    assert decision is not None and decision.allowed
    # The old window's tokens were dropped: a new lease, starting small again.
    assert counted.calls == 1
    assert int(await replicas[0].get(key) or 0) == 1


async def test_redis_down_lets_requests_through() -> None:
    down = create_redis(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", socket_timeout_s=0.2))
    try:
        limiter = RateLimiter(down, 5, 60)
        assert await limiter.hit(_tenant()) is None
    finally:
        await down.aclose()


@pytest.mark.parametrize("limit", [0])
async def test_zero_disables(replicas: list[Redis], limit: int) -> None:
    assert await RateLimiter(replicas[0], limit, 60).hit(_tenant()) is None
