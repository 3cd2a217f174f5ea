"""Leadership by PostgreSQL advisory lock (runtime.leases) on the real server:
one holder at a time, a standby takes over when the holder's session ends, a
job that ends by itself ends the lease loop."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from runtime.config import Settings
from runtime.leases import AdvisoryLease
from runtime.storage.postgres import create_pool
from runtime.tasks import stop_task


async def _forever() -> None:
    await asyncio.Event().wait()


async def _pool(settings: Settings) -> asyncpg.Pool:
    return await create_pool(settings.postgres, min_size=0, max_size=2, application_name="lease-test")


async def test_one_holder_at_a_time_and_a_standby_takes_over(
    infra_settings: Settings, unique_id: str
) -> None:
    name = f"test.lease.{unique_id}"
    pools = [await _pool(infra_settings), await _pool(infra_settings)]
    leaders: list[int] = []
    running = [0]
    overlap = [False]

    def job(index: int):  # type: ignore[no-untyped-def]
        async def lead() -> None:
            leaders.append(index)
            running[0] += 1
            overlap[0] = overlap[0] or running[0] > 1
            try:
                await asyncio.Event().wait()
            finally:
                running[0] -= 1

        return lead

    leases = [AdvisoryLease(pool, name, poll_s=0.05) for pool in pools]
    tasks = [asyncio.create_task(lease.run(job(i))) for i, lease in enumerate(leases)]
    try:
        await asyncio.wait_for(
            asyncio.wait(
                [asyncio.create_task(x.held.wait()) for x in leases], return_when=asyncio.FIRST_COMPLETED
            ),
            5,
        )
        await asyncio.sleep(0.3)  # the standby tries several times meanwhile
        assert len(leaders) == 1 and running[0] == 1
        first = leaders[0]
        standby = 1 - first

        # The holder's sessions end at once (as when its process is killed).
        began = time.monotonic()
        await stop_task(tasks[first], name="holder")
        await pools[first].close()
        await asyncio.wait_for(leases[standby].held.wait(), 5)
        took = time.monotonic() - began
        print(f"\nlease failover after {took * 1000:.0f} ms")
        assert leaders == [first, standby]
        assert took < 1.0
        assert not overlap[0]
    finally:
        for task in tasks:
            await stop_task(task, name="lease")
        for pool in pools:
            await pool.close()


async def test_a_killed_holder_session_frees_the_lease(infra_settings: Settings, unique_id: str) -> None:
    name = f"test.lease.{unique_id}"
    holder_pool, standby_pool = await _pool(infra_settings), await _pool(infra_settings)
    holder = AdvisoryLease(holder_pool, name, poll_s=0.05, grace_s=0.3)
    standby = AdvisoryLease(standby_pool, name, poll_s=0.05)
    holder_task = asyncio.create_task(holder.run(_forever))
    await asyncio.wait_for(holder.held.wait(), 5)
    standby_task = asyncio.create_task(standby.run(_forever))
    admin = await asyncpg.connect(infra_settings.postgres.dsn)
    try:
        await asyncio.sleep(0.2)
        assert not standby.held.is_set()
        # Terminate the holder's backend from outside (its connection dies as
        # in a network failure): the standby gets the lock; the holder, failing
        # to take it back within its grace, stops leading.
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'lease-test'"
            " AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)"
        )
        await asyncio.wait_for(standby.held.wait(), 5)
        for _ in range(100):
            if not holder.held.is_set():
                break
            await asyncio.sleep(0.05)
        assert not holder.held.is_set()
    finally:
        await admin.close()
        for task in (holder_task, standby_task):
            await stop_task(task, name="lease")
        await holder_pool.close()
        await standby_pool.close()


async def test_a_job_that_ends_ends_the_lease(infra_settings: Settings, unique_id: str) -> None:
    pool = await _pool(infra_settings)
    try:
        lease = AdvisoryLease(pool, f"test.lease.{unique_id}", poll_s=0.05)
        done: list[bool] = []

        async def lead() -> None:
            done.append(True)

        await asyncio.wait_for(lease.run(lead), 5)
        assert done == [True] and not lease.held.is_set()
        # ...and the lock is free again.
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", lease.name)
            await conn.fetchval("SELECT pg_advisory_unlock(hashtextextended($1, 0))", lease.name)
    finally:
        await pool.close()
