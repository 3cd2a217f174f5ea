"""The lease's rules for a slow or silent database (runtime.leases), on a
scripted connection: the real server is in tests/integration/storage/test_leases.py;
what cannot be staged there is a server that answers late or not at all."""

from __future__ import annotations

import asyncio
from typing import Any

from runtime.leases import AdvisoryLease
from runtime.tasks import stop_task


class ScriptedConn:
    """Answers after ``delay_s`` (a slow server): SELECT 1 with 1, the lock
    with True; the unlock at once (the lease's own clean-up, not what is tested)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    async def fetchval(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        if "pg_advisory_unlock" in query:
            return True
        if "pg_try_advisory_lock" in query:
            # A silent server cannot be asked for the lock again either: the
            # lease, once given up, stays given up (it was retaken at once
            # before, and a loaded machine could miss the moment between).
            if self.delay_s > (timeout or 0):
                await asyncio.sleep(timeout or 0)
                raise TimeoutError
            await asyncio.sleep(self.delay_s)
            return True
        if self.delay_s > (timeout or 0):
            await asyncio.sleep(timeout or 0)
            raise TimeoutError
        await asyncio.sleep(self.delay_s)
        return 1


class ScriptedPool:
    def __init__(self, conn: ScriptedConn) -> None:
        self.conn = conn

    async def acquire(self) -> ScriptedConn:
        return self.conn

    async def release(self, conn: ScriptedConn) -> None:
        return None


async def _forever() -> None:
    await asyncio.Event().wait()


async def _leading_for(conn: ScriptedConn, seconds: float) -> tuple[AdvisoryLease, asyncio.Task[None]]:
    lease = AdvisoryLease(ScriptedPool(conn), "test", poll_s=0.02, grace_s=0.3, query_timeout_s=0.05)
    task = asyncio.create_task(lease.run(_forever))
    await asyncio.wait_for(lease.held.wait(), 1)
    await asyncio.sleep(seconds)
    return lease, task


async def test_answers_later_than_the_query_timeout_keep_the_lease() -> None:
    # Checks time out now and then, but the server keeps answering within the grace.
    conn = ScriptedConn(delay_s=0.0)
    lease, task = await _leading_for(conn, 0.05)
    try:
        for _ in range(5):  # slow, fast, slow, ...: never silent for the grace
            conn.delay_s = 0.2
            await asyncio.sleep(0.1)
            conn.delay_s = 0.0
            await asyncio.sleep(0.05)
        assert lease.held.is_set()
    finally:
        await stop_task(task, name="lease")


async def test_a_stopped_lease_stops_at_once() -> None:
    lease, task = await _leading_for(ScriptedConn(delay_s=0.0), 0.05)
    assert await stop_task(task, name="lease", timeout_s=1.0)
    assert not lease.held.is_set()


async def test_silence_longer_than_the_grace_gives_the_lease_up() -> None:
    conn = ScriptedConn(delay_s=0.0)
    lease, task = await _leading_for(conn, 0.05)
    try:
        conn.delay_s = 10.0  # the server stops answering (a network cut)
        for _ in range(100):
            if not lease.held.is_set():
                break
            await asyncio.sleep(0.01)
        assert not lease.held.is_set()
    finally:
        await stop_task(task, name="lease")
