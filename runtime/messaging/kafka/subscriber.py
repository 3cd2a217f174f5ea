"""Kafka subscriber: a consumer group member that hands each event to a
handler and commits offsets only after the handler is done with it
(at-least-once). Failing handlers are retried in process with backoff, then
the message goes to `<topic>.dlq` and consumption goes on.

It heals itself: a broker restart, lost topic metadata or a fetch that keeps
failing leaves it "stalled" (`stalled_reason`); after
`settings.consumer_heal_after_s` it refreshes metadata, recreates missing
topics and replaces its consumer, which rejoins the group and resumes from
the committed offsets. `last_progress_monotonic` and `stalled_reason` are for
health checks; consumer lag per partition goes to a Prometheus gauge."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.protocol.group import LeaveGroupRequest

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
)
from runtime.messaging.consuming import decode, reason_of, retried
from runtime.messaging.deadletter import dead_letter_headers
from runtime.messaging.envelope import EnvelopeError
from runtime.messaging.headers import from_kafka
from runtime.messaging.kafka.admin import dlq_topic, ensure_topics
from runtime.messaging.kafka.publisher import KafkaPublisher
from runtime.messaging.kafka.security import client_security
from runtime.messaging.kafka.telemetry import TRANSPORT as _KAFKA
from runtime.messaging.kafka.telemetry import consume_span, delivery_of, record_lag
from runtime.messaging.telemetry import MessagingMetrics, default_metrics, mark_failed

log = logging.getLogger(__name__)


async def _leave_group(consumer: AIOKafkaConsumer) -> None:
    """Leave the group now, so its partitions go to the others at once.

    aiokafka leaves only from generation 1 on, but tansu numbers generations
    from 0: without this, the group waits a whole session timeout for a member
    that is gone (a heal took 11 s instead of about one)."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or getattr(coordinator, "generation", -1) != 0 or not coordinator.member_id:
        return  # aiokafka leaves on its own (or never joined)
    with contextlib.suppress(Exception):  # best effort, as aiokafka's own attempt
        await asyncio.wait_for(
            coordinator._send_req(LeaveGroupRequest(coordinator.group_id, coordinator.member_id)), 2.0
        )


def _has_coordinator(consumer: AIOKafkaConsumer) -> bool:
    """False while the consumer knows no group coordinator (it lost the broker)."""
    coordinator = getattr(consumer, "_coordinator", None)
    return coordinator is None or getattr(coordinator, "coordinator_id", 0) is not None


