"""Identity's events through a transactional outbox.

`record()` adds the event to ``identity.outbox`` inside the caller's (tenant)
transaction, so an event exists exactly when its change committed. The
:class:`OutboxRelay` publishes rows to Kafka in id order and deletes them once
the broker acked: woken right after each commit, and polling every second for
rows left by a crash or a broker outage (at-least-once; consumers dedupe by
event id). Several replicas may relay at once (``FOR UPDATE SKIP LOCKED``).
Events never carry passwords, secrets or hashes (the payload types have no
such fields).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from google.protobuf import message as pb_message

from runtime.context import current_context
from runtime.health import OUTBOX_BACKLOG, HealthMonitor, default_monitor
from runtime.messaging import decode_envelope, new_envelope
from runtime.messaging.kafka import KafkaPublisher

log = logging.getLogger(__name__)

PRODUCER = "identity"
BATCH = 200


async def record(conn: asyncpg.Connection, tenant_id: str, payload: pb_message.Message) -> None:
    """Add an event of `tenant_id` to the outbox in `conn`'s transaction."""
    envelope = new_envelope(
        payload,
        tenant_id=tenant_id,
        correlation_id=current_context().correlation_id,
        producer=PRODUCER,
    )
    await conn.execute(
        "INSERT INTO identity.outbox (tenant_id, envelope) VALUES ($1, $2)",
        tenant_id,
        envelope.SerializeToString(),
    )


class OutboxRelay:
    """Publishes outbox rows to Kafka (see the module docstring)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        kafka: KafkaPublisher,
        *,
        poll_s: float = 1.0,
        health: HealthMonitor | None = None,
    ) -> None:
        self._pool = pool
        self._kafka = kafka
        self._poll_s = poll_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # runtime.health: a round that publishes (or finds nothing) is progress.
        self._health = (health or default_monitor()).register("relay:identity-outbox")

    def wake(self) -> None:
        """Publish soon (call after committing events)."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="identity-outbox-relay")

    async def stop(self) -> None:
        self._health.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                while await self.flush() == BATCH:
                    pass
                self._health.progress()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("identity outbox relay: %r (retrying)", exc)
                self._health.failing(f"flush: {exc!r}")
            # Rows are deleted once published: what is left is the backlog
            # (counted after failed rounds too: that is when it grows).
            with contextlib.suppress(asyncpg.PostgresError, OSError, TimeoutError):
                OUTBOX_BACKLOG.labels(PRODUCER).set(
                    await self._pool.fetchval("SELECT count(*) FROM identity.outbox")
                )

    async def flush(self) -> int:
        """Publish and delete one batch; returns how many rows it held."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, envelope FROM identity.outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED", BATCH
            )
            if rows:
                # Handed to the producer in id order (per-partition order holds), acks awaited together.
                await self._kafka.publish_many([(decode_envelope(r["envelope"]), None) for r in rows])
                await conn.execute(
                    "DELETE FROM identity.outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows]
                )
        return len(rows)
