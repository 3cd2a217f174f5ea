"""The outbox of a service whose state lives in Redis (risk).

Its "transaction" is a Lua script: the script that makes a change also
appends the change's event envelopes to the tenant's outbox stream
``t:{tenant}:<service>:outbox`` (same hash slot as the tenant's other keys,
so the script stays legal on a cluster). Nothing is announced that was not
stored, and nothing stored is lost: the :class:`runtime.outbox.OutboxRelay`
publishes the stream's entries, in order, and deletes them once the broker
acknowledged them (at-least-once, like the PostgreSQL outbox: consumers drop
duplicates by event id).

Finding the streams without scanning the keyspace: before a writer runs its
script it adds the tenant to the service's index (a sorted set scored by the
time of that write, :meth:`RedisOutbox.enlist`). The relay reads the index,
drains each tenant's stream, and removes a tenant from the index only when its
stream is empty and its last enlistment is older than ``quiet_s``. A writer
enlists before it appends, so a tenant whose append is still on its way is
never dropped from the index (the append comes within milliseconds; the
grace is seconds).

One relay at a time across replicas: a round holds ``<service>:outbox:lock``
(SET NX with an expiry, released by token), the Redis counterpart of the
PostgreSQL outbox's advisory lock. Rows that can never be published are moved
to ``<service>:outbox:failed`` (capped) with their error.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Hashable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

from redis.asyncio import Redis

from runtime.outbox import OutboxClaim, OutboxRow, PendingRow
from runtime.storage.redis import tenant_key

# What a principal using a RedisOutbox runs (runtime.security.redis_acl).
REDIS_OUTBOX_COMMANDS: tuple[str, ...] = (
    "xadd",
    "xrange",
    "xdel",
    "xlen",
    "zadd",
    "zrange",
    "zscore",
    "zrem",
    "set",
    "get",
)

# The Lua function a change's script calls to append its outbox rows:
# ``outbox_append(stream_key, first_argv)`` reads ARGV[first_argv] = n, then n
# (destination, partition key, envelope) triples. Prepend to the script's text.
OUTBOX_APPEND_LUA = """
local function outbox_append(stream, first)
  local n = tonumber(ARGV[first])
  for i = 0, n - 1 do
    local at = first + 1 + i * 3
    redis.call('XADD', stream, '*', 'd', ARGV[at], 'k', ARGV[at + 1], 'e', ARGV[at + 2])
  end
  return n
end
"""

# Remove a tenant from the index only if no writer enlisted it since the relay looked.
_FORGET = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"""
# Release the round's lock only if it is still ours (it may have expired and been taken).
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_FAILED_KEEP = 10_000


def outbox_args(rows: Sequence[OutboxRow]) -> list[str | bytes]:
    """The ARGV tail :data:`OUTBOX_APPEND_LUA` reads: a count, then one triple per row."""
    args: list[str | bytes] = [str(len(rows))]
    for row in rows:
        args.extend((row.destination, row.partition_key, row.envelope))
    return args


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """A claimed row's handle: the tenant's stream and the entry id in it."""

    tenant: str
    entry_id: bytes


