"""NatsSubscriber.follow on the real shared NATS server: a core subscriber's
set of subjects changes at run time (subscribe the new, unsubscribe the
removed, keep the others), in a subject namespace unique to each test."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from nats.aio.client import Client as NatsClient
from trading.common.v1 import event_pb2
from trading.marketdata.v1 import events_pb2 as md_events

from runtime.contracts import EventRegistry
from runtime.messaging.nats import NatsPublisher, NatsSubscriber
from runtime.messaging.testing import EventCollector

pytestmark = pytest.mark.integration

TickFactory = Callable[..., tuple[event_pb2.EventEnvelope, md_events.Tick]]


async def _publish_each(
    pub: NatsPublisher, tick_event: TickFactory, symbols: list[str], sequence: int
) -> dict[str, str]:
    """One tick per symbol; returns event id -> symbol."""
    sent = {}
    for symbol in symbols:
        envelope, tick = tick_event(symbol, sequence)
        await pub.publish(envelope, payload=tick)
        sent[envelope.event_id] = symbol
    return sent


async def _symbols_received(collector: EventCollector, sent: dict[str, str], expect: int) -> list[str]:
    """The symbols of the ticks of `sent` that arrived: waits for `expect` of
    them, then for a quiet spell in which any other would have arrived too."""
    for _ in range(expect):
        await collector.next(5)
    assert await collector.nothing_for(0.3)
    return sorted(sent[e.envelope.event_id] for e in collector.events if e.envelope.event_id in sent)


async def test_follow_subscribes_new_subjects_unsubscribes_removed_and_keeps_the_rest(
    nats_client: NatsClient, registry: EventRegistry, tick_event: TickFactory, ns: str
) -> None:
    prefix = f"t{ns}."
    a, b, c = (f"{x}{ns[:6].upper()}" for x in "ABC")
    pub = NatsPublisher(nats_client, registry, subject_prefix=prefix)
    collector = EventCollector()
    sub = NatsSubscriber(
        nats_client,
        registry,
        collector,
        subjects=["marketdata.ticks.*"],  # nominal: follow() decides what is subscribed
        subject_prefix=prefix,
        queue=f"q{ns}",
        name="follower",
    )
    try:
        await sub.follow([f"marketdata.ticks.{a}", f"marketdata.ticks.{b}"])
        assert sub.subjects == [f"{prefix}marketdata.ticks.{a}", f"{prefix}marketdata.ticks.{b}"]
        sent = await _publish_each(pub, tick_event, [a, b, c], 1)
        assert await _symbols_received(collector, sent, 2) == [a, b]

        # b is dropped, c is added, a is kept; the same set again changes nothing.
        await sub.follow([f"marketdata.ticks.{a}", f"marketdata.ticks.{c}"])
        await sub.follow([f"marketdata.ticks.{c}", f"marketdata.ticks.{a}"])
        assert sub.subjects == [f"{prefix}marketdata.ticks.{a}", f"{prefix}marketdata.ticks.{c}"]
        sent = await _publish_each(pub, tick_event, [a, b, c], 2)
        assert await _symbols_received(collector, sent, 2) == [a, c]

        # Nothing wanted: nothing arrives.
        await sub.follow([])
        assert sub.subjects == []
        await _publish_each(pub, tick_event, [a, b, c], 3)
        await nats_client.flush()
        assert await collector.nothing_for(0.3)

        # Followed again after being empty; stop() ends the subscriptions follow() made.
        await sub.follow([f"marketdata.ticks.{b}"])
        sent = await _publish_each(pub, tick_event, [a, b, c], 4)
        assert await _symbols_received(collector, sent, 1) == [b]
    finally:
        await sub.stop()
    await _publish_each(pub, tick_event, [a, b, c], 5)
    await nats_client.flush()
    assert await collector.nothing_for(0.3)


async def test_a_subscriber_without_subjects_only_follows(
    nats_client: NatsClient, registry: EventRegistry, tick_event: TickFactory, ns: str
) -> None:
    # Durable consumers are JetStreamSubscribers, which have no follow().
    prefix = f"t{ns}."
    symbol = f"F{ns[:6].upper()}"
    collector = EventCollector()
    sub = NatsSubscriber(nats_client, registry, collector, subject_prefix=prefix, name="follower")
    assert sub.subjects == []
    with pytest.raises(ValueError, match="at least one subject"):
        await sub.start()
    try:
        await sub.follow([f"marketdata.ticks.{symbol}"])
        sent = await _publish_each(
            NatsPublisher(nats_client, registry, subject_prefix=prefix), tick_event, [symbol], 1
        )
        assert await _symbols_received(collector, sent, 1) == [symbol]
    finally:
        await sub.stop()
