"""Risk state in Redis, shared by every replica of the service: the
:class:`services.risk.ports.RiskStore` of production.

Keys (all tenant-scoped with :func:`runtime.storage.redis.tenant_key`, so one
tenant's keys share a cluster slot and the Lua scripts below stay legal in
cluster mode):

| key | type | what |
|---|---|---|
| ``risk:limits`` | hash | ``pb`` (RiskLimits), ``version``, ``at`` (ns), ``by``, ``rate`` (for Lua) |
| ``risk:state`` | hash | ``pb`` (TradingStatus bytes), ``state`` (number, for Lua) |
| ``risk:rate`` | zset | counted checks of the last seconds: member check id, score its rate instant (us) |
| ``risk:check:{client_order_id}`` | string | check id of the counted check of that order (5 min) |
| ``risk:pos`` | hash | symbol -> "quantity average_price" (risk's own view, from fills) |
| ``risk:pnl:{YYYYMMDD}`` | string | realised PnL of that UTC day, net of fees |
| ``risk:fill:{execution_id}`` | string | marker: that fill was applied (7 days) |
| ``risk:alert:{kind}:{symbol}`` | string | marker: that alert was raised in the last minute |
| ``risk:outbox`` | stream | events of this tenant's changes, until the relay published them |

The last quote is marketdata's global ``md:quote:{symbol}`` (Quote bytes).
The correlation clusters (analytics' ``CorrelationClustersComputed``) are
market-wide, so not tenant-scoped: the hash ``risk:corr`` maps each clustered
symbol to ``"<cluster id> <symbol>,<symbol>,..."`` and ``_at`` to the
computation time (us) of what it holds; a newer computation replaces it whole
(the SET_CLUSTERS script), an older or repeated one changes nothing.

Every change that is announced (limits, trading state, alerts) appends its
event envelopes to the tenant's outbox stream in the same Lua script
(:mod:`runtime.outbox_redis`): stored and announced, or neither. Events
carry what was there before (previous limits and state), so they are built
from a read of the current value, and the script applies the change only if
that value is still there (compare-and-set; on a race the method reads again).

One check is one round trip: a non-transactional pipeline of the CHECK
script (tenant keys, atomic), an MGET of the quotes and an HGET of the
order's cluster (other slots, so not inside the script).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final, cast

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, WatchError
from trading.risk.v1 import risk_service_pb2 as pb

from runtime import decimals
from runtime.market_cache import quote_key
from runtime.outbox import OutboxRow
from runtime.outbox_redis import OUTBOX_APPEND_LUA, RedisOutbox, outbox_args
from runtime.storage.redis import tenant_key
from services.risk import domain
from services.risk.ports import (
    ALERT_INTERVAL_S,
    CHECK_MARKER_TTL_MS,
    FILL_MARKER_TTL_S,
    PNL_TTL_S,
    CheckRead,
    LimitsConflictError,
    StateOutcome,
    StoredCluster,
    StoredLimits,
    utc_day,
)

# The correlation clusters (market-wide: no tenant).
CLUSTERS_KEY: Final = "risk:corr"
_CLUSTERS_AT: Final = "_at"

# The order-rate window, atomically. Reading the count and adding the order in
# two commands would let two replicas both see "limit - 1" and both add (a
# check-then-act race that overshoots the budget); in one script nothing runs
# in between. Each member is scored with the instant its order counts at
# (ARGV[5], domain.rate_instant_us: the trader's submission time within a
# bound, else the arrival), and counted as domain.orders_near does: the
# busiest one-second window that would hold the new order (ARGV[8], ARGV[9]
# bound the members that can share one with it). The instants come from the
# services' clocks (execution's for submission times, risk's for arrivals),
# not from Redis TIME, because a submission time can only be compared with a
# wall clock; NTP-synced hosts differ by milliseconds, well inside the bound.
# Members are kept until no admissible instant can reach them (ARGV[6]).
# The script also returns the rest of the tenant's state, so the check needs
# no other round trip.
_CHECK = """
local rate = tonumber(redis.call('HGET', KEYS[1], 'rate') or ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[6])
local near = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. ARGV[8], '(' .. ARGV[9], 'WITHSCORES')
local instant = tonumber(ARGV[5])
local times = {}
for i = 2, #near, 2 do times[#times + 1] = tonumber(near[i]) end
local count, hi, n = 0, 1, #times
local function busiest(lo, start)
  while hi <= n and times[hi] < start + 1000000 do hi = hi + 1 end
  if hi - lo > count then count = hi - lo end
