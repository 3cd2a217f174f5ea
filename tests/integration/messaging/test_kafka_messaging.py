"""Kafka messaging against a real tansu broker: round trip with headers and
trace context, redelivery after a crash, dead letters, re-drive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from trading.common.v1 import event_pb2
from trading.marketdata.v1 import events_pb2 as md_events

from runtime.config import KafkaSettings
from runtime.contracts import EventRegistry
from runtime.messaging import Event, RetryPolicy
from runtime.messaging import headers as h
from runtime.messaging.kafka import KafkaDeadLetters, KafkaPublisher, KafkaSubscriber, dlq_topic
from runtime.messaging.kafka.batching import BatchingKafkaSubscriber
from runtime.messaging.kafka.testing import consuming
from runtime.messaging.testing import EventCollector, wait_dead_letters
from tests.support.polling import eventually

TickFactory = Callable[..., tuple[event_pb2.EventEnvelope, md_events.Tick]]
TICK = "trading.marketdata.v1.Tick"
FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05, jitter_s=0.01)


@asynccontextmanager
async def subscriber(
    settings: KafkaSettings,
    registry: EventRegistry,
    publisher: KafkaPublisher,
    handler: Callable[[Event], object],
    *,
    group: str,
    prefix: str,
    retry: RetryPolicy = FAST_RETRY,
) -> AsyncIterator[KafkaSubscriber]:
    sub = KafkaSubscriber(
        settings,
        registry,
        handler,  # type: ignore[arg-type]
        group=group,
        dead_letters=publisher,
        event_types=[TICK],
        topic_prefix=prefix,
        retry=retry,
    )
    async with consuming(sub):
        yield sub


async def test_published_envelope_arrives_with_payload_headers_and_trace(
    kafka_settings: KafkaSettings,
    registry: EventRegistry,
    kafka_publisher: KafkaPublisher,
    tick_event: TickFactory,
    sdk_tracer: TracerProvider,
    ns: str,
) -> None:
    collector = EventCollector()
    seen_trace_ids: list[int] = []

    async def handler(event: Event) -> None:
        seen_trace_ids.append(trace.get_current_span().get_span_context().trace_id)
        await collector(event)

    envelope, tick = tick_event(f"K{ns[:8].upper()}")
    async with subscriber(
        kafka_settings, registry, kafka_publisher, handler, group=f"g{ns}", prefix=f"t{ns}."
    ):
        with sdk_tracer.get_tracer("test").start_as_current_span("root") as root:
            await kafka_publisher.publish(envelope, payload=tick)
        event = await collector.next(15)

    root_trace = root.get_span_context().trace_id
    assert event.envelope == envelope
    assert event.payload == tick
    assert isinstance(event.payload, md_events.Tick)
    assert event.delivery.destination == f"t{ns}.trading.marketdata.ticks"
    assert event.headers[h.EVENT_ID] == envelope.event_id
    assert event.headers[h.EVENT_TYPE] == TICK
    assert event.headers[h.CORRELATION_ID] == envelope.correlation_id
    assert event.headers[h.SCHEMA_VERSION] == "1"
    assert event.headers[h.CONTENT_TYPE] == "application/x-protobuf"
    assert event.headers[h.TRACEPARENT].split("-")[1] == f"{root_trace:032x}"
    # The handler ran inside the producer's trace.
    assert seen_trace_ids == [root_trace]


async def test_message_comes_again_when_consumer_dies_before_commit(
    kafka_settings: KafkaSettings,
    registry: EventRegistry,
    kafka_publisher: KafkaPublisher,
    tick_event: TickFactory,
    ns: str,
) -> None:
    received = asyncio.Event()

    async def hang(event: Event) -> None:
        received.set()
        await asyncio.Event().wait()  # never returns: the consumer dies mid-handling

    envelope, tick = tick_event(f"K{ns[:8].upper()}")
    group, prefix = f"g{ns}", f"t{ns}."
    async with subscriber(kafka_settings, registry, kafka_publisher, hang, group=group, prefix=prefix):
        await kafka_publisher.publish(envelope, payload=tick)
        async with asyncio.timeout(15):
            await received.wait()
    # The first consumer is gone without committing; a new member of the group gets the event.
    collector = EventCollector()
    async with subscriber(kafka_settings, registry, kafka_publisher, collector, group=group, prefix=prefix):
        event = await collector.next(20)
    assert event.envelope.event_id == envelope.event_id
    assert event.payload == tick


async def test_undecodable_message_is_dead_lettered_and_consumer_goes_on(
    kafka_settings: KafkaSettings,
    registry: EventRegistry,
    kafka_publisher: KafkaPublisher,
    tick_event: TickFactory,
    ns: str,
) -> None:
    topic = f"t{ns}.trading.marketdata.ticks"
    symbol = f"K{ns[:8].upper()}"
    garbage = b"\xff\x00 definitely not an envelope"
    # Same key as the good event: same partition, so order is fixed.
    await kafka_publisher.publish_raw(topic, garbage, headers={"x-origin": "test"}, key=symbol.encode())
    envelope, tick = tick_event(symbol)
    await kafka_publisher.publish(envelope, payload=tick)

    collector = EventCollector()
    async with subscriber(
        kafka_settings, registry, kafka_publisher, collector, group=f"g{ns}", prefix=f"t{ns}."
    ):
        event = await collector.next(15)
        assert event.envelope.event_id == envelope.event_id

    letters = await wait_dead_letters(KafkaDeadLetters(kafka_publisher, topics=[topic]), f"g{ns}", 1)
    assert len(letters) == 1
    letter = letters[0]
    assert letter.reason == "undecodable"
    assert letter.attempts == 0
    assert letter.value == garbage
    assert letter.key == symbol.encode()
    assert letter.headers == {"x-origin": "test"}
    assert letter.consumer == f"g{ns}"
    assert letter.error
    assert letter.failed_at
    source_topic, partition, offset = letter.source.rsplit("/", 2)
    assert source_topic == topic
    assert int(partition) == event.delivery.partition
    assert int(offset) == event.delivery.position - 1
    assert letter.id.startswith(dlq_topic(topic) + "/")


async def test_failing_handler_is_dead_lettered_after_n_attempts_then_redriven(
    kafka_settings: KafkaSettings,
    registry: EventRegistry,
    kafka_publisher: KafkaPublisher,
    tick_event: TickFactory,
    ns: str,
) -> None:
    topic = f"t{ns}.trading.marketdata.ticks"
    symbol = f"K{ns[:8].upper()}"
    bad, bad_tick = tick_event(symbol, 1)
    good, good_tick = tick_event(symbol, 2)
    attempts: list[int] = []
    failing = {bad.event_id}

    async def fail_bad(event: Event) -> None:
        if event.envelope.event_id in failing:
            attempts.append(event.attempt)
            raise RuntimeError("handler broke\non two lines")

    collector = EventCollector(fail=fail_bad)
    async with subscriber(
        kafka_settings, registry, kafka_publisher, collector, group=f"g{ns}", prefix=f"t{ns}."
    ):
        await kafka_publisher.publish(bad, payload=bad_tick)
        await kafka_publisher.publish(good, payload=good_tick)
        # The consumer keeps going after dead-lettering: the next event is handled.
        assert (await collector.next(15)).envelope.event_id == good.event_id
        assert attempts == [1, 2, 3]

        dead = KafkaDeadLetters(kafka_publisher, topics=[topic])
        letters = await wait_dead_letters(dead, f"g{ns}", 1)
        assert len(letters) == 1
        letter = letters[0]
        assert letter.reason == "handler_failed"
        assert letter.attempts == 3
        assert letter.error == "RuntimeError: handler broke on two lines"
        assert letter.value == bad.SerializeToString()
        assert letter.headers[h.EVENT_ID] == bad.event_id
        assert (await dead.get(letter.id)).value == letter.value

        # Fixed: re-drive puts the original record back on its topic and partition.
        failing.clear()
        landed = await dead.redrive(letter.id)
        again = await collector.next(15)
    assert (landed.destination, landed.partition) == (topic, int(letter.source.split("/")[-2]))
    assert landed.position == again.delivery.position
    assert again.envelope == bad
    assert again.headers[h.EVENT_ID] == bad.event_id
    assert not any(k.startswith("x-dlq-") for k in again.headers)
    assert await dead.list("someone-else") == []
    assert [d.id for d in await dead.list()] == [letter.id]


@pytest.mark.parametrize("compression", ["lz4", "gzip", None])
async def test_compression_codecs_round_trip(
    kafka_settings: KafkaSettings,
    registry: EventRegistry,
    tick_event: TickFactory,
    ns: str,
    compression: str | None,
) -> None:
    collector = EventCollector()
    async with KafkaPublisher(
        kafka_settings, registry, topic_prefix=f"t{ns}.", compression_type=compression
    ) as publisher:
        envelope, _ = tick_event(f"K{ns[:8].upper()}")
        await publisher.publish(envelope)  # key derived by unpacking the payload
        async with subscriber(
            kafka_settings, registry, publisher, collector, group=f"g{ns}", prefix=f"t{ns}."
        ):
            event = await collector.next(15)
    assert event.envelope == envelope


class _Recorded(BatchingKafkaSubscriber):
    """A batch sink that remembers the event ids it wrote."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending: list[str] = []
        self.written: list[str] = []

    async def _collect(self, event: Event) -> None:
        self.pending.append(event.envelope.event_id)

    def _pending_count(self) -> int:
        return len(self.pending)

    async def _flush(self) -> None:
        self.written += self.pending
        self.pending = []


