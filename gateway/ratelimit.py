"""Rate limits in Redis: per tenant (every route), and the login throttle.

Per tenant: a fixed window counter per tenant in Redis, shared by every
gateway replica, spent through local leases.

A replica does not go to Redis for each request. It takes a *lease* of
tokens from the tenant's window (one atomic Lua step: read the count, grant
``min(asked, limit - count)``, add the grant, keep the window's expiry) and
spends it locally; when its tokens run low it takes the next lease in the
background, so a busy tenant costs one Redis round trip per lease, not per
request. Leases start at one token and double (per tenant and window) up to
``max_lease`` (1/50 of the limit, at most 1,000), so a quiet tenant is counted
exactly as before and a busy one quickly stops paying a round trip per call.
A window Redis has reported full is refused locally until it ends.

What this enforces, across any number of replicas, per tenant and window:

* never more than the limit: every admitted request spent a token Redis
  granted out of the window's count (a replica's local window ends no later
  than Redis's key: it is timed from before the lease was asked);
* at most ``(replicas - 1) * 1.25 * max_lease`` requests refused early:
  tokens another replica leased and has not spent (yet) count against the
  window (a replica holds at most a lease and the rest of the one before);
  with the default 600 per minute that is 15 per other replica (2.5 %).
  With a limit under 100 (``max_lease`` 1) every request takes its own
  lease of one token at once, so the count is exact, as before.

Fixed windows allow a burst of up to 2x the limit across a window edge;
that is acceptable for abuse protection. When Redis is down the request is
let through (fail open): rate limiting must not take the API down with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import grpc
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.problems import Problem
from runtime.storage.redis import tenant_key
from services.identity.domain import normalize_email

IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

log = logging.getLogger(__name__)

# One lease: KEYS[1] the tenant's window counter; ARGV[1] the window (ms),
# ARGV[2] the limit, ARGV[3] the tokens asked for. Grants what the window has
# left, up to the ask, and answers {granted, the window's remaining ms}. Only
# commands the gateway's ACL user has (GET, SET, PTTL, PEXPIRE): SET KEEPTTL
# instead of INCRBY. The value is the window's count, as the per-request INCR
# of earlier gateways kept it, so replicas of both kinds share one count.
_LEASE_SCRIPT = """
local window = tonumber(ARGV[1])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then used = 0 end
local grant = math.min(tonumber(ARGV[3]), tonumber(ARGV[2]) - used)
if grant < 0 then grant = 0 end
if ttl < 0 then
  redis.call('SET', KEYS[1], used + grant, 'PX', window)
  ttl = window
elseif grant > 0 then
  redis.call('SET', KEYS[1], used + grant, 'KEEPTTL')
end
return {grant, ttl}
"""


# Leases this large or larger are renewed in the background once three
# quarters are spent (the tenant is busy: its requests should not wait for
# Redis). Smaller ones are renewed when spent, by the request that needs a token.
_PREFETCH_FROM = 4


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int  # this replica's tokens left (the window may have more, spread over replicas)
    reset_s: float


class _Window:
    """One bucket's state on this replica: its tokens of the current window."""

    __slots__ = ("ends", "full", "lease", "pending", "tokens")

    def __init__(self) -> None:
        self.tokens = 0
        self.ends = float("-inf")  # local monotonic time the window ends (no later than Redis's key)
        self.full = False  # Redis has no tokens left in this window
        self.lease = 0  # the size of the last lease asked for (doubles up to max_lease)
        self.pending: asyncio.Future[None] | None = None  # a lease on its way


