"""Per-tenant rate limiting in Redis: a fixed window counter per tenant.

One atomic Lua step per request (INCR, set the window's expiry on the first
hit, read the remaining TTL), so every gateway replica shares the same count.
Fixed windows allow a burst of up to 2x the limit across a window edge;
that is acceptable for abuse protection and costs one round trip.
When Redis is down the request is let through (fail open): rate limiting
must not take the API down with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from runtime.storage.redis import tenant_key

log = logging.getLogger(__name__)

_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: float


class RateLimiter:
    """``limit`` requests per ``window_s`` per tenant (0 disables)."""

    def __init__(self, redis: Redis, limit: int, window_s: int) -> None:
        self._redis = redis
        self.limit = limit
        self.window_s = window_s
        self._script = redis.register_script(_SCRIPT)

    async def hit(self, tenant: str) -> Decision | None:
        """Count one request of ``tenant``; None when limiting is off or Redis failed."""
        if self.limit <= 0:
            return None
        key = tenant_key(tenant, "gateway", "ratelimit")
        try:
            count, ttl_ms = await self._script(keys=[key], args=[self.window_s * 1000])
        except RedisError as exc:
            log.warning("rate limit check failed, letting the request through: %r", exc)
            return None
        count, ttl_ms = int(count), int(ttl_ms)
        return Decision(count <= self.limit, self.limit, max(0, self.limit - count), max(ttl_ms, 0) / 1000)