end
local lo = 1
while lo <= n and times[lo] <= instant do busiest(lo, times[lo]); lo = lo + 1 end
local first = 1
while first <= n and times[first] < instant do first = first + 1 end
busiest(first, instant)
local prior = redis.call('GET', KEYS[4])
local added = 0
if ARGV[3] == '1' and not prior and count < rate then
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[2])
  redis.call('PEXPIRE', KEYS[3], ARGV[7])
  redis.call('SET', KEYS[4], ARGV[2], 'PX', ARGV[4])
  added = 1
end
return {count, added, prior, redis.call('HGET', KEYS[1], 'pb'), redis.call('HGET', KEYS[2], 'pb'),
        redis.call('HGETALL', KEYS[5]), redis.call('GET', KEYS[6])}
"""

# Undo the counting of a check that was denied for another reason. Between the
# CHECK script and this, a concurrent check sees one order too many: it can
# only be denied, never approved, in error (fail-safe).
_RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""

# Compare-and-set of the limits: a conflict when expected_version (non-zero)
# differs; nothing changes (same version) when the limits are equal; "moved"
# when the version is not the one the caller read (its event would be wrong:
# it reads again). Otherwise store and append the outbox rows (ARGV[7]...).
_SET_LIMITS = (
    OUTBOX_APPEND_LUA
    + """
local cur = redis.call('HMGET', KEYS[1], 'pb', 'version', 'at', 'by')
local version = tonumber(cur[2] or '0')
local expected = tonumber(ARGV[2])
if expected ~= 0 and expected ~= version then return {'conflict', version} end
if cur[1] == ARGV[1] then return {'same', version, cur[3], cur[4], cur[1]} end
if version ~= tonumber(ARGV[6]) then return {'moved', version} end
version = version + 1
redis.call('HSET', KEYS[1], 'pb', ARGV[1], 'version', version, 'at', ARGV[3], 'by', ARGV[4], 'rate', ARGV[5])
outbox_append(KEYS[2], 7)
return {'changed', version, ARGV[3], ARGV[4], cur[1]}
"""
)

# Switch the trading state unless it already is the target (then nothing
# changes). ARGV[3], when not empty, is the only current state the switch may
# start from (the automatic switch to REDUCING must not lift a HALTED).
# ARGV[4] is the status the caller read ("" for none): "moved" when another
# change came first. Otherwise store and append the outbox rows (ARGV[5]...).
_SET_STATE = (
    OUTBOX_APPEND_LUA
    + """
local cur = redis.call('HMGET', KEYS[1], 'pb', 'state')
local state = cur[2] or '1'
if state == ARGV[2] then return {'same', cur[1]} end
if ARGV[3] ~= '' and state ~= ARGV[3] then return {'skipped', cur[1]} end
if (cur[1] or '') ~= ARGV[4] then return {'moved', cur[1]} end
redis.call('HSET', KEYS[1], 'pb', ARGV[1], 'state', ARGV[2])
outbox_append(KEYS[2], 5)
return {'changed', cur[1]}
"""
)

# An alert at most once per kind and symbol per interval: the marker and the
# alert's outbox rows (ARGV[2]...) together.
_ALERT = (
    OUTBOX_APPEND_LUA
    + """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
outbox_append(KEYS[2], 2)
return 1
"""
)


# Replace the clusters when ARGV[1] (computed at, us) is newer than the
# stored ones: all fields go, then ARGV[2], ARGV[3], ... are the new
# field/value pairs. Microseconds stay exact in Lua's doubles (< 2^53).
_SET_CLUSTERS = """
local at = tonumber(redis.call('HGET', KEYS[1], '_at') or '0')
if at >= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '_at', ARGV[1])
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""


def _opt_bytes(value: object) -> bytes | None:
    """A reply of the bytes client (decode_responses=False) as bytes or None."""
    if value is None or isinstance(value, bytes):
        return value
    raise TypeError(f"expected a bytes reply from Redis, got {type(value).__name__}")


def _bytes(value: object) -> bytes:
    data = _opt_bytes(value)
    if data is None:
        raise TypeError("expected a bytes reply from Redis, got nil")
    return data


def _position(raw: bytes) -> domain.Position:
    quantity, average = raw.decode().split(" ")
    return domain.Position(Decimal(quantity), Decimal(average))


def _position_text(position: domain.Position) -> str:
    return f"{decimals.to_proto(position.quantity).value} {decimals.to_proto(position.average_price).value}"


# ------------------------------------------------------------------ store


def cluster_value(cluster_id: str, symbols: Sequence[str]) -> str:
    return f"{cluster_id} {','.join(sorted(symbols))}"