class RateLimiter:
    """``limit`` requests per ``window_s`` per tenant (0 disables), counted in
    Redis across replicas and spent from local leases (see the module docstring)."""

    def __init__(
        self,
        redis: Redis,
        limit: int,
        window_s: int,
        *,
        max_lease: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self.limit = limit
        self.window_s = window_s
        self.max_lease = max(1, max_lease if max_lease is not None else min(1000, limit // 50))
        self._clock = clock
        self._script = redis.register_script(_LEASE_SCRIPT)
        self._windows: dict[str, _Window] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_prune = 0.0

    async def hit(self, tenant: str) -> Decision | None:
        """Count one request of ``tenant``; None when limiting is off or Redis failed."""
        if self.limit <= 0:
            return None
        while True:
            now = self._clock()
            w = self._windows.get(tenant)
            if w is None:
                self._prune(now)
                w = self._windows[tenant] = _Window()
            if now < w.ends:
                if w.tokens > 0:
                    w.tokens -= 1
                    busy = w.lease >= _PREFETCH_FROM and w.tokens * 4 < w.lease
                    if busy and w.pending is None and not w.full:
                        self._prefetch(tenant, w)
                    return Decision(True, self.limit, w.tokens, w.ends - now)
                if w.full:
                    return Decision(False, self.limit, 0, w.ends - now)
            elif w.pending is None:
                # A new window: leases start small again.
                w.tokens, w.full, w.lease = 0, False, 0
            if w.pending is not None:
                await asyncio.shield(w.pending)
                continue
            try:
                await self._lease(tenant, w, self._pending(w))
            except RedisError as exc:
                log.warning("rate limit check failed, letting the request through: %r", exc)
                return None

    @staticmethod
    def _pending(w: _Window) -> asyncio.Future[None]:
        """Mark ``w`` as having a lease on its way (at once, before any await:
        one lease at a time per bucket)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        w.pending = done
        return done

    def _prefetch(self, tenant: str, w: _Window) -> None:
        """The next lease, taken while the current one still has tokens."""
        done = self._pending(w)

        async def take() -> None:
            try:
                await self._lease(tenant, w, done)
            except RedisError as exc:
                log.warning("rate limit lease failed: %r", exc)

        task = asyncio.get_running_loop().create_task(take())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lease(self, tenant: str, w: _Window, done: asyncio.Future[None]) -> None:
        """One lease from Redis into ``w``; ``done`` (``w.pending``) resolves when it is there."""
        ask = min(self.max_lease, max(1, w.lease * 2))
        try:
            asked_at = self._clock()
            granted, ttl_ms = await self._script(
                keys=[tenant_key(tenant, "gateway", "ratelimit")],
                args=[self.window_s * 1000, self.limit, ask],
            )
            granted, ends = int(granted), asked_at + max(int(ttl_ms), 0) / 1000
            if ends > w.ends + self.window_s / 2:  # a window this replica has not seen yet
                w.tokens, w.ends, w.full, w.lease = 0, ends, False, 0
            else:  # the same window: keep its earliest end
                w.ends = min(w.ends, ends)
            w.tokens += granted
            w.lease = ask
            w.full = granted < ask
        finally:
            w.pending = None
            done.set_result(None)

    def _prune(self, now: float) -> None:
        """Forget buckets whose window has ended (at most once a window)."""
        if now < self._next_prune:
            return
        self._next_prune = now + self.window_s
        for key in [k for k, w in self._windows.items() if w.ends <= now and w.pending is None]:
            del self._windows[key]


# ---- the source of a request ------------------------------------------------------------------


def client_source(peer: str | None, forwarded_for: str | None, trusted: Sequence[IPNetwork]) -> str:
    """The client's address: the peer, or, when the peer is a trusted proxy,
    the rightmost X-Forwarded-For entry that is not a trusted proxy (the
    entries left of it are whatever the client wrote, so never believed)."""
    source = peer or "unknown"
    if not forwarded_for or not trusted or not _is_trusted(source, trusted):
        return source
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not _is_trusted(hop, trusted):
            return hop if _is_address(hop) else source
        source = hop
    return source


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_trusted(address: str, trusted: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def trusted_networks(cidrs: Sequence[str]) -> list[IPNetwork]:
    return [ipaddress.ip_network(c, strict=False) for c in cidrs]


# ---- login throttle ---------------------------------------------------------------------------

LOGIN_RPC = "/trading.identity.v1.IdentityService/Login"

# One atomic step per login attempt (only commands the gateway's Redis ACL
# user has: GET, SET, INCR, PEXPIRE, PTTL). KEYS[1]: the earliest next attempt
# (ms) of an (account, source); KEYS[2]: the account's attempts in the current
# window; KEYS[3]: the (account, source)'s attempts since its last success.
# The source check runs first, so a source in backoff does not spend the
# account's budget (an attacker cannot use it up for the owner's other
# sources). An attempt is counted when let through, before the password is
# checked, so a burst of concurrent attempts cannot all pass a check made
# before any of them failed.
_LOGIN_SCRIPT = """
local now = tonumber(ARGV[7])
local nxt = tonumber(redis.call('GET', KEYS[1]) or '0')
if now < nxt then return {0, nxt - now, 1} end
local limit = tonumber(ARGV[5])
if limit > 0 then
  local used = tonumber(redis.call('GET', KEYS[2]) or '0')
  if used >= limit then
    local ttl = redis.call('PTTL', KEYS[2])
    if ttl < 0 then ttl = tonumber(ARGV[6]) end
    return {0, ttl, 2}
  end
  if redis.call('INCR', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[6]) end
end
local n = redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
local free = tonumber(ARGV[1])
if n >= free then
  local delay = math.min(tonumber(ARGV[3]), tonumber(ARGV[2]) * math.pow(2, math.min(n - free, 40)))
  redis.call('SET', KEYS[1], string.format('%d', now + math.floor(delay)), 'PX', ARGV[4])
end
return {1, 0, 0}
"""
# A success: the (account, source) starts over, and its attempt is given back
# to the account (only failures spend the account's budget, so the owner's
# own logins never throttle them). SET KEEPTTL: DECR is not in the ACL.
_LOGIN_SUCCESS_SCRIPT = """
redis.call('DEL', KEYS[1], KEYS[3])
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if used > 0 then redis.call('SET', KEYS[2], used - 1, 'KEEPTTL') end
return 0
"""


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """A login let through: :meth:`LoginThrottle.succeeded` resets its source's backoff."""

    keys: tuple[str, str, str]  # next attempt, account count, (account, source) count


class LoginThrottle:
    """Exponential backoff per (account, source) and a looser rate per account.

    Neither is a lockout: a source in backoff waits at most ``backoff_max_s``
    and other sources are unaffected by it; the per-account rate only delays
    everyone when many sources fail at once. A throttled attempt costs one
    Redis call and never reaches identity (no argon2), and the answer does not
    depend on whether the account exists. Redis down: attempts are let
    through (identity's own bounded verification still protects it).
    """

    def __init__(
        self,
        redis: Redis,
        *,
        free_attempts: int,
        backoff_base_s: float,
        backoff_max_s: float,
        account_attempts: int,
        account_window_s: int,
    ) -> None:
        self._redis = redis
        self._script = redis.register_script(_LOGIN_SCRIPT)
        self._success_script = redis.register_script(_LOGIN_SUCCESS_SCRIPT)
        self.free_attempts = free_attempts
        self.backoff_base_ms = int(backoff_base_s * 1000)
        self.backoff_max_ms = int(backoff_max_s * 1000)
        self.account_attempts = account_attempts
        self.account_window_ms = account_window_s * 1000
        # The (account, source) state outlives the longest wait, then resets.
        self._source_ttl_ms = self.backoff_max_ms + 3600 * 1000

    @property
    def enabled(self) -> bool:
        return self.free_attempts > 0 or self.account_attempts > 0

    @staticmethod
    def account_of(tenant_slug: str, email: str) -> str:
        return hashlib.sha256(f"{tenant_slug.strip().lower()}\0{normalize_email(email)}".encode()).hexdigest()

    async def attempt(self, account: str, source: str) -> LoginAttempt | None:
        """Let one attempt through (None when throttling is off or Redis failed);
        429 problem with Retry-After when the source or the account must wait."""
        if not self.enabled:
            return None
        # The account hash is the hash tag: all its keys in one cluster slot.
        src = hashlib.sha256(f"{account}\0{source}".encode()).hexdigest()
        next_key = tenant_key(account, "gateway", "login", src, "next")
        count_key = tenant_key(account, "gateway", "login", src, "n")
        account_key = tenant_key(account, "gateway", "login", "account")
        free = self.free_attempts if self.free_attempts > 0 else 1 << 30
        try:
            allowed, wait_ms, which = await self._script(
                keys=[next_key, account_key, count_key],
                args=[
                    free,
                    self.backoff_base_ms,
                    self.backoff_max_ms,
                    self._source_ttl_ms,
                    self.account_attempts,
                    self.account_window_ms,
                    int(time.time() * 1000),  # the replicas' clocks are NTP-synced
                ],
            )
        except RedisError as exc:
            log.warning("login throttle unavailable, letting the attempt through: %r", exc)
            return None
        if int(allowed):
            return LoginAttempt((next_key, account_key, count_key))
        raise Problem(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "too many login attempts from this client; wait before retrying"
            if int(which) == 1
            else "too many login attempts for this account; wait before retrying",
            reason="LOGIN_THROTTLED",
            domain="trading.gateway",
            retry_after_s=max(int(wait_ms), 1) / 1000,
        )

    async def succeeded(self, attempt: LoginAttempt | None) -> None:
        """The owner got in from this source: its backoff starts over."""
        if attempt is None:
            return
        try:
            await self._success_script(keys=list(attempt.keys))
        except RedisError as exc:
            log.warning("could not reset a login backoff: %r", exc)
