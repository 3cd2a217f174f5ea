"""The audit store's consumer: every Kafka topic of the event registry, one
consumer group, each event appended once to its tenant's chain, in batches.
(The lineage graph has a consumer of its own, :class:`LineageSubscriber`, at
the end of this module.)

`AuditSubscriber` is the runtime's KafkaSubscriber (consumer group, decoding,
dead letters, tracing) with a batching loop, the shape of the analytics sink
(services/analytics/consumers.py): each decoded event becomes a
:class:`~services.audit.ports.NewRecord`; records collect until
`batch_max_events` or `batch_max_interval_s`, then the batch is written and
only after that are the offsets committed (at-least-once). The batch is split
by tenant and each tenant's part is one `AuditStore.append_batch` (one
transaction, one chain lock); tenants are written concurrently.

Idempotent by event id: a redelivered event finds its record and changes
nothing. Envelopes that do not decode, or name an event type no contract
declares, are dead-lettered to `<topic>.dlq` by the runtime (see `tradingctl
deadletters`). PostgreSQL outages are retried for up to `transient_retry_s`.
A tenant's part that PostgreSQL refuses (a poison event, say text with a NUL
character) or that stays unwritable is appended event by event, with the
subscriber's attempts per event: the events that still fail are dead-lettered
(reason, headers, attempt count) and the rest of the batch is stored.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from aiokafka import ConsumerRecord
from prometheus_client import Counter, Histogram

from runtime.config import KafkaSettings
from runtime.graph import GraphStore
from runtime.messaging import Event, RetryPolicy
from runtime.messaging.base import DeadLetterReason, Registry
from runtime.messaging.kafka import KafkaPublisher
from runtime.messaging.kafka.batching import BatchingKafkaSubscriber
from runtime.storage.postgres import retry_transient
from services.audit.domain.lineage import LINEAGE_EVENT_TYPES, Lineage, project
from services.audit.ports import Appended, AuditStore, NewRecord, new_record

log = logging.getLogger(__name__)

T = TypeVar("T")

EVENTS = Counter("audit_events", "Events handled by the audit store.", ["outcome"])
BATCHES = Histogram(
    "audit_batch_seconds",
    "Time to append one consumed batch (all its tenants) to the audit store.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


@dataclass(frozen=True, slots=True)
class Pending:
    """A consumed event waiting for its batch to be written, with the Kafka
    record it came in (dead-lettered as is if it cannot be stored)."""

    event: Event
    record: NewRecord
    source: ConsumerRecord[bytes, bytes]


def by_chain(pending: Sequence[Pending]) -> dict[str, list[Pending]]:
    """A batch split by tenant, each part in the order to append it.

    Kafka orders each partition, not the topics and partitions between them:
    they are merged by event time, keeping each one's own order, so a chain
    follows time about as a one-event-at-a-time consumer would."""
    by_partition: dict[tuple[str, int], list[Pending]] = {}
    for item in pending:
        by_partition.setdefault((item.source.topic, item.source.partition), []).append(item)
    chains: dict[str, list[Pending]] = {}
    for item in heapq.merge(*by_partition.values(), key=lambda p: p.record.columns.occurred_at):
        chains.setdefault(item.record.columns.tenant_id, []).append(item)
    return chains


class _StoringSubscriber(BatchingKafkaSubscriber):
    """What both audit consumers share: the batching subscriber, the Kafka
    record being handled (to dead-letter an event that cannot be stored as
    it came), `transient_retry_s` for outages of the store and `retry`'s
    attempts for an event written alone."""

    def __init__(
        self,
        settings: KafkaSettings,
        registry: Registry,
        *,
        group: str,
        dead_letters: KafkaPublisher,
        retry: RetryPolicy,
        batch_max_events: int,
        batch_max_interval_s: float,
        transient_retry_s: float,
        client_id: str,
        topics: Sequence[str] = (),
        event_types: Sequence[str] = (),
    ) -> None:
        # Turning an event into what is stored (a record, its lineage) is
        # pure: what fails once always fails, so one try, then the DLQ (the
        # base class's rule). `retry` applies to the writes.
        super().__init__(
            settings,
            registry,
            group=group,
            topics=topics,
            event_types=event_types,
            dead_letters=dead_letters,
            batch_max=batch_max_events,
            batch_max_interval_s=batch_max_interval_s,
            client_id=client_id,
        )
        self._append_retry = retry
        self._transient_retry_s = transient_retry_s
        # The record _process is handling, for _collect (the runtime's
        # handler sees the decoded event only).
        self._source: ConsumerRecord[bytes, bytes] | None = None

    async def _process(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self._source = record
        try:
            await super()._process(record)
        finally:
            self._source = None


class AuditSubscriber(_StoringSubscriber):
    """KafkaSubscriber that appends batches to the audit store and commits a
    batch's offsets only once every event of it is stored or dead-lettered."""

    def __init__(
        self,
        settings: KafkaSettings,
        registry: Registry,
        store: AuditStore,
        *,
        group: str,
        topics: Sequence[str],
        dead_letters: KafkaPublisher,
        retry: RetryPolicy,
        batch_max_events: int,
        batch_max_interval_s: float,
        transient_retry_s: float = 60.0,
        client_id: str = "audit",
    ) -> None:
        super().__init__(
            settings,
            registry,
            group=group,
            topics=topics,
            dead_letters=dead_letters,
            retry=retry,
            batch_max_events=batch_max_events,
            batch_max_interval_s=batch_max_interval_s,
            transient_retry_s=transient_retry_s,
            client_id=client_id,
        )
        self._store = store
        self._pending: list[Pending] = []

    async def _collect(self, event: Event) -> None:
        assert self._source is not None
        partition_key = self._registry.route(event.envelope.event_type).partition_key
        self._pending.append(
            Pending(event, new_record(event.envelope, event.payload, partition_key), self._source)
        )

    def _pending_count(self) -> int:
        return len(self._pending)

    async def _flush(self) -> None:
        """Append the pending events, each tenant's in one batch, tenants concurrently."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        by_tenant = by_chain(pending)
        started = time.perf_counter()
        await asyncio.gather(*(self._write_chain(tenant, items) for tenant, items in by_tenant.items()))
        BATCHES.observe(time.perf_counter() - started)

    async def _write_chain(self, tenant: str, items: list[Pending]) -> None:
        try:
            results = await self._with_transient_retry(
                lambda: self._store.append_batch(tenant, [i.record for i in items])
            )
        except Exception as exc:  # any refusal: find the events to blame, one by one
            log.warning(
                "batch of %d events of chain %r not appended, appending one by one: %r",
                len(items),
                tenant,
                exc,
            )
            for item in items:
                await self._write_one(item)
            return
        for appended in results:
            self._count(appended)

    async def _write_one(self, item: Pending) -> None:
        """Append one event with the subscriber's attempts, then dead-letter it."""
        max_attempts = self._append_retry.max_attempts
        error: Exception | None = None
        for number in range(1, max_attempts + 1):
            try:
                appended = await self._with_transient_retry(lambda: self._store.append_record(item.record))
            except Exception as exc:
                error = exc
                log.warning(
                    "appending %s failed (attempt %d/%d): %r",
                    item.event.delivery.describe(), number, max_attempts, exc,
                )  # fmt: skip
                if number < max_attempts:
                    await asyncio.sleep(self._append_retry.backoff(number))
                continue
            self._count(appended)
            return
        EVENTS.labels("dead_lettered").inc()
        await self._dead_letter(
            item.source,
            dict(item.event.headers),
            item.event.delivery,
            DeadLetterReason.HANDLER_FAILED,
            error,
            attempts=max_attempts,
        )

    async def _with_transient_retry(self, call: Callable[[], Awaitable[T]]) -> T:
        return await retry_transient(
            call, within_s=self._transient_retry_s, what="appending to the audit store"
        )

    @staticmethod
    def _count(appended: Appended | None) -> None:
        EVENTS.labels("duplicate" if appended is None else "stored").inc()


