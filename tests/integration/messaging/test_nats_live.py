"""Live subscriptions (runtime.messaging.nats.live) on the real shared NATS
server: per-call core subscriptions and ephemeral ordered JetStream
consumers, with the subscribers' tracing and metrics, in subject and stream
namespaces unique to each test."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from nats.aio.client import Client as NatsClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from trading.common.v1 import event_pb2
from trading.marketdata.v1 import events_pb2 as md_events

from runtime.contracts import EventRegistry
from runtime.messaging import Event
from runtime.messaging.nats import NatsPublisher, StreamSpec, ensure_streams
from runtime.messaging.nats.live import FellBehindError, Overflow, live_subscription, ordered_subscription
from runtime.messaging.telemetry import MessagingMetrics

pytestmark = pytest.mark.integration

TickFactory = Callable[..., tuple[event_pb2.EventEnvelope, md_events.Tick]]
TICK = "trading.marketdata.v1.Tick"


def _value(metrics: CollectorRegistry, name: str, **labels: str) -> float:
    return metrics.get_sample_value(name, {"transport": "nats", **labels}) or 0.0


async def test_a_live_subscription_yields_decoded_events_skips_the_rest_and_ends_with_the_context(
    nats_client: NatsClient, registry: EventRegistry, tick_event: TickFactory, ns: str
) -> None:
    prefix = f"t{ns}."
    symbol = f"L{ns[:6].upper()}"
    subject = f"{prefix}marketdata.ticks.{symbol}"
    pub = NatsPublisher(nats_client, registry, subject_prefix=prefix)
    prometheus = CollectorRegistry()
    first, tick = tick_event(symbol, 1)
    second, _ = tick_event(symbol, 2)
    async with live_subscription(
        nats_client,
        registry,
        [subject],
        name="live-test",
        event_types=[TICK],
        metrics=MessagingMetrics(prometheus),
    ) as events:
        # Entered: the server has the subscription, so this arrives.
        await pub.publish(first, payload=tick)
        await nats_client.publish(subject, b"\xff not an envelope", headers={"x-event-type": TICK})
        await pub.publish(second)
        async with asyncio.timeout(5):
            got = [await anext(events), await anext(events)]
    assert [e.envelope.event_id for e in got] == [first.event_id, second.event_id]
    assert got[0].payload == tick
    assert (got[0].delivery.destination, got[0].delivery.stream) == (subject, "")
    assert _value(prometheus, "trading_messaging_consumed_total", consumer="live-test", event_type=TICK) == 2
    assert (
        _value(prometheus, "trading_messaging_handler_failures_total", consumer="live-test", event_type=TICK)
        == 1
    )

    # Exited: unsubscribed, nothing more is buffered.
    third, _ = tick_event(symbol, 3)
    await pub.publish(third)
    await nats_client.flush()
    await asyncio.sleep(0.1)
    assert events.discard_pending() == 0
    assert _value(prometheus, "trading_messaging_consumed_total", consumer="live-test", event_type=TICK) == 2


@pytest.mark.parametrize("traced", [True, False])
async def test_a_handler_runs_in_the_consumer_span_of_the_publishers_trace_unless_untraced(
    nats_client: NatsClient,
    registry: EventRegistry,
    tick_event: TickFactory,
    sdk_tracer: TracerProvider,
    ns: str,
    traced: bool,
) -> None:
    prefix = f"t{ns}."
    symbol = f"H{ns[:6].upper()}"
    seen: asyncio.Queue[tuple[Event, trace.SpanContext]] = asyncio.Queue()

    async def handler(event: Event) -> None:
        await seen.put((event, trace.get_current_span().get_span_context()))

    envelope, tick = tick_event(symbol)
    async with live_subscription(
        nats_client,
        registry,
        [f"{prefix}marketdata.ticks.>"],
        name="live-handler",
        handler=handler,
        traced=traced,
    ) as live:
        with pytest.raises(TypeError):
            await anext(live)  # a handler subscription is not iterated
        with sdk_tracer.get_tracer("test").start_as_current_span("root") as root:
            await NatsPublisher(nats_client, registry, subject_prefix=prefix).publish(envelope, payload=tick)
        async with asyncio.timeout(5):
            event, span = await seen.get()
    assert event.envelope == envelope
    if traced:
        assert span.trace_id == root.get_span_context().trace_id
    else:
        assert not span.is_valid  # no consumer span was started for it


@pytest.mark.parametrize("overflow", [Overflow.DROP_OLDEST, Overflow.END])
async def test_a_full_buffer_drops_the_oldest_or_ends_the_iteration(
    nats_client: NatsClient, registry: EventRegistry, tick_event: TickFactory, ns: str, overflow: Overflow
) -> None:
    prefix = f"t{ns}."
    symbol = f"O{ns[:6].upper()}"
    pub = NatsPublisher(nats_client, registry, subject_prefix=prefix)
    sent = [tick_event(symbol, n)[0] for n in range(1, 6)]
    async with live_subscription(
        nats_client,
        registry,
        [f"{prefix}marketdata.ticks.{symbol}"],
        name="live-overflow",
        buffer=2,
        overflow=overflow,
    ) as events:
        for envelope in sent:
            await pub.publish(envelope)
        await nats_client.flush()
        async with asyncio.timeout(5):
            while events.dropped < 3:  # noqa: ASYNC110 (the callbacks run on this loop)
                await asyncio.sleep(0.01)
        if overflow is Overflow.DROP_OLDEST:
            got = [await anext(events), await anext(events)]
            assert [e.envelope.event_id for e in got] == [e.event_id for e in sent[3:]]
        else:
            with pytest.raises(FellBehindError):
                while True:
                    await anext(events)


async def test_an_ordered_subscription_resumes_after_a_stream_position(
    nats_client: NatsClient,
    nats_streams: list[str],
    registry: EventRegistry,
    tick_event: TickFactory,
    ns: str,
) -> None:
    prefix = f"t{ns}."
    stream = f"T{ns}_LIVE"
    symbol = f"R{ns[:6].upper()}"
    subject = f"{prefix}marketdata.ticks.{symbol}"
    nats_streams.append(stream)
    await ensure_streams(
        nats_client.jetstream(), [StreamSpec(stream, (f"{prefix}marketdata.ticks.*",), max_age_s=600)]
    )
    pub = NatsPublisher(nats_client, registry, subject_prefix=prefix, jetstream_event_types={TICK})
    sent = [tick_event(symbol, n)[0] for n in range(1, 4)]
    for envelope in sent:
        await pub.publish(envelope)

    async def read(start_after: int, count: int) -> list[Event]:
        async with ordered_subscription(
            nats_client, registry, subject, stream=stream, name="live-ordered", start_after=start_after
        ) as events:
            async with asyncio.timeout(5):
                return [await anext(events) for _ in range(count)]

    first = await read(1, 2)  # resumes after the first of them (stream sequence 1)
    assert [e.envelope.event_id for e in first] == [e.event_id for e in sent[1:]]
    assert [e.delivery.position for e in first] == [2, 3]
    assert {e.delivery.stream for e in first} == {stream}
    # New messages only, once entered.
    later, _ = tick_event(symbol, 4)
    async with ordered_subscription(
        nats_client, registry, subject, stream=stream, name="live-ordered"
    ) as events:
        await pub.publish(later)
        async with asyncio.timeout(5):
            event = await anext(events)
    assert (event.envelope.event_id, event.delivery.position) == (later.event_id, 4)
