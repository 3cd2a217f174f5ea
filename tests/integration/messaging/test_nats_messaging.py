"""NATS messaging against the real shared server (JetStream and core), in
stream and subject namespaces unique to each test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from nats.aio.client import Client as NatsClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from trading.common.v1 import event_pb2
from trading.marketdata.v1 import events_pb2 as md_events

from runtime.contracts import EventRegistry
from runtime.messaging import Event, RetryPolicy
from runtime.messaging import headers as h
from runtime.messaging.nats import (
    JetStreamSubscriber,
    NatsDeadLetters,
    NatsPublisher,
    NatsSubscriber,
    StreamSpec,
    dlq_stream_spec,
    ensure_streams,
    platform_streams,
)
from runtime.messaging.nats.testing import consuming
from runtime.messaging.testing import EventCollector, wait_dead_letters

TickFactory = Callable[..., tuple[event_pb2.EventEnvelope, md_events.Tick]]
TICK = "trading.marketdata.v1.Tick"
FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05, jitter_s=0.01)


@dataclass
class Space:
    """One test's namespace on the shared server."""

    prefix: str  # subject prefix
    ticks_stream: str
    dlq_stream: str
    symbol: str

    @property
    def dlq_subjects(self) -> str:
        return f"{self.prefix}dlq."


async def make_space(nc: NatsClient, ns: str, created: list[str]) -> Space:
    space = Space(f"t{ns}.", f"T{ns}_TICKS", f"T{ns}_DLQ", f"N{ns[:8].upper()}")
    specs = [
        StreamSpec(space.ticks_stream, (f"{space.prefix}marketdata.ticks.*",), max_age_s=600),
        dlq_stream_spec(stream_prefix=f"T{ns}_", subject_prefix=space.prefix),
    ]
    created.extend(s.name for s in specs)
    await ensure_streams(nc.jetstream(), specs)
    return space


def dead_letters(nc: NatsClient, registry: EventRegistry, space: Space) -> NatsDeadLetters:
    return NatsDeadLetters(
        NatsPublisher(nc, registry), stream=space.dlq_stream, subject_prefix=space.dlq_subjects
    )


def publisher(nc: NatsClient, registry: EventRegistry, space: Space) -> NatsPublisher:
    # Ticks use core NATS by default (Kafka is their durable record); these
    # tests route them through JetStream to exercise the durable path.
    return NatsPublisher(nc, registry, subject_prefix=space.prefix, jetstream_event_types={TICK})


@asynccontextmanager
async def durable_subscriber(
    nc: NatsClient,
    registry: EventRegistry,
    space: Space,
    handler: Callable[[Event], object],
    *,
    durable: str = "c1",
    ack_wait_s: float = 30.0,
) -> AsyncIterator[JetStreamSubscriber]:
    sub = JetStreamSubscriber(
        nc,
        registry,
        handler,  # type: ignore[arg-type]
        event_types=[TICK],
        durable=durable,
        stream=space.ticks_stream,
        subject_prefix=space.prefix,
        dlq_stream=space.dlq_stream,
        retry=FAST_RETRY,
        ack_wait_s=ack_wait_s,
    )
    async with consuming(sub):
        yield sub


async def test_jetstream_round_trip_keeps_payload_headers_and_trace(
    nats_client: NatsClient,
    nats_streams: list[str],
    registry: EventRegistry,
    tick_event: TickFactory,
    sdk_tracer: TracerProvider,
    ns: str,
) -> None:
    space = await make_space(nats_client, ns, nats_streams)
    collector = EventCollector()
    seen_trace_ids: list[int] = []

    async def handler(event: Event) -> None:
        seen_trace_ids.append(trace.get_current_span().get_span_context().trace_id)
        await collector(event)

    envelope, tick = tick_event(space.symbol)
    async with durable_subscriber(nats_client, registry, space, handler):
        with sdk_tracer.get_tracer("test").start_as_current_span("root") as root:
            await publisher(nats_client, registry, space).publish(envelope, payload=tick)
        event = await collector.next(10)

    root_trace = root.get_span_context().trace_id
    assert event.envelope == envelope
    assert event.payload == tick
    assert event.delivery.destination == f"{space.prefix}marketdata.ticks.{space.symbol}"
    assert event.delivery.stream == space.ticks_stream
    assert event.attempt == 1
    assert event.headers[h.EVENT_ID] == envelope.event_id
    assert event.headers[h.EVENT_TYPE] == TICK
    assert event.headers[h.CORRELATION_ID] == envelope.correlation_id
    assert event.headers[h.SCHEMA_VERSION] == "1"
    assert event.headers[h.CONTENT_TYPE] == "application/x-protobuf"
    assert event.headers[h.NATS_MSG_ID] == envelope.event_id
    assert event.headers[h.TRACEPARENT].split("-")[1] == f"{root_trace:032x}"
    assert seen_trace_ids == [root_trace]


