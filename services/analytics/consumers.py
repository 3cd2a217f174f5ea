"""The Kafka sink of the analytics service: ticks, fills, position changes
and portfolio snapshots into ClickHouse, in batches.

`BatchingKafkaSubscriber` is the runtime's KafkaSubscriber (consumer group,
decoding, dead letters) with a batching loop: each record is decoded and
turned into a row by the handler (an event the tables cannot take fails
there and is dead-lettered to `<topic>.dlq` as the runtime does); rows
collect until `batch_max_rows` or `batch_max_interval_s`, then the batch is
written and only after that are the offsets committed (at-least-once). While
ClickHouse is down the write is retried with backoff and nothing new is
fetched; a stop or a rebalance in between leaves the offsets uncommitted, so
the batch comes again, and the idempotent write (storage.py) adds nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Histogram
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from runtime.config import KafkaSettings
from runtime.messaging import Event, RetryPolicy
from runtime.messaging.base import Registry
from runtime.messaging.kafka import KafkaPublisher, KafkaSubscriber
from services.analytics import domain

log = logging.getLogger(__name__)

ROWS = Counter("analytics_sink_rows", "Rows the analytics sink wrote, by table.", ["table"])
BATCHES = Histogram(
    "analytics_sink_batch_seconds",
    "Time to write one batch to ClickHouse.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

BatchWriter = Callable[[Sequence[domain.Row]], Awaitable[dict[str, int]]]


class BatchingKafkaSubscriber(KafkaSubscriber):
    """KafkaSubscriber that commits a batch's offsets only once `write` stored it."""

    def __init__(
        self,
        settings: KafkaSettings,
        registry: Registry,
        write: BatchWriter,
        *,
        group: str,
        dead_letters: KafkaPublisher,
        event_types: Sequence[str],
        batch_max_rows: int,
        batch_max_interval_s: float,
        client_id: str = "analytics",
    ) -> None:
        super().__init__(
            settings,
            registry,
            self._collect,
            group=group,
            dead_letters=dead_letters,
            event_types=event_types,
            # A row that cannot be built now never can: one try, then the DLQ.
            retry=RetryPolicy(max_attempts=1),
            max_records=batch_max_rows,
            client_id=client_id,
        )
        self._write = write
        self._max_rows = batch_max_rows
        self._max_wait_s = batch_max_interval_s
        self._rows: list[domain.Row] = []
        self.batches_written = 0

    async def _collect(self, event: Event) -> None:
        envelope = event.envelope
        row = domain.row_of(envelope.event_type, envelope.event_id, envelope.tenant_id, event.payload)
        self._rows.append(row)

    async def _run(self) -> None:
        # Offsets (next to read) per partition of records in the pending batch.
        pending: dict[TopicPartition, int] = {}
        first_at: float | None = None
        while True:
            wait_s = 0.5 if first_at is None else max(0.0, first_at + self._max_wait_s - time.monotonic())
            try:
                fetched = await self._consumer.getmany(
                    timeout_ms=int(wait_s * 1000), max_records=max(1, self._max_rows - len(self._rows))
                )
            except KafkaError as exc:
                log.warning("kafka fetch failed for %s: %s", self.name, exc)
                await asyncio.sleep(0.5)
                continue
            for tp, records in fetched.items():
                for record in records:
                    await self._process(record)
                pending[tp] = records[-1].offset + 1
            if pending and first_at is None:
                first_at = time.monotonic()
            due = first_at is not None and time.monotonic() - first_at >= self._max_wait_s
            if pending and (len(self._rows) >= self._max_rows or due):
                await self._flush()
                for tp, offset in pending.items():
                    await self._commit(tp, offset)
                pending.clear()
                first_at = None

    async def _flush(self) -> None:
        """Write the pending rows, retrying (without fetching more) until
        ClickHouse takes them: committing past unwritten rows would lose them."""
        rows, self._rows = self._rows, []
        if not rows:
            return
        written: dict[str, int] = {}
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential_jitter(multiplier=0.2, max=5.0),
            before_sleep=lambda state: log.warning(
                "analytics batch of %d rows not written (attempt %d), retrying: %r",
                len(rows),
                state.attempt_number,
                state.outcome.exception() if state.outcome else None,
            ),
        ):
            with attempt:
                started = time.perf_counter()
                written = await self._write(rows)
                BATCHES.observe(time.perf_counter() - started)
        for table, count in written.items():
            ROWS.labels(table).inc(count)
        self.batches_written += 1