LINEAGE_EVENTS = Counter("audit_lineage_events", "Events handled by the lineage consumer.", ["outcome"])


class LineageSubscriber(_StoringSubscriber):
    """The lineage graph's consumer (group ``audit.lineage``): the events of
    :data:`services.audit.domain.lineage.LINEAGE_EVENT_TYPES` become nodes and edges
    (lineage.project), upserted per tenant in batches; offsets are committed
    once a batch is stored.

    A group of its own, not a step of the event store's: a graph backend that
    is down (ArangoDB, say) holds up the lineage only, never the
    tamper-evident store. Idempotent by event id: an event's nodes and edges
    are keyed by the ids it carries, so a redelivered event (or one twice in
    a batch, skipped here) writes the same keys and changes nothing.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        registry: Registry,
        graph: GraphStore,
        *,
        group: str,
        dead_letters: KafkaPublisher,
        retry: RetryPolicy,
        batch_max_events: int,
        batch_max_interval_s: float,
        transient_retry_s: float = 60.0,
        client_id: str = "audit-lineage",
    ) -> None:
        super().__init__(
            settings,
            registry,
            group=group,
            event_types=LINEAGE_EVENT_TYPES,
            dead_letters=dead_letters,
            retry=retry,
            batch_max_events=batch_max_events,
            batch_max_interval_s=batch_max_interval_s,
            transient_retry_s=transient_retry_s,
            client_id=client_id,
        )
        self._graph = graph
        self._pending: dict[str, tuple[Lineage, ConsumerRecord[bytes, bytes], Event]] = {}

    async def _collect(self, event: Event) -> None:
        assert self._source is not None
        lineage = project(event.envelope, event.payload)
        if lineage is None:
            LINEAGE_EVENTS.labels("ignored").inc()
            return
        # By event id: a second delivery within the batch is the same event.
        self._pending.setdefault(event.envelope.event_id, (lineage, self._source, event))

    def _pending_count(self) -> int:
        return len(self._pending)

    async def _flush(self) -> None:
        pending, self._pending = list(self._pending.values()), {}
        by_tenant: dict[str, list[tuple[Lineage, ConsumerRecord[bytes, bytes], Event]]] = {}
        for item in pending:
            by_tenant.setdefault(item[0].tenant, []).append(item)
        await asyncio.gather(*(self._write_tenant(tenant, items) for tenant, items in by_tenant.items()))

    async def _write_tenant(
        self, tenant: str, items: list[tuple[Lineage, ConsumerRecord[bytes, bytes], Event]]
    ) -> None:
        nodes = [n for lineage, _, _ in items for n in lineage.nodes]
        edges = [e for lineage, _, _ in items for e in lineage.edges]
        try:
            await retry_transient(
                lambda: self._graph.upsert(tenant, nodes, edges),
                within_s=self._transient_retry_s,
                what="writing the lineage graph",
            )
        except Exception as exc:  # find the events to blame, one by one
            log.warning("lineage of %d events of %r not stored, one by one: %r", len(items), tenant, exc)
            for item in items:
                await self._write_one(tenant, *item)
            return
        LINEAGE_EVENTS.labels("stored").inc(len(items))

    async def _write_one(
        self, tenant: str, lineage: Lineage, source: ConsumerRecord[bytes, bytes], event: Event
    ) -> None:
        max_attempts = self._append_retry.max_attempts
        error: Exception | None = None
        for number in range(1, max_attempts + 1):
            try:
                await self._graph.upsert(tenant, lineage.nodes, lineage.edges)
            except Exception as exc:
                error = exc
                if number < max_attempts:
                    await asyncio.sleep(self._append_retry.backoff(number))
                continue
            LINEAGE_EVENTS.labels("stored").inc()
            return
        LINEAGE_EVENTS.labels("dead_lettered").inc()
        await self._dead_letter(
            source, dict(event.headers), event.delivery, DeadLetterReason.HANDLER_FAILED, error,
            attempts=max_attempts,
        )  # fmt: skip
