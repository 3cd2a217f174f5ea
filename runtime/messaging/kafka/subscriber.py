"""Kafka subscriber: a consumer group member that hands each event to a
handler and commits offsets only after the handler is done with it
(at-least-once). Failing handlers are retried in process with backoff, then
the message goes to `<topic>.dlq` and consumption goes on."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from types import TracebackType

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from runtime.config import KafkaSettings
from runtime.health import HealthMonitor, default_monitor
from runtime.messaging import headers as h
from runtime.messaging.base import (
    DeadLetterReason,
    Delivery,
    Event,
    Handler,
    Registry,
    RetryPolicy,
    Transport,
)
from runtime.messaging.consuming import attempt, decode, reason_of
from runtime.messaging.deadletter import dead_letter_headers
from runtime.messaging.envelope import EnvelopeError
from runtime.messaging.headers import from_kafka, to_kafka
from runtime.messaging.kafka.admin import dlq_topic
from runtime.messaging.kafka.liveness import fetch_trouble
from runtime.messaging.kafka.publisher import KafkaPublisher
from runtime.messaging.kafka.security import client_security
from runtime.messaging.telemetry import MessagingMetrics, default_metrics, mark_failed, process_span

log = logging.getLogger(__name__)

_KAFKA = Transport.KAFKA.value


class KafkaSubscriber:
    """Consumes `topics` (or the topics of `event_types`) as member of `group`.

    `topic_prefix` is prepended to every topic (as on the publisher). With
    `event_types`, other event types on the same topics are skipped (and
    committed). Dead letters are written through `dead_letters`, a started
    publisher (usually the service's own)."""

    def __init__(
        self,
        settings: KafkaSettings,
        registry: Registry,
        handler: Handler,
        *,
        group: str,
        dead_letters: KafkaPublisher,
        topics: Sequence[str] = (),
        event_types: Sequence[str] = (),
        topic_prefix: str = "",
        retry: RetryPolicy | None = None,
        name: str | None = None,
        auto_offset_reset: str = "earliest",
        max_records: int = 500,
        client_id: str = "trading",
        metrics: MessagingMetrics | None = None,
        health: HealthMonitor | None = None,
    ) -> None:
        wanted = {topic_prefix + t for t in topics}
        for event_type in event_types:
            topic = registry.route(event_type).kafka_topic
            if not topic:
                raise ValueError(f"{event_type} is not published on Kafka")
            wanted.add(topic_prefix + topic)
        if not wanted:
            raise ValueError("subscribe to at least one topic or event type")
        self._topics = sorted(wanted)
        self._types = frozenset(event_types) or None
        self._registry = registry
        self._handler = handler
        self._group = group
        self._name = name or group
        self._dlq = dead_letters
        self._retry = retry or RetryPolicy()
        self._max_records = max_records
        self._metrics = metrics or default_metrics()
        self._consumer = AIOKafkaConsumer(
            *self._topics,
            bootstrap_servers=settings.servers,
            client_id=client_id,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            # tansu joins groups slowly with Kafka's defaults: short timings.
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            rebalance_timeout_ms=settings.rebalance_timeout_ms,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            **client_security(settings),
        )
        self._task: asyncio.Task[None] | None = None
        # Reports as "kafka:<name>" (runtime.health): fetches are progress, errors failures.
        self._health = (health or default_monitor()).register(f"kafka:{self._name}")

    @property
    def name(self) -> str:
        return self._name

    @property
    def topics(self) -> list[str]:
        return list(self._topics)

    async def start(self) -> None:
        if self._task is None:
            await self._consumer.start()
            self._task = asyncio.create_task(self._run(), name=f"kafka-subscriber-{self._name}")

    async def stop(self) -> None:
        """Stop without committing anything not yet handled: what was in
        flight is delivered again to the group."""
        task, self._task = self._task, None
        self._health.close()
        if task is not None:
            task.cancel()
            # aiokafka's getmany() can sit out a cancel while a fetch request is
            # pending on a slow broker (seen on tansu under load: a test hung for
            # minutes). Give the loop a moment, then stop the consumer, which
            # tears down the fetcher and releases the task.
            await asyncio.wait({task}, timeout=2.0)
            await self._consumer.stop()
            if not task.done():
                await asyncio.wait({task}, timeout=5.0)
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.warning("subscriber %s ended with %r", self._name, task.exception())

    async def __aenter__(self) -> KafkaSubscriber:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def wait_assigned(self, timeout: float = 15.0) -> set[TopicPartition]:
        """Wait until the group gave this member partitions (tests, start-up)."""
        async with asyncio.timeout(timeout):
            # aiokafka offers no assignment event short of a rebalance listener.
            while not self._consumer.assignment():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assigned: set[TopicPartition] = self._consumer.assignment()
        return assigned

    async def _run(self) -> None:
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=500, max_records=self._max_records)
            except KafkaError as exc:
                log.warning("kafka fetch failed for %s: %s", self._name, exc)
                self._health.failing(f"fetch: {exc!r}")
                await asyncio.sleep(0.5)
                continue
            # An empty poll is idleness only while the broker answers fetches.
            trouble = None if batch else fetch_trouble(self._consumer)
            if trouble is None:
                self._health.progress()
            else:
                self._health.failing(trouble)
            for tp, records in batch.items():
                for record in records:
                    await self._process(record)
                await self._commit(tp, records[-1].offset + 1)
                self._record_lag(tp, records[-1].offset + 1)

    def _record_lag(self, tp: TopicPartition, position: int) -> None:
        highwater = self._consumer.highwater(tp)  # as of the fetch that returned these records
        if highwater is not None:
            self._metrics.lag(_KAFKA, self._name, f"{tp.topic}/{tp.partition}", max(0, highwater - position))

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        try:
            await self._consumer.commit({tp: offset})
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took the partition away: its new owner starts from
            # the last commit, so these records are delivered again.
            log.warning("commit of %s@%d failed for %s: %s", tp, offset, self._name, exc)

    async def _process(self, record: ConsumerRecord[bytes, bytes]) -> None:
        headers = from_kafka(record.headers)
        delivery = Delivery(Transport.KAFKA, record.topic, record.partition, record.offset)
        with process_span(_KAFKA, record.topic, self._name, headers, headers.get(h.EVENT_ID, "")) as span:
            try:
                envelope, payload = decode(record.value or b"", self._registry)
            except EnvelopeError as exc:
                reason = reason_of(exc)
                mark_failed(span, reason.value, exc)
                await self._dead_letter(record, headers, delivery, reason, exc, attempts=0)
                return
            if self._types is not None and envelope.event_type not in self._types:
                return
            event = Event(envelope, payload, headers, delivery)
            max_attempts = self._retry.max_attempts
            for number in range(1, max_attempts + 1):
                if number > 1:
                    event = dataclasses.replace(event, attempt=number)
                error = await attempt(
                    self._handler, event, transport=_KAFKA, consumer=self._name, metrics=self._metrics
                )
                if error is None:
                    return
                log.warning(
                    "handler %s failed on %s (attempt %d/%d): %r",
                    self._name, delivery.describe(), number, max_attempts, error,
                )  # fmt: skip
                if number < max_attempts:
                    await asyncio.sleep(self._retry.backoff(number))
            mark_failed(span, DeadLetterReason.HANDLER_FAILED.value, error)
            await self._dead_letter(
                record, headers, delivery, DeadLetterReason.HANDLER_FAILED, error, attempts=max_attempts
            )

    async def _dead_letter(
        self,
        record: ConsumerRecord[bytes, bytes],
        headers: dict[str, str],
        delivery: Delivery,
        reason: DeadLetterReason,
        error: BaseException | None,
        *,
        attempts: int,
    ) -> None:
        """Write the original record to `<topic>.dlq`; retried until the broker
        takes it, because committing past a lost message would drop it."""
        dlq_headers = dead_letter_headers(
            headers,
            reason=reason,
            error=error if error is not None else reason.value,
            attempts=attempts,
            source=delivery.describe(),
            consumer=self._name,
        )
        while True:
            try:
                await self._dlq.send_raw(
                    dlq_topic(record.topic),
                    record.value or b"",
                    key=record.key,
                    headers=to_kafka(dlq_headers),
                )
                break
            except KafkaError as exc:
                log.error("dead-lettering %s failed, retrying: %s", delivery.describe(), exc)
                self._health.failing(f"dead-lettering {delivery.describe()}: {exc!r}")
                await asyncio.sleep(1.0)
        self._metrics.dead_lettered(_KAFKA, self._name, reason.value)
        log.error(
            "dead-lettered %s from %s (%s, %d attempts): %s",
            headers.get(h.EVENT_ID, "?"), delivery.describe(), reason.value, attempts, error,
        )  # fmt: skip
