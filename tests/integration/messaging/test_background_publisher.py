"""BackgroundPublisher (runtime.messaging.background) on the real shared NATS
server: submitted events arrive in order, a failing batch is counted and
does not stop the ones after it, stop publishes what is queued."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from nats.aio.client import Client as NatsClient
from trading.common.v1 import event_pb2
from trading.execution.v1 import events_pb2 as execution_events
from trading.marketdata.v1 import events_pb2 as md_events

from runtime.contracts import EventRegistry
from runtime.messaging import new_envelope
from runtime.messaging.background import BackgroundPublisher
from runtime.messaging.nats import NatsPublisher, NatsSubscriber
from runtime.messaging.nats.testing import consuming
from runtime.messaging.testing import EventCollector

pytestmark = pytest.mark.integration

TickFactory = Callable[..., tuple[event_pb2.EventEnvelope, md_events.Tick]]
TICK = "trading.marketdata.v1.Tick"


async def test_events_arrive_in_order_and_a_failed_batch_does_not_stop_the_rest(
    nats_client: NatsClient, registry: EventRegistry, tick_event: TickFactory, ns: str
) -> None:
    prefix = f"t{ns}."
    symbol = f"B{ns[:6].upper()}"
    failures: list[int] = []
    background = BackgroundPublisher(
        NatsPublisher(nats_client, registry, subject_prefix=prefix),
        name="test-background",
        max_batch=10,
        on_failure=lambda count, _exc: failures.append(count),
    )
    collector = EventCollector()
    sub = NatsSubscriber(
        nats_client, registry, collector, event_types=[TICK], subject_prefix=prefix, name="bg"
    )
    first = [tick_event(symbol, n) for n in range(1, 26)]
    # Not published on NATS at all: its batch fails as a whole.
    unroutable = execution_events.OrderAccepted()
    unroutable_envelope = new_envelope(unroutable, tenant_id="t", correlation_id="", producer="tests")
    last = [tick_event(symbol, n) for n in range(26, 31)]
    async with consuming(sub):
        background.start()
        await background.submit_many(first)
        await background.drain()  # the first 25 are out: the failing event gets a batch of its own
        await background.submit(unroutable_envelope, unroutable)
        await background.drain()
        for envelope, tick in last:
            await background.submit(envelope, tick)
        await background.stop()  # publishes what is still queued
        got = [(await collector.next(5)).envelope.event_id for _ in range(30)]
    assert got == [e.event_id for e, _ in first + last]
    assert (background.sent, background.failed, failures) == (30, 1, [1])