class RedisOutbox:
    """Per-tenant outbox streams of one service (see the module docstring)."""

    def __init__(
        self,
        redis: Redis,
        service: str,
        *,
        quiet_s: float = 30.0,
        lock_ttl_s: float = 30.0,
        tenants_per_round: int = 256,
    ) -> None:
        self._redis = redis
        self._service = service
        self._index = f"{service}:outbox:tenants"
        self._lock = f"{service}:outbox:lock"
        self.failed_key = f"{service}:outbox:failed"
        self._quiet_ms = int(quiet_s * 1000)
        self._lock_ttl_ms = int(lock_ttl_s * 1000)
        self._tenants_per_round = tenants_per_round
        self._forget = redis.register_script(_FORGET)
        self._unlock = redis.register_script(_UNLOCK)

    @property
    def name(self) -> str:
        return self._service

    def stream(self, tenant: str) -> str:
        """The tenant's outbox stream (in the tenant's slot: scripts may append to it)."""
        return tenant_key(tenant, self._service, "outbox")

    async def enlist(self, tenant: str) -> None:
        """Call before a script that may append to the tenant's stream."""
        await self._redis.zadd(self._index, {tenant: _now_ms()})

    async def append(self, tenant: str, rows: Sequence[OutboxRow]) -> None:
        """Append rows that are themselves the change (no other state to
        write with them): enlist and append in one round trip, in order."""
        if not rows:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self._index, {tenant: _now_ms()})
            for row in rows:
                pipe.xadd(
                    self.stream(tenant), {"d": row.destination, "k": row.partition_key, "e": row.envelope}
                )
            await pipe.execute()

    async def check(self) -> None:
        await self._redis.ping()

    @property
    def lanes(self) -> tuple[str | None, ...]:
        return (None,)  # both destinations share a tenant's stream: one claim takes both

    @asynccontextmanager
    async def claim(self, limit: int, destination: str | None = None) -> AsyncIterator[OutboxClaim | None]:
        if destination is not None:
            raise ValueError("the Redis outbox claims every destination at once (lanes: None)")
        token = uuid.uuid4().hex
        if not await self._redis.set(self._lock, token, nx=True, px=self._lock_ttl_ms):
            yield None  # another replica is publishing
            return
        try:
            yield await self._read(limit)
        finally:
            await self._unlock(keys=[self._lock], args=[token])

    async def _read(self, limit: int) -> _RedisClaim | None:
        enlisted = cast(
            "list[tuple[bytes, float]]",
            await self._redis.zrange(self._index, 0, self._tenants_per_round - 1, withscores=True),
        )
        if not enlisted:
            return None
        tenants = [(_text(t), float(score)) for t, score in enlisted]
        async with self._redis.pipeline(transaction=False) as pipe:
            for tenant, _ in tenants:
                pipe.xrange(self.stream(tenant), count=limit)
            replies = await pipe.execute()
        rows: list[PendingRow] = []
        drained: list[tuple[str, float]] = []
        for (tenant, score), entries in zip(tenants, replies, strict=True):
            if not entries:
                drained.append((tenant, score))
                continue
            for entry_id, fields in entries[: max(limit - len(rows), 0)]:
                rows.append(
                    PendingRow(
                        StreamEntry(tenant, entry_id),
                        _text(fields[b"d"]),
                        _text(fields[b"k"]),
                        bytes(fields[b"e"]),
                    )
                )
        await self._forget_drained(drained)
        return _RedisClaim(self, rows) if rows else None

    async def _forget_drained(self, drained: Sequence[tuple[str, float]]) -> None:
        """Drop tenants with an empty stream from the index once they have been quiet."""
        quiet_before = _now_ms() - self._quiet_ms
        for tenant, score in drained:
            if score < quiet_before:
                await self._forget(keys=[self._index], args=[tenant, repr(score)])

    async def mark_sent(self, handles: Sequence[Hashable]) -> None:
        by_tenant: dict[str, list[bytes]] = {}
        for handle in handles:
            assert isinstance(handle, StreamEntry)
            by_tenant.setdefault(handle.tenant, []).append(handle.entry_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            for tenant, ids in by_tenant.items():
                pipe.xdel(self.stream(tenant), *ids)
            await pipe.execute()

    async def set_aside(self, failures: Sequence[tuple[Hashable, str]]) -> None:
        for handle, error in failures:
            assert isinstance(handle, StreamEntry)
            entries = cast(
                "list[tuple[bytes, dict[bytes, bytes]]]",
                await self._redis.xrange(self.stream(handle.tenant), handle.entry_id, handle.entry_id),
            )
            for _, fields in entries:
                kept = {key.decode(): value for key, value in fields.items()}
                kept |= {"tenant": handle.tenant.encode(), "error": error.encode()}
                await self._redis.xadd(
                    self.failed_key,
                    kept,  # type: ignore[arg-type]  # redis-py's stub is invariant in the value type
                    maxlen=_FAILED_KEEP,
                    approximate=True,
                )
            await self._redis.xdel(self.stream(handle.tenant), handle.entry_id)

    async def backlog(self) -> int:
        tenants = cast("list[bytes]", await self._redis.zrange(self._index, 0, -1))
        if not tenants:
            return 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for tenant in tenants:
                pipe.xlen(self.stream(_text(tenant)))
            lengths = await pipe.execute()
        return sum(int(n) for n in lengths)

    async def prune(self, retention: timedelta) -> None:
        """Nothing to prune: entries are deleted once published."""


@dataclass(slots=True)
class _RedisClaim:
    store: RedisOutbox
    rows: Sequence[PendingRow]

    async def mark_sent(self, handles: Sequence[Hashable]) -> None:
        await self.store.mark_sent(handles)

    async def set_aside(self, failures: Sequence[tuple[Hashable, str]]) -> None:
        await self.store.set_aside(failures)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