async def _committed_total(settings: KafkaSettings, group: str, topic: str) -> int:
    """The group's committed offsets on `topic`, summed over its partitions (read by an idle member)."""
    reader = AIOKafkaConsumer(bootstrap_servers=settings.servers, group_id=group, enable_auto_commit=False)
    await reader.start()
    try:
        partitions = reader.partitions_for_topic(topic) or set()
        offsets = [await reader.committed(TopicPartition(topic, p)) for p in partitions]
    finally:
        await reader.stop()
    return sum(o for o in offsets if o is not None and o > 0)


@pytest.mark.parametrize("commit_interval_s", [0.0, 3600.0])
async def test_a_batch_sink_commits_what_it_wrote_at_most_once_per_commit_interval(
    kafka_settings: KafkaSettings,
    registry: EventRegistry,
    kafka_publisher: KafkaPublisher,
    tick_event: TickFactory,
    ns: str,
    commit_interval_s: float,
) -> None:
    """Every written batch is committed, but not sooner than commit_interval_s
    after the last commit: each commit is a broker write per partition."""
    ticks = [tick_event(f"K{ns[:8].upper()}", sequence) for sequence in range(1, 6)]
    group, topic = f"g{ns}", kafka_publisher.destination_of(*ticks[0])
    sink = _Recorded(
        kafka_settings, registry, group=group, dead_letters=kafka_publisher, batch_max=1,
        batch_max_interval_s=0.05, commit_interval_s=commit_interval_s,
        topics=[topic],
    )  # fmt: skip
    async with consuming(sink):
        for envelope, tick in ticks:
            await kafka_publisher.publish(envelope, payload=tick)
        await eventually(lambda: _true(len(sink.written) == 5), 20.0, "five batches written")
        if commit_interval_s == 0:
            committed = lambda: _equal(_committed_total(kafka_settings, group, topic), 5)  # noqa: E731
            await eventually(committed, 10.0, "their offsets committed")
        else:
            await asyncio.sleep(1.0)  # several rounds of the sink's loop: none may commit
            assert await _committed_total(kafka_settings, group, topic) == 0
    assert sink.written == [envelope.event_id for envelope, _ in ticks]


async def _true(value: bool) -> bool:
    return value


async def _equal(value: Awaitable[int], expected: int) -> bool:
    return await value == expected