def _in_group(consumer: AIOKafkaConsumer) -> bool:
    """True when the consumer joined its group (a member may rightly hold no
    partitions: more members than partitions)."""
    coordinator = getattr(consumer, "_coordinator", None)
    generation = getattr(coordinator, "generation", -1)
    return isinstance(generation, int) and generation >= 0


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
        self._settings = settings
        self._consumer_args: dict[str, Any] = dict(
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
            # Refresh metadata often enough to notice a broker that came back.
            metadata_max_age_ms=settings.consumer_metadata_max_age_ms,
            **client_security(settings),
        )
        self._consumer = self._new_consumer()
        self._task: asyncio.Task[None] | None = None
        # Set by stop(): the loop ends at its next turn and never heals. A
        # cancel alone is not enough: aiokafka's getmany() can swallow it, and
        # a loop that lived on would replace the stopped consumer and keep
        # consuming with its service's publishers closed (a zombie member
        # that applied fills it could no longer announce).
        self._stopping = False
        # Reports as "kafka:<name>" (runtime.health): fetches are progress, errors failures.
        self._health = (health or default_monitor()).register(f"kafka:{self._name}")
        # Health: when it last was known to consume (or to have nothing to
        # consume), why not since, and how often it replaced its consumer.
        self._last_progress = time.monotonic()
        self._stalled_reason: str | None = None
        self._stalled_since: float | None = None
        self._heals = 0
        self._failed_heals = 0
        self._heal_requests: list[asyncio.Future[bool]] = []
        self._next_offsets: dict[TopicPartition, int] = {}

    def _new_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(*self._topics, **self._consumer_args)

    @property
    def last_progress_monotonic(self) -> float:
        """time.monotonic() of the last poll that found the subscriber healthy:
        partitions assigned, its topics known, records fetched or none waiting."""
        return self._last_progress

    @property
    def stalled_reason(self) -> str | None:
        """Why it is not consuming right now (None when healthy)."""
        return self._stalled_reason

    @property
    def heals(self) -> int:
        """How many times it replaced its consumer to recover."""
        return self._heals

    @property
    def name(self) -> str:
        return self._name

    @property
    def topics(self) -> list[str]:
        return list(self._topics)

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            await self._consumer.start()
            self._task = asyncio.create_task(self._run(), name=f"kafka-subscriber-{self._name}")

    async def stop(self) -> None:
        """Stop without committing anything not yet handled: what was in
        flight is delivered again to the group."""
        task, self._task = self._task, None
        self._stopping = True
        self._health.close()
        if task is not None:
            task.cancel()
            # aiokafka's getmany() can sit out a cancel while a fetch request is
            # pending on a slow broker (seen on tansu under load: a test hung for
            # minutes). Give the loop a moment, then stop the consumer, which
            # tears down the fetcher and releases the task.
            await asyncio.wait({task}, timeout=2.0)
            for request in self._heal_requests:
                if not request.done():
                    request.set_result(False)
            self._heal_requests.clear()
            await _leave_group(self._consumer)
            await self._consumer.stop()
            if not task.done():
                await asyncio.wait({task}, timeout=5.0)
            if not task.done():
                log.warning("subscriber %s: its loop did not end within 7 s of stop()", self._name)
            elif not task.cancelled() and task.exception() is not None:
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
        while not self._stopping:
            if self._heal_requests:
                # Healing happens here, between polls: never stop a consumer
                # under a pending getmany (aiokafka can break or hang there).
                healed = await self._replace_consumer()
                requests, self._heal_requests = self._heal_requests, []
                for request in requests:
                    if not request.done():
                        request.set_result(healed)
            try:
                batch = await self._consumer.getmany(timeout_ms=500, max_records=self._max_records)
            except KafkaError as exc:
                log.warning("kafka fetch failed for %s: %s", self._name, exc)
                self._stall(f"fetch failed: {exc!r}")
                self._heal_if_due()
                await asyncio.sleep(0.5)
                continue
            except Exception as exc:
                # Anything else from the client must not end consumption for
                # good: report it, back off, let the heal replace the consumer.
                log.exception("kafka consumer of %s failed", self._name)
                self._stall(f"consumer failed: {exc!r}")
                self._heal_if_due()
                await asyncio.sleep(0.5)
                continue
            for tp, records in batch.items():
                if self._stopping:
                    return  # not handled: delivered again to the group
                for record in records:
                    await self._process(record)
                await self._commit({tp: records[-1].offset + 1})
                self._next_offsets[tp] = records[-1].offset + 1
            self._observe(fetched=bool(batch))
            self._heal_if_due()

    def _observe(self, *, fetched: bool) -> None:
        """Update the health state and the lag gauge after a poll."""
        consumer = self._consumer
        assigned: set[TopicPartition] = consumer.assignment()
        cluster = consumer._client.cluster  # aiokafka has no public view of its metadata
        unknown = [t for t in self._topics if not cluster.partitions_for_topic(t)]
        behind = False
        past_end: list[str] = []
        for tp in assigned:
            high = consumer.highwater(tp)
            position = self._next_offsets.get(tp)
            if high is None or position is None:
                continue
            if position > high:
                # The log is shorter than what was consumed: the broker lost
                # data (a restart on memory storage). Fetching there waits
                # for offsets that were already handed out once.
                past_end.append(f"{tp.topic}[{tp.partition}] at {position} > end {high}")
                continue
            lag = high - position
            behind |= lag > 0
            record_lag(self._metrics, self._name, tp, lag)
        if past_end:
            self._stall(f"consumed past the end of the log (broker lost data?): {', '.join(past_end)}")
        elif unknown:
            self._stall(f"topics unknown to the broker: {', '.join(unknown)}")
        elif not _has_coordinator(consumer):
            self._stall("group coordinator unavailable (broker unreachable or restarting)")
        elif not assigned and not _in_group(consumer):
            self._stall("no partitions assigned (not in the group)")
        elif behind and not fetched and self._stalled_since is not None:
            # Records wait but none came: keep the stall that began before.
            pass
        elif behind and not fetched:
            self._stall("records wait but none were fetched")
        else:
            self._healthy()

    def _stall(self, reason: str) -> None:
        if self._stalled_reason is None:
            # Info: a group join or a broker restart stalls briefly; a stall
            # that lasts is logged as a warning when it is healed.
            log.info("subscriber %s stalled: %s", self._name, reason)
        self._stalled_reason = reason
        if self._stalled_since is None:
            self._stalled_since = time.monotonic()
        self._health.failing(reason)

    def _healthy(self) -> None:
        if self._stalled_reason is not None:
            log.info("subscriber %s consumes again (was: %s)", self._name, self._stalled_reason)
        self._stalled_reason = None
        self._stalled_since = None
        self._failed_heals = 0
        self._last_progress = time.monotonic()
        self._health.progress()

    def _heal_if_due(self) -> None:
        since = self._stalled_since
        # Back off when healing did not help (a broker still away, a slow group join).
        wait = self._settings.consumer_heal_after_s * min(2**self._failed_heals, 6)
        if since is None or time.monotonic() - since < wait or self._heal_requests or self._stopping:
            return
        log.warning(
            "subscriber %s stalled for %.1fs (%s): recreating its topics if missing and its consumer",
            self._name, time.monotonic() - since, self._stalled_reason,
        )  # fmt: skip
        self._failed_heals += 1
        # The stall clock restarts: the next heal comes after another full wait.
        self._stalled_since = time.monotonic()
        self._heal_requests.append(asyncio.get_running_loop().create_future())

    async def heal(self) -> bool:
        """Recreate missing topics (with their dead-letter topics) and replace
        the consumer with a fresh one: new metadata, a new group membership,
        consumption resumed at the committed offsets (earliest where none or
        out of range). Done on its own after a stall; a watchdog may call it
        too. Returns once done (within a poll, ~0.5 s, plus the work); False
        when the broker could not be reached (it is tried again later)."""
        if self._task is None or self._task.done():
            raise RuntimeError(f"subscriber {self._name} is not running")
        request: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._heal_requests.append(request)
        return await request

    async def _replace_consumer(self) -> bool:
        if self._stopping:
            return False
        self._heals += 1
        try:
            # Lost metadata (a broker that forgot its topics): create them
            # again. Idempotent: existing topics are left alone.
            await ensure_topics(self._settings, [*self._topics, *(dlq_topic(t) for t in self._topics)])
        except (KafkaError, OSError) as exc:
            log.warning("subscriber %s: ensuring topics failed: %s", self._name, exc)
            return False
        old, self._consumer = self._consumer, self._new_consumer()
        await _leave_group(old)
        with contextlib.suppress(Exception):
            # Stopping may hang on a broker that went away: bounded.
            await asyncio.wait_for(old.stop(), 5.0)
        self._next_offsets.clear()
        try:
            # start() returns once the group assigned partitions; a join that
            # takes longer goes on in the background (getmany drives it).
            await asyncio.wait_for(self._consumer.start(), 30.0)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("subscriber %s: restarting its consumer failed: %s", self._name, exc)
            return False
        if self._stopping:
            # stop() ran meanwhile and stopped the consumer it saw, not this one.
            await _leave_group(self._consumer)
            await self._consumer.stop()
            return False
        log.info("subscriber %s: consumer replaced, rejoining group %s", self._name, self._group)
        return True

    async def _commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit these next-to-read offsets in one request."""
        try:
            await self._consumer.commit(dict(offsets))
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took the partition away: its new owner starts from
            # the last commit, so these records are delivered again.
            log.warning("commit of %s failed for %s: %s", dict(offsets), self._name, exc)

    async def _process(self, record: ConsumerRecord[bytes, bytes]) -> None:
        headers = from_kafka(record.headers)
        delivery = delivery_of(record)
        with consume_span(record, self._name, headers) as span:
            try:
                envelope, payload = decode(record.value or b"", self._registry)
            except EnvelopeError as exc:
                reason = reason_of(exc)
                mark_failed(span, reason.value, exc)
                await self._dead_letter(record, headers, delivery, reason, exc, attempts=0)
                return
            if self._types is not None and envelope.event_type not in self._types:
                return
            error = await retried(
                self._handler,
                Event(envelope, payload, headers, delivery),
                retry=self._retry,
                transport=_KAFKA,
                consumer=self._name,
                metrics=self._metrics,
                # Stopped between attempts: leave the record uncommitted for
                # the group's next member instead of dead-lettering it.
                stopping=lambda: self._stopping,
            )
            if error is None:
                return
            mark_failed(span, DeadLetterReason.HANDLER_FAILED.value, error)
            await self._dead_letter(
                record,
                headers,
                delivery,
                DeadLetterReason.HANDLER_FAILED,
                error,
                attempts=self._retry.max_attempts,
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
                await self._dlq.publish_raw(
                    dlq_topic(record.topic), record.value or b"", headers=dlq_headers, key=record.key
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
