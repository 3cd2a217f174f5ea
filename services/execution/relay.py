"""The transactional outbox: what goes into it, and the relay that empties it.

Every order change writes, in its own transaction, one outbox row per event
envelope: the durable event (OrderAccepted, OrderFillReported, ...) for Kafka
and OrderStatusChanged for NATS. The relay publishes unsent rows in id order
and marks them sent afterwards, so a crash between the broker and the mark
publishes the same envelopes (same event ids) again: at-least-once, and
consumers drop duplicates by event id (JetStream also drops a repeated
Nats-Msg-Id within its duplicate window). Nothing is published that was not
committed, and nothing committed is lost.

Several replicas may run the relay. Each batch runs in one transaction that
takes a transaction-level advisory lock first, so only one replica publishes
at a time and per-order order holds across replicas (the others wait for the
next round); rows are read with FOR UPDATE SKIP LOCKED. Within a batch, rows
of different orders are published concurrently, rows of one order one after
another, stopping at the first failure so later events never overtake it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from prometheus_client import Counter
from trading.common.v1 import event_pb2
from trading.execution.v1 import types_pb2

from runtime.context import current_context
from runtime.health import OUTBOX_BACKLOG, HealthMonitor, default_monitor
from runtime.messaging import NotRoutedError, new_envelope
from runtime.messaging.kafka import KafkaPublisher
from runtime.messaging.nats import NatsPublisher
from services.execution.domain import EventKind, OrderEvent, event_to_proto, status_changed_to_proto
from services.execution.storage import OutboxRow

log = logging.getLogger(__name__)

PRODUCER = "execution"
KAFKA = "kafka"
NATS = "nats"
# Second key of the relay's advisory lock ("outb"); the first is the schema's oid-free constant.
_LOCK_KEY = (0x65786563, 0x6F757462)  # "exec", "outb"

PUBLISHED = Counter(
    "execution_outbox_published_total", "Outbox rows published, by destination.", ("destination",)
)
FAILED = Counter(
    "execution_outbox_publish_failures_total", "Failed outbox publishes (retried later).", ("destination",)
)

# The backlog count scans the pending index: at most this often.
_BACKLOG_EVERY_S = 2.0

_FIRST_EVENTS = frozenset({EventKind.ACCEPTED, EventKind.REJECTED})


def outbox_rows(events: Sequence[OrderEvent], *, producer: str = PRODUCER) -> list[OutboxRow]:
    """The envelopes of the events one change emitted: each event once for
    Kafka and once (as OrderStatusChanged) for NATS."""
    rows: list[OutboxRow] = []
    correlation_id = current_context().correlation_id
    for event in events:
        order = event.order
        durable = new_envelope(
            event_to_proto(event),
            tenant_id=order.tenant_id,
            correlation_id=correlation_id,
            producer=producer,
            occurred_at=order.updated_at,
        )
        changed = status_changed_to_proto(event)
        if event.kind in _FIRST_EVENTS:
            # The contract: UNSPECIFIED for a new order.
            changed.previous_status = types_pb2.ORDER_STATUS_UNSPECIFIED
        live = new_envelope(
            changed,
            tenant_id=order.tenant_id,
            correlation_id=correlation_id,
            causation_id=durable.event_id,
            producer=producer,
            occurred_at=order.updated_at,
        )
        for envelope, destination in ((durable, KAFKA), (live, NATS)):
            rows.append(
                OutboxRow(
                    tenant_id=order.tenant_id,
                    event_id=envelope.event_id,
                    event_type=envelope.event_type,
                    destination=destination,
                    partition_key=order.order_id,
                    envelope=envelope.SerializeToString(),
                )
            )
    return rows


@dataclass(frozen=True, slots=True)
class _Pending:
    id: int
    destination: str
    partition_key: str
    envelope: bytes


class OutboxRelay:
    """Publishes outbox rows; wake it after a commit, or let it poll."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        kafka: KafkaPublisher,
        nats: NatsPublisher,
        *,
        batch_size: int = 200,
        poll_interval_s: float = 0.25,
        retry_delay_s: float = 0.5,
        health: HealthMonitor | None = None,
    ) -> None:
        self._pool = pool
        self._kafka = kafka
        self._nats = nats
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._retry_delay_s = retry_delay_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # runtime.health: a round without a failed publish is progress.
        self._health = (health or default_monitor()).register("relay:execution-outbox")
        self._publish_failures = 0
        self._backlog_counted_at = 0.0

    def wake(self) -> None:
        """Something was committed: look now instead of at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="execution-outbox-relay")

    async def stop(self) -> None:
        """Stop after the batch in flight (an interrupted batch is simply published again later)."""
        task, self._task = self._task, None
        self._health.close()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            failures_before = self._publish_failures
            try:
                published = await self.run_once()
                if loop.time() - self._backlog_counted_at >= _BACKLOG_EVERY_S:
                    self._backlog_counted_at = loop.time()
                    OUTBOX_BACKLOG.labels(PRODUCER).set(await self._pool.fetchval(
                        "SELECT count(*) FROM execution.outbox WHERE sent_at IS NULL AND failed_at IS NULL"
                    ))  # fmt: skip
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox relay: batch failed, retrying: %r", exc)
                self._health.failing(f"batch: {exc!r}")
                await asyncio.sleep(self._retry_delay_s)
                continue
            if self._publish_failures == failures_before:
                self._health.progress()
            if published >= self._batch_size:
                continue  # more is waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)
            self._wake.clear()

    async def run_once(self) -> int:
        """Publish one batch of unsent rows; returns how many were marked sent."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1, $2)", *_LOCK_KEY):
                return 0  # another replica is publishing
            rows = await conn.fetch(
                """SELECT id, destination, partition_key, envelope FROM execution.outbox
                   WHERE sent_at IS NULL AND failed_at IS NULL
                   ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED""",
                self._batch_size,
            )
            if not rows:
                return 0
            groups: dict[str, list[_Pending]] = defaultdict(list)
            for r in rows:
                groups[r["partition_key"]].append(
                    _Pending(r["id"], r["destination"], r["partition_key"], bytes(r["envelope"]))
                )
            sent: list[int] = []
            poisoned: list[tuple[int, str]] = []
            await asyncio.gather(*(self._publish_group(g, sent, poisoned) for g in groups.values()))
            await self._mark_sent(conn, sent)
            if poisoned:
                await conn.executemany(
                    "UPDATE execution.outbox SET failed_at = now(), last_error = $2 WHERE id = $1", poisoned
                )
            return len(sent)

    async def _publish_group(
        self, group: Sequence[_Pending], sent: list[int], poisoned: list[tuple[int, str]]
    ) -> None:
        for row in group:
            try:
                envelope = event_pb2.EventEnvelope.FromString(row.envelope)
                if row.destination == KAFKA:
                    await self._kafka.publish(envelope)
                else:
                    await self._nats.publish(envelope)
            except (NotRoutedError, ValueError) as exc:
                # Can never succeed (no route, invalid subject): set aside, keep the rest moving.
                log.error("outbox row %d cannot be published: %r", row.id, exc)
                poisoned.append((row.id, repr(exc)))
                continue
            except Exception as exc:
                FAILED.labels(row.destination).inc()
                self._publish_failures += 1
                self._health.failing(f"publish to {row.destination}: {exc!r}")
                log.warning("outbox row %d: publish to %s failed: %r", row.id, row.destination, exc)
                return  # later rows of this order wait, so they never overtake it
            PUBLISHED.labels(row.destination).inc()
            sent.append(row.id)

    async def _mark_sent(self, conn: asyncpg.Connection, ids: list[int]) -> None:
        if ids:
            await conn.execute(
                "UPDATE execution.outbox SET sent_at = now() WHERE id = ANY($1::bigint[])", ids
            )
