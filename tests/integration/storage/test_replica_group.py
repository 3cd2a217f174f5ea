"""Replica membership in the real Redis (runtime.membership.ReplicaGroup):
members see each other, a clean leave is seen at once, a silent (killed)
member drops out after the TTL, and each key has exactly one owner."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from redis.asyncio import Redis

from runtime.membership import ReplicaGroup

SYMBOLS = [f"S{i}" for i in range(40)]


async def _until(predicate, timeout: float = 5.0) -> float:  # type: ignore[no-untyped-def]
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > timeout:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
    return time.monotonic() - began


async def test_members_share_keys_and_take_over_a_silent_one(redis_client: Redis, unique_id: str) -> None:
    key = f"decision:members:test-{unique_id}"
    groups = [ReplicaGroup(redis_client, key, f"r{i}", beat_s=0.05, ttl_s=0.4) for i in range(3)]
    changes: list[Sequence[str]] = []

    async def record(members: Sequence[str]) -> None:
        changes.append(members)

    groups[0].on_change(record)
    for group in groups:
        await group.start()
    try:
        await _until(lambda: all(len(g.members) == 3 for g in groups))
        # Every key has exactly one owner, and all three own some.
        owners = {s: [g.me for g in groups if g.owns(s)] for s in SYMBOLS}
        assert all(len(o) == 1 for o in owners.values())
        assert {o[0] for o in owners.values()} == {"r0", "r1", "r2"}

        # r2 goes silent (as a process killed with -9: no leave): dropped after the TTL.
        assert groups[2]._task is not None
        groups[2]._task.cancel()
        took = await _until(lambda: groups[0].members == ("r0", "r1") and groups[1].members == ("r0", "r1"))
        print(f"\nsilent replica dropped after {took * 1000:.0f} ms (ttl 400 ms)")
        assert took < 1.5
        assert all(sum(g.owns(s) for g in groups[:2]) == 1 for s in SYMBOLS)
        assert changes[-1] == ("r0", "r1")

        # r1 leaves cleanly: seen at the next beat.
        await groups[1].stop()
        took = await _until(lambda: groups[0].members == ("r0",))
        assert took < 0.3
        assert all(groups[0].owns(s) for s in SYMBOLS)
    finally:
        for group in groups:
            await group.stop()
