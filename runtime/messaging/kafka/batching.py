"""Batch sinks on Kafka: collect decoded events, write them together, and
commit the offsets a batch covers only once it is written.

A batch is written when it holds ``batch_max`` events or when its first event
waited ``batch_max_interval_s``, whichever comes first. The offsets of written
batches are committed at most every ``commit_interval_s`` (one request for
every partition): a commit costs the broker a write per partition (on tansu,
S3 requests), and a sink writing ten batches a second would otherwise commit
ten times; a crash redelivers at most that much, which the idempotent write
absorbs. While a write is
retried nothing more is fetched, and a crash before the commit delivers the
batch again (at least once): the sink's write must be idempotent. Decoding
and collecting are pure, so a message that fails there is dead-lettered at
once (one attempt), as the plain subscriber does after its attempts.

Used by analytics (ClickHouse) and audit (the hash-chained store).
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from runtime.config import KafkaSettings
from runtime.messaging.base import Event, Registry, RetryPolicy
from runtime.messaging.kafka.liveness import fetch_trouble
from runtime.messaging.kafka.publisher import KafkaPublisher
from runtime.messaging.kafka.subscriber import KafkaSubscriber

log = logging.getLogger(__name__)

# How long a fetch may wait while no batch is pending.
_IDLE_FETCH_S = 0.5


class BatchingKafkaSubscriber(KafkaSubscriber, ABC):
    """A KafkaSubscriber whose handler collects events into a batch that
    :meth:`_flush` writes; subclasses say how to collect, count and write."""

    def __init__(
        self,
        settings: KafkaSettings,
        registry: Registry,
        *,
        group: str,
        dead_letters: KafkaPublisher,
        batch_max: int,
        batch_max_interval_s: float,
        commit_interval_s: float = 1.0,
        topics: Sequence[str] = (),
        event_types: Sequence[str] = (),
        client_id: str = "trading",
    ) -> None:
        super().__init__(
            settings,
            registry,
            self._collect,
            group=group,
            dead_letters=dead_letters,
            topics=topics,
            event_types=event_types,
            retry=RetryPolicy(max_attempts=1),
            max_records=batch_max,
            client_id=client_id,
        )
        self._batch_max = batch_max
        self._batch_max_interval_s = batch_max_interval_s
        self._commit_interval_s = commit_interval_s
        self.batches_written = 0

    @abstractmethod
    async def _collect(self, event: Event) -> None:
        """Add a decoded event to the pending batch (raise: dead-lettered)."""

    @abstractmethod
    def _pending_count(self) -> int:
        """Events in the pending batch."""

    @abstractmethod
    async def _flush(self) -> None:
        """Write the pending batch; return only once it is stored (or dead-lettered)."""

    async def _run(self) -> None:
        # Offsets (next to read) per partition of the records in the pending batch.
        offsets: dict[TopicPartition, int] = {}
        # Offsets of written batches not committed yet, and when the last commit went out.
        written: dict[TopicPartition, int] = {}
        committed_at = time.monotonic()
        first_at: float | None = None
        while True:
            if first_at is None:
                wait_s = _IDLE_FETCH_S
            else:
                wait_s = max(0.0, first_at + self._batch_max_interval_s - time.monotonic())
            try:
                fetched = await self._consumer.getmany(
                    timeout_ms=int(wait_s * 1000),
                    max_records=max(1, self._batch_max - self._pending_count()),
                )
            except KafkaError as exc:
                log.warning("kafka fetch failed for %s: %s", self.name, exc)
                self._health.failing(f"fetch: {exc!r}")
                await asyncio.sleep(0.5)
                continue
            # An empty poll is idleness only while the broker answers fetches.
            trouble = None if fetched else fetch_trouble(self._consumer)
            if trouble is None:
                self._health.progress()
            else:
                self._health.failing(trouble)
            for tp, records in fetched.items():
                for record in records:
                    await self._process(record)
                offsets[tp] = records[-1].offset + 1
            if offsets and first_at is None:
                first_at = time.monotonic()
            due = first_at is not None and time.monotonic() - first_at >= self._batch_max_interval_s
            if offsets and (self._pending_count() >= self._batch_max or due):
                await self._flush()
                self.batches_written += 1
                written.update(offsets)
                offsets.clear()
                first_at = None
            if written and time.monotonic() - committed_at >= self._commit_interval_s:
                await self._commit(written)
                written.clear()
                committed_at = time.monotonic()