async def test_jetstream_deduplicates_a_republished_event(
    nats_client: NatsClient,
    nats_streams: list[str],
    registry: EventRegistry,
    tick_event: TickFactory,
    ns: str,
) -> None:
    space = await make_space(nats_client, ns, nats_streams)
    envelope, tick = tick_event(space.symbol)
    pub = publisher(nats_client, registry, space)
    await pub.publish(envelope, payload=tick)
    await pub.publish(envelope, payload=tick)  # a producer retry
    info = await nats_client.jetstream().stream_info(space.ticks_stream)
    assert info.state.messages == 1


async def test_core_fan_out_round_trip(
    nats_client: NatsClient, registry: EventRegistry, tick_event: TickFactory, ns: str
) -> None:
    prefix = f"t{ns}."
    pub = NatsPublisher(nats_client, registry, subject_prefix=prefix)
    assert not pub.is_durable(TICK)  # ticks fan out over core NATS by default
    first, second = EventCollector(), EventCollector()
    subs = [
        NatsSubscriber(nats_client, registry, c, event_types=[TICK], subject_prefix=prefix, name=f"fan{i}")
        for i, c in enumerate((first, second))
    ]
    for sub in subs:
        await sub.start()
    try:
        envelope, tick = tick_event(f"C{ns[:8].upper()}")
        await pub.publish(envelope, payload=tick)
        a, b = await first.next(5), await second.next(5)
    finally:
        for sub in subs:
            await sub.stop()
    assert a.envelope == b.envelope == envelope
    assert a.payload == tick
    assert a.delivery.stream == ""


async def test_message_comes_again_when_consumer_dies_before_ack(
    nats_client: NatsClient,
    nats_streams: list[str],
    registry: EventRegistry,
    tick_event: TickFactory,
    ns: str,
) -> None:
    space = await make_space(nats_client, ns, nats_streams)
    received = asyncio.Event()

    async def hang(event: Event) -> None:
        received.set()
        await asyncio.Event().wait()  # never returns: the consumer dies mid-handling

    envelope, tick = tick_event(space.symbol)
    async with durable_subscriber(nats_client, registry, space, hang, ack_wait_s=1.0):
        await publisher(nats_client, registry, space).publish(envelope, payload=tick)
        async with asyncio.timeout(10):
            await received.wait()
    collector = EventCollector()
    async with durable_subscriber(nats_client, registry, space, collector, ack_wait_s=1.0):
        event = await collector.next(10)
        assert await collector.nothing_for(1.5)  # acked now: not delivered a third time
    # The unacked message comes again to the durable's next subscriber. (Its
    # delivery count is usually 2, 3 when the dead consumer's still-open pull
    # request took delivery 2; one run under load reported 1, not yet
    # explained, so the count is not asserted here.)
    assert event.envelope.event_id == envelope.event_id


async def test_undecodable_message_is_dead_lettered_and_consumer_goes_on(
    nats_client: NatsClient,
    nats_streams: list[str],
    registry: EventRegistry,
    tick_event: TickFactory,
    ns: str,
) -> None:
    space = await make_space(nats_client, ns, nats_streams)
    subject = f"{space.prefix}marketdata.ticks.{space.symbol}"
    garbage = b"\xff\x00 definitely not an envelope"
    js = nats_client.jetstream()
    bad_ack = await js.publish(subject, garbage, headers={"x-origin": "test"})
    envelope, tick = tick_event(space.symbol)
    await publisher(nats_client, registry, space).publish(envelope, payload=tick)

    collector = EventCollector()
    async with durable_subscriber(nats_client, registry, space, collector):
        assert (await collector.next(10)).envelope.event_id == envelope.event_id

    letters = await wait_dead_letters(dead_letters(nats_client, registry, space), "c1", 1)
    assert len(letters) == 1
    letter = letters[0]
    assert letter.reason == "undecodable"
    assert letter.attempts == 0
    assert letter.value == garbage
    assert letter.headers["x-origin"] == "test"
    assert letter.consumer == "c1"
    assert letter.source == f"{space.ticks_stream}/{subject}/{bad_ack.seq}"
    assert letter.error and letter.failed_at
    # The bad message was terminated, not left to be redelivered.
    info = await js.consumer_info(space.ticks_stream, "c1")
    assert info.num_ack_pending == 0


