"""Work partitioned by key over a service's live replicas (decision's symbols).

Membership: each replica writes its name into a Redis sorted set, scored by
the time of its last heartbeat (every ``beat_s``); the live replicas are those
heard from within ``ttl_s``. A replica that stops cleanly leaves the set at
once; one killed with -9 drops out after ``ttl_s``. Assignment: rendezvous
(highest-random-weight) hashing of each key over the live replicas, so every
replica computes the same owner from the same member list without talking to
the others, and a change of membership moves only the keys of the replica
that came or went.

Why Redis and not a consensus engine: ownership here is an optimisation of
locality (one replica keeps a symbol's book warm and decides its vectors in
order), not a safety property. While two replicas briefly disagree about the
members, both may take a symbol's vectors; every signal and order is keyed by
the vector (unique in PostgreSQL, a deterministic client order id at
execution), so doing one twice is harmless. Scores use each replica's clock:
replicas skewed by a good part of ``ttl_s`` would see members come and go.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from prometheus_client import Gauge

from runtime.tasks import stop_task

log = logging.getLogger(__name__)

MEMBERS = Gauge("trading_replica_members", "Live replicas seen by this process, by group.", ("group",))

_UNKNOWN = "\x00unknown"  # not a member name: owner() not computed yet for a key
MembersListener = Callable[[Sequence[str]], Awaitable[None]]


def owner(key: str, members: Sequence[str]) -> str | None:
    """The member that owns ``key``: the highest hash of (member, key)."""
    if not members:
        return None
    return max(members, key=lambda m: hashlib.blake2b(f"{m}\x00{key}".encode(), digest_size=8).digest())


class ReplicaGroup:
    """This replica's membership in ``group`` and the live members' list."""

    def __init__(
        self,
        redis: Any,  # redis.asyncio.Redis (its ACL user needs z* on the key)
        key: str,
        me: str,
        *,
        beat_s: float = 0.5,
        ttl_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self.key = key
        self.me = me
        self._beat_s = beat_s
        self._ttl_s = ttl_s
        self._clock = clock
        self._members: tuple[str, ...] = (me,)
        # owns() runs per tick in features: each key's owner is hashed once per membership.
        self._owners: dict[str, str | None] = {}
        self._listeners: list[MembersListener] = []
        self._task: asyncio.Task[None] | None = None
        self._gauge = MEMBERS.labels(key)

    @property
    def members(self) -> tuple[str, ...]:
        """The live members as last read (this replica always among them)."""
        return self._members

    def owns(self, key: str) -> bool:
        found = self._owners.get(key, _UNKNOWN)
        if found is _UNKNOWN:
            found = self._owners[key] = owner(key, self._members)
        return found == self.me

    def owned(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if self.owns(k)]

    def on_change(self, listener: MembersListener) -> None:
        """Call ``listener`` with the members whenever they change."""
        self._listeners.append(listener)

    async def start(self) -> None:
        """Join (the first beat is written and the members read before this returns)."""
        try:
            await self._beat()
        except Exception as exc:  # Redis down: alone until it answers
            log.warning("replica group %s: first heartbeat failed: %r", self.key, exc)
        self._task = asyncio.create_task(self._loop(), name=f"replica-group-{self.key}")

    async def stop(self) -> None:
        """Leave at once, so the others take this replica's keys without waiting for the TTL."""
        await stop_task(self._task, name=f"replica group {self.key}")
        self._task = None
        try:
            await self._redis.zrem(self.key, self.me)
        except Exception as exc:
            log.warning("replica group %s: leaving failed: %r", self.key, exc)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._beat_s)
            try:
                await self._beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("replica group %s: heartbeat failed: %r", self.key, exc)

    async def _beat(self) -> None:
        now = self._clock()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self.key, {self.me: now})
            pipe.zremrangebyscore(self.key, "-inf", now - self._ttl_s)
            pipe.zrangebyscore(self.key, now - self._ttl_s, "+inf")
            _, _, names = await pipe.execute()
        members = tuple(sorted({n.decode() if isinstance(n, bytes) else str(n) for n in names} | {self.me}))
        self._gauge.set(len(members))
        if members != self._members:
            log.info("replica group %s: members %s", self.key, ", ".join(members))
            self._members = members
            self._owners = {}
            for listener in self._listeners:
                try:
                    await listener(members)
                except Exception as exc:  # told again on the next change
                    log.warning("replica group %s: a listener failed: %r", self.key, exc)
