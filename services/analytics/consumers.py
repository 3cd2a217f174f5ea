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
the batch comes again, and the idempotent write (adapters/clickhouse.py) adds nothing twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from prometheus_client import Counter, Histogram
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from runtime.config import KafkaSettings
from runtime.messaging import Event
from runtime.messaging.base import Registry
from runtime.messaging.kafka import KafkaPublisher
from runtime.messaging.kafka.batching import BatchingKafkaSubscriber
from services.analytics import domain

log = logging.getLogger(__name__)

ROWS = Counter("analytics_sink_rows", "Rows the analytics sink wrote, by table.", ["table"])
BATCHES = Histogram(
    "analytics_sink_batch_seconds",
    "Time to write one batch to ClickHouse.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

BatchWriter = Callable[[Sequence[domain.Row]], Awaitable[dict[str, int]]]


class AnalyticsSink(BatchingKafkaSubscriber):
    """The analytics sink: rows built from events, written to ClickHouse in
    batches; a batch's offsets are committed only once `write` stored it."""

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
            group=group,
            dead_letters=dead_letters,
            event_types=event_types,
            batch_max=batch_max_rows,
            batch_max_interval_s=batch_max_interval_s,
            client_id=client_id,
        )
        self._write = write
        self._rows: list[domain.Row] = []

    async def _collect(self, event: Event) -> None:
        envelope = event.envelope
        row = domain.row_of(envelope.event_type, envelope.event_id, envelope.tenant_id, event.payload)
        self._rows.append(row)

    def _pending_count(self) -> int:
        return len(self._rows)

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