async def test_failing_handler_is_dead_lettered_after_n_attempts_then_redriven(
    nats_client: NatsClient,
    nats_streams: list[str],
    registry: EventRegistry,
    tick_event: TickFactory,
    ns: str,
) -> None:
    space = await make_space(nats_client, ns, nats_streams)
    bad, bad_tick = tick_event(space.symbol, 1)
    good, good_tick = tick_event(space.symbol, 2)
    attempts: list[int] = []
    failing = {bad.event_id}

    async def fail_bad(event: Event) -> None:
        if event.envelope.event_id in failing:
            attempts.append(event.attempt)
            raise RuntimeError("handler broke")

    collector = EventCollector(fail=fail_bad)
    dead = dead_letters(nats_client, registry, space)
    pub = publisher(nats_client, registry, space)
    async with durable_subscriber(nats_client, registry, space, collector):
        await pub.publish(bad, payload=bad_tick)
        await pub.publish(good, payload=good_tick)
        # Retries are nak'ed redeliveries; the good event is handled meanwhile.
        assert (await collector.next(10)).envelope.event_id == good.event_id
        letters = await wait_dead_letters(dead, "c1", 1)
        assert attempts == [1, 2, 3]
        letter = letters[0]
        assert letter.reason == "handler_failed"
        assert letter.attempts == 3
        assert letter.error == "RuntimeError: handler broke"
        assert letter.value == bad.SerializeToString()
        assert letter.headers[h.EVENT_ID] == bad.event_id
        assert (await dead.get(letter.id)).value == letter.value

        failing.clear()
        landed = await dead.redrive(letter)
        await dead.delete(letter)
        again = await collector.next(10)
    assert (landed.stream, landed.destination) == (space.ticks_stream, again.delivery.destination)
    assert again.envelope == bad
    assert again.delivery.position == landed.position
    assert not any(k.startswith("x-dlq-") for k in again.headers)
    assert await dead.list("c1") == []  # deleted after the re-drive


async def test_platform_streams_are_declared_idempotently(
    nats_client: NatsClient, nats_streams: list[str], registry: EventRegistry, ns: str
) -> None:
    specs = platform_streams(registry, stream_prefix=f"T{ns}_", subject_prefix=f"t{ns}.")
    names = [s.name for s in specs]
    nats_streams.extend(names)
    js = nats_client.jetstream()
    await ensure_streams(js, specs)
    await ensure_streams(js, specs)  # second run: no error, no change
    assert f"T{ns}_DLQ" in names
    # OrderStatusChanged goes to NATS only, so JetStream must keep it.
    info = await js.stream_info(f"T{ns}_EXECUTION")
    assert info.config.subjects == [f"t{ns}.execution.orders.*.*"]
    # Ticks also go to Kafka: no stream for them.
    assert f"T{ns}_MARKETDATA" not in names


async def test_core_subscriber_retries_in_process_then_dead_letters(
    nats_client: NatsClient,
    nats_streams: list[str],
    registry: EventRegistry,
    tick_event: TickFactory,
    ns: str,
) -> None:
    space = await make_space(nats_client, ns, nats_streams)
    bad, bad_tick = tick_event(space.symbol, 1)
    good, good_tick = tick_event(space.symbol, 2)
    attempts: list[int] = []

    async def fail_bad(event: Event) -> None:
        if event.envelope.event_id == bad.event_id:
            attempts.append(event.attempt)
            raise RuntimeError("no")

    collector = EventCollector(fail=fail_bad)
    sub = NatsSubscriber(
        nats_client,
        registry,
        collector,
        event_types=[TICK],
        name="fanout",
        subject_prefix=space.prefix,
        dlq_stream=space.dlq_stream,
        retry=FAST_RETRY,
    )
    pub = NatsPublisher(nats_client, registry, subject_prefix=space.prefix, jetstream_event_types=())
    async with sub:
        await pub.publish(bad, payload=bad_tick)
        await pub.publish(good, payload=good_tick)
        assert (await collector.next(5)).envelope.event_id == good.event_id
    assert attempts == [1, 2, 3]
    dead = dead_letters(nats_client, registry, space)
    [letter] = await wait_dead_letters(dead, "fanout", 1)
    assert [d.id for d in await dead.list()] == [letter.id]  # every consumer's: only this one failed
    assert (letter.reason, letter.attempts) == ("handler_failed", 3)
    assert letter.source == f"/{space.prefix}marketdata.ticks.{space.symbol}/0"