def parse_cluster(raw: bytes | None) -> StoredCluster | None:
    if not raw:
        return None
    cluster_id, _, members = raw.decode().partition(" ")
    return StoredCluster(cluster_id, frozenset(m for m in members.split(",") if m))


class RedisCheckState:
    """What a pre-trade check reads and counts (the CHECK and RELEASE scripts):
    risk's own store builds on it, and execution's order path runs it on its
    own ACL user, which may read risk's tenant keys but write only the rate
    window and the check markers (runtime.security.redis_acl)."""

    _SOURCES: Mapping[str, str] = {"check": _CHECK, "release": _RELEASE}

    def __init__(
        self,
        redis: Redis,
        *,
        default_rate: int = domain.DEFAULT_LIMITS.max_orders_per_second,
        time_bound: domain.SubmissionTimeBound | None = None,
    ) -> None:
        self._redis = redis
        self._default_rate = default_rate
        self._time_bound = time_bound or domain.SubmissionTimeBound()
        self._shas: dict[str, str] = {}
        # Per tenant, the symbols it held at its last check: their quotes are
        # fetched in the check's one round trip to mark positions to market.
        self._held: dict[str, tuple[str, ...]] = {}

    @property
    def time_bound(self) -> domain.SubmissionTimeBound:
        """Within which a claimed submission time is believed (see domain)."""
        return self._time_bound

    async def load_scripts(self) -> None:
        for name, source in self._SOURCES.items():
            self._shas[name] = await self._redis.script_load(source)

    async def _eval(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await self._redis.evalsha(self._shas[name], len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted or SCRIPT FLUSH: load again once
            await self.load_scripts()
            return await self._redis.evalsha(self._shas[name], len(keys), *keys, *args)

    # ---------------------------------------------------------------- check

    async def read_for_check(
        self,
        tenant: str,
        symbol: str,
        check_id: str,
        client_order_id: str,
        *,
        consume: bool,
        now_s: float,
        rate_instant_us: int | None = None,
    ) -> CheckRead:
        """The snapshot of one check in one round trip; counts the order in the
        rate window at `rate_instant_us` (default: `now_s`) when `consume` and
        within the budget."""
        now_us = int(now_s * 1e6)
        instant = now_us if rate_instant_us is None else rate_instant_us
        # No admissible instant is older than max_back_s, so nothing older
        # than that plus one window can be counted again.
        keep_after = now_us - int(self._time_bound.max_back_s * 1e6) - domain.RATE_WINDOW_US
        keep_ms = int((self._time_bound.max_back_s + self._time_bound.max_ahead_s) * 1000) + 2000
        # Bounds as exact integer text: Lua's number formatting would round
        # microsecond timestamps (16 digits) to 14 significant digits.
        keys = (
            tenant_key(tenant, "risk", "limits"),
            tenant_key(tenant, "risk", "state"),
            tenant_key(tenant, "risk", "rate"),
            tenant_key(tenant, "risk", "check", client_order_id),
            tenant_key(tenant, "risk", "pos"),
            tenant_key(tenant, "risk", "pnl", utc_day(now_s)),
        )
        args = (
            self._default_rate,
            check_id,
            "1" if consume else "0",
            CHECK_MARKER_TTL_MS,
            instant,
            keep_after,
            keep_ms,
            instant - domain.RATE_WINDOW_US,
            instant + domain.RATE_WINDOW_US,
        )
        wanted = (symbol, *(s for s in self._held.get(tenant, ()) if s != symbol))
        for attempt in (1, 2):
            pipe = self._redis.pipeline(transaction=False)
            pipe.evalsha(self._shas["check"], len(keys), *keys, *args)
            pipe.mget([quote_key(s) for s in wanted])
            pipe.hget(CLUSTERS_KEY, symbol)
            try:
                script, quote_values, cluster_raw = await pipe.execute()
                break
            except NoScriptError:
                if attempt == 2:
                    raise
                await self.load_scripts()
        count, added, prior, limits_pb, status_pb, flat_positions, pnl = script
        positions = {
            flat_positions[i].decode(): _position(flat_positions[i + 1])
            for i in range(0, len(flat_positions), 2)
        }
        quotes = {s: _opt_bytes(v) for s, v in zip(wanted, quote_values, strict=True)}
        cluster = parse_cluster(_opt_bytes(cluster_raw))
        held = domain.held_symbols(positions.items())
        missing = [s for s in held if s not in quotes]
        if missing:  # first check of the tenant or a new position: one more trip
            quotes.update(await self.quotes(missing))
        if len(self._held) > 10_000:
            self._held.clear()
        self._held[tenant] = tuple(sorted(held))
        return CheckRead(
            orders_in_window=int(count),
            counted=bool(added),
            prior_check_id=prior.decode() if prior else None,
            limits_pb=limits_pb or None,
            status_pb=status_pb or None,
            positions=positions,
            realized_today=Decimal(pnl.decode()) if pnl else domain.ZERO,
            quotes=quotes,
            cluster=cluster,
        )

    async def release(self, tenant: str, check_id: str, client_order_id: str) -> None:
        """Take a counted check back out of the rate window (it was denied)."""
        keys = (tenant_key(tenant, "risk", "rate"), tenant_key(tenant, "risk", "check", client_order_id))
        await self._eval("release", keys, (check_id,))

    async def quotes(self, symbols: Sequence[str]) -> dict[str, bytes | None]:
        if not symbols:
            return {}
        values = await self._redis.mget([quote_key(s) for s in symbols])
        return {s: _opt_bytes(v) for s, v in zip(symbols, values, strict=True)}


class RedisRiskStore(RedisCheckState):
    """Risk's state in Redis (the keys in the module docstring)."""

    _SOURCES: Mapping[str, str] = {
        "check": _CHECK,
        "release": _RELEASE,
        "limits": _SET_LIMITS,
        "state": _SET_STATE,
        "alert": _ALERT,
        "clusters": _SET_CLUSTERS,
    }

    def __init__(
        self,
        redis: Redis,
        outbox: RedisOutbox,
        *,
        default_rate: int = domain.DEFAULT_LIMITS.max_orders_per_second,
        time_bound: domain.SubmissionTimeBound | None = None,
    ) -> None:
        super().__init__(redis, default_rate=default_rate, time_bound=time_bound)
        self.outbox = outbox

    # ---------------------------------------------------------------- limits

    async def get_limits(self, tenant: str) -> StoredLimits | None:
        raw = await self._redis.hmget(tenant_key(tenant, "risk", "limits"), ["pb", "version", "at", "by"])
        if raw[0] is None:
            return None
        return StoredLimits(
            pb.RiskLimits.FromString(_bytes(raw[0])),
            int(_bytes(raw[1])),
            int(_bytes(raw[2])),
            _bytes(raw[3]).decode(),
        )

    async def set_limits(
        self,
        tenant: str,
        limits: pb.RiskLimits,
        *,
        expected_version: int,
        actor: str,
        announce: Callable[[StoredLimits], Sequence[OutboxRow]],
    ) -> StoredLimits:
        """Store `limits` (compare-and-set on `expected_version` when non-zero)
        with the outbox rows `announce` makes of the change."""
        data = limits.SerializeToString(deterministic=True)
        await self.outbox.enlist(tenant)
        while True:
            current = await self.get_limits(tenant)
            now_ns = time.time_ns()
            version = current.version if current is not None else 0
            change = StoredLimits(
                limits, version + 1, now_ns, actor, current.limits if current else None, changed=True
            )
            reply = await self._eval(
                "limits",
                (tenant_key(tenant, "risk", "limits"), self.outbox.stream(tenant)),
                (
                    data,
                    expected_version,
                    now_ns,
                    actor,
                    limits.max_orders_per_second,
                    version,
                    *outbox_args(announce(change)),
                ),
            )
            outcome = reply[0].decode()
            if outcome == "conflict":
                raise LimitsConflictError(int(reply[1]))
            if outcome == "moved":
                continue  # changed since it was read: the event would name the wrong previous limits
            if outcome == "changed":
                return change
            previous = pb.RiskLimits.FromString(reply[4]) if reply[4] else None
            return StoredLimits(limits, int(reply[1]), int(reply[2]), reply[3].decode(), previous)

    # ---------------------------------------------------------------- trading state

    async def get_status(self, tenant: str) -> pb.TradingStatus | None:
        raw = _opt_bytes(await self._redis.hget(tenant_key(tenant, "risk", "state"), "pb"))
        return pb.TradingStatus.FromString(raw) if raw else None

    async def set_status(
        self,
        tenant: str,
        status: pb.TradingStatus,
        *,
        announce: Callable[[domain.TradingState], Sequence[OutboxRow]],
        only_from: domain.TradingState | None = None,
    ) -> tuple[StateOutcome, pb.TradingStatus | None]:
        """("changed" | "same" | "skipped", the status before). A change is
        stored with the outbox rows `announce` makes of the state before it."""
        key = tenant_key(tenant, "risk", "state")
        await self.outbox.enlist(tenant)
        while True:
            raw = _opt_bytes(await self._redis.hget(key, "pb")) or b""
            seen = pb.TradingStatus.FromString(raw).state if raw else domain.TradingState.ACTIVE
            reply = await self._eval(
                "state",
                (key, self.outbox.stream(tenant)),
                (
                    status.SerializeToString(),
                    int(status.state),
                    "" if only_from is None else int(only_from),
                    raw,
                    *outbox_args(announce(domain.TradingState(seen))),
                ),
            )
            outcome = reply[0].decode()
            if outcome == "moved":
                continue
            before = pb.TradingStatus.FromString(reply[1]) if reply[1] else None
            return cast(StateOutcome, outcome), before

    # ---------------------------------------------------------------- positions and PnL

    async def apply_fill(self, tenant: str, fill: domain.Fill) -> bool:
        """:meth:`services.risk.ports.RiskStore.apply_fill`.

        Decimal arithmetic cannot run in Lua (doubles), so this is an
        optimistic transaction: WATCH the marker, the positions and the day's
        PnL, compute in Python, write all three in MULTI. A concurrent
        delivery of the same fill makes one EXEC fail; its retry then sees the
        marker and skips. The marker is the SET NX of the idempotent consumer,
        made atomic with the update it guards.
        """
        marker = tenant_key(tenant, "risk", "fill", fill.fill_id)
        pos_key = tenant_key(tenant, "risk", "pos")
        pnl_key = tenant_key(tenant, "risk", "pnl", fill.day.strftime("%Y%m%d"))
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(marker, pos_key, pnl_key)
                    if await pipe.exists(marker):
                        await pipe.unwatch()  # type: ignore[no-untyped-call]
                        return False
                    raw = _opt_bytes(await pipe.hget(pos_key, fill.symbol))
                    pnl_raw = _opt_bytes(await pipe.get(pnl_key))
                    position = _position(raw) if raw else domain.Position()
                    after, realized = domain.apply_fill(position, fill.side, fill.quantity, fill.price)
                    pnl = (Decimal(pnl_raw.decode()) if pnl_raw else domain.ZERO) + realized - fill.fee
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(marker, b"1", ex=FILL_MARKER_TTL_S)
                    if after.quantity == 0:
                        pipe.hdel(pos_key, fill.symbol)
                    else:
                        pipe.hset(pos_key, fill.symbol, _position_text(after))
                    pipe.set(pnl_key, decimals.to_proto(pnl).value, ex=PNL_TTL_S)
                    await pipe.execute()
                    return True
                except WatchError:
                    continue

    async def positions(self, tenant: str) -> dict[str, domain.Position]:
        raw = await self._redis.hgetall(tenant_key(tenant, "risk", "pos"))
        return {_bytes(k).decode(): _position(_bytes(v)) for k, v in raw.items()}

    async def realized_today(self, tenant: str, now_s: float) -> Decimal:
        raw = _opt_bytes(await self._redis.get(tenant_key(tenant, "risk", "pnl", utc_day(now_s))))
        return Decimal(raw.decode()) if raw else domain.ZERO

    # ---------------------------------------------------------------- correlation clusters

    async def set_clusters(self, computed_at_us: int, clusters: Mapping[str, Sequence[str]]) -> bool:
        """Replace the clusters (cluster id -> its symbols) with those computed
        at `computed_at_us`, unless newer or the same ones are stored; True
        when they were replaced."""
        fields: list[str] = []
        for cluster_id, symbols in sorted(clusters.items()):
            value = cluster_value(cluster_id, symbols)
            for symbol in sorted(symbols):
                fields += [symbol, value]
        replaced = await self._eval("clusters", (CLUSTERS_KEY,), (computed_at_us, *fields))
        return bool(replaced)

    async def cluster_of(self, symbol: str) -> StoredCluster | None:
        return parse_cluster(_opt_bytes(await self._redis.hget(CLUSTERS_KEY, symbol)))

    async def alert_once(self, tenant: str, kind: str, symbol: str, rows: Sequence[OutboxRow]) -> bool:
        """Store the alert's outbox rows, at most once per kind and symbol per
        minute (the contract's throttle); False when throttled."""
        key = tenant_key(tenant, "risk", "alert", kind, symbol or "-")
        await self.outbox.enlist(tenant)
        raised = await self._eval(
            "alert", (key, self.outbox.stream(tenant)), (ALERT_INTERVAL_S, *outbox_args(rows))
        )
        return bool(raised)

    async def add_events(self, tenant: str, rows: Sequence[OutboxRow]) -> None:
        """Append outbox rows of an event that is itself the fact (a rejection)."""
        await self.outbox.append(tenant, rows)
