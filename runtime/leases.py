"""Leadership among a service's replicas: a job that must run in one process
at a time (marketdata's feed) runs only while that process holds its lease.

The lease is a PostgreSQL session-level advisory lock, held on a connection of
the service's own pool that the lease keeps for as long as it holds it (and
unlocks before giving it back). Why
this and not a protocol of our own: PostgreSQL already guarantees that one
session at a time holds the lock, and releases it the moment the session
ends. A holder killed with -9 closes its socket, its backend ends, and a
standby polling every ``poll_s`` takes over: failover in about ``poll_s``.

A slow answer is not a lost lease (the lock lives as long as the session):
the holder gives the lease up only after ``grace_s`` without any answer.
Losing the connection (PostgreSQL restarting) is not losing the lease at once
either: the holder keeps leading for up to ``grace_s`` while it tries to take
the lock again on a new connection, so a PostgreSQL restart of a fraction of
a second does not stop the market. If another replica holds it by then, or
the grace runs out, the job is stopped. The price is the window (at most
``grace_s``, only while PostgreSQL is unreachable to the holder) in which a
standby that reached PostgreSQL first may lead too.

    lease = AdvisoryLease(pool, "marketdata.feed")
    task = asyncio.create_task(lease.run(lead=run_the_feed))   # lead() is cancelled when the lease is lost
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from prometheus_client import Gauge

log = logging.getLogger(__name__)

LEADER = Gauge("trading_lease_held", "1 while this process holds the named lease.", ("lease",))

_TRY_LOCK = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended($1, 0))"


class AdvisoryLease:
    """Holds the lease ``name`` (an advisory lock) whenever it can and runs
    ``lead`` while it does (see the module docstring)."""

    def __init__(
        self,
        pool: Any,  # asyncpg.Pool (typed loosely: tests pass a pool of their own)
        name: str,
        *,
        poll_s: float = 0.5,
        grace_s: float = 5.0,
        query_timeout_s: float = 2.0,
    ) -> None:
        self._pool = pool
        self.name = name
        self._poll_s = poll_s
        self._grace_s = grace_s
        self._timeout_s = query_timeout_s
        self._gauge = LEADER.labels(name)
        self.held = asyncio.Event()
        self._conn: Any = None  # the connection holding the lock while leading

    async def run(self, lead: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Until cancelled, or until ``lead`` returns by itself (its job is
        done, e.g. a replay that ended): wait for the lease, lead while holding it."""
        while True:
            self._conn = await self._acquire()
            leading = asyncio.create_task(lead(), name=f"lease-{self.name}")
            self._set_held(True)
            log.info("lease %s taken: leading", self.name)
            try:
                await self._hold(leading)
                if leading.done():
                    return
            finally:
                self._set_held(False)
                leading.cancel()
                # Wait for the job to end without taking on its outcome: a
                # cancel of this task itself must still propagate (a
                # suppress(BaseException) here swallowed it, and a stopped
                # service went on taking the lease).
                await asyncio.wait({leading})
                # The connection held now (_hold may have changed it): a
                # pool closes only once every connection is back.
                conn, self._conn = self._conn, None
                if conn is not None:
                    await self._release(conn)
            log.warning("lease %s lost: stopped leading", self.name)

    def _set_held(self, held: bool) -> None:
        self._gauge.set(1 if held else 0)
        if held:
            self.held.set()
        else:
            self.held.clear()

    async def _try(self) -> tuple[Any | None, bool]:
        """(a connection holding the lock, or None; whether another session holds it)."""
        try:
            conn = await asyncio.wait_for(self._pool.acquire(), self._timeout_s)
        except Exception:
            return None, False
        try:
            if await conn.fetchval(_TRY_LOCK, self.name, timeout=self._timeout_s):
                return conn, False
            await self._give_back(conn)
            return None, True
        except asyncio.CancelledError:
            # Back to the pool even when stopped mid-try (the lock may be
            # taken: unlock it), or closing the pool would wait for it forever.
            await self._release(conn)
            raise
        except Exception as exc:
            log.debug("lease %s: try failed: %r", self.name, exc)
        await self._give_back(conn)
        return None, False

    async def _acquire(self) -> Any:
        while True:
            conn, _ = await self._try()
            if conn is not None:
                return conn
            await asyncio.sleep(self._poll_s)

    async def _hold(self, leading: asyncio.Task[None]) -> None:
        """Return when the lease is lost (or ``lead`` ended). ``self._conn``
        is the connection holding the lock (None once given back)."""
        answered = time.monotonic()
        while not leading.done():
            await asyncio.sleep(self._poll_s)
            conn = self._conn
            try:
                await conn.fetchval("SELECT 1", timeout=self._timeout_s)
                answered = time.monotonic()
                continue
            except TimeoutError:
                # Slow is not gone: the lock lives as long as the session, and
                # the session is still there. Only a silence longer than the
                # grace (a network cut: the server may have ended the session
                # and a standby taken the lock) ends leading.
                if time.monotonic() - answered < self._grace_s:
                    continue
                log.warning("lease %s: no answer for %.1fs: giving it up", self.name, self._grace_s)
                return
            except Exception as exc:
                log.warning("lease %s: its connection failed (%r): taking it again", self.name, exc)
            self._conn = None
            await self._release(conn)
            self._conn = await self._retake(leading)
            if self._conn is None:
                return

    async def _retake(self, leading: asyncio.Task[None]) -> Any | None:
        """Within the grace period, the lock on a new connection (None: lost)."""
        give_up = time.monotonic() + self._grace_s
        while time.monotonic() < give_up and not leading.done():
            conn, taken = await self._try()
            if conn is not None:
                return conn
            if taken:  # another replica leads now
                return None
            await asyncio.sleep(min(self._poll_s, 0.25))
        return None

    async def _release(self, conn: Any) -> None:
        """Unlock and give the connection back (the project's pools do not
        reset sessions on release: runtime.storage.postgres)."""
        with contextlib.suppress(Exception):
            await conn.fetchval(_UNLOCK, self.name, timeout=self._timeout_s)
        await self._give_back(conn)

    async def _give_back(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._pool.release(conn), self._timeout_s)
