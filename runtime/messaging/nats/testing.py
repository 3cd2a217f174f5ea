"""Helpers for tests against a real NATS server (the transport-neutral ones,
`EventCollector` and `wait_dead_letters`, are `runtime.messaging.testing`;
`runtime.messaging.kafka.testing` is the Kafka counterpart of this module)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

from runtime.messaging.nats.subscriber import JetStreamSubscriber, NatsSubscriber

S = TypeVar("S", NatsSubscriber, JetStreamSubscriber)


@asynccontextmanager
async def consuming(subscriber: S) -> AsyncIterator[S]:
    """The subscriber started, so it is ready to receive (`start` returns
    once the server has its subscriptions or durable consumer); stopped on
    exit. The same shape as the Kafka helper, which must also wait for
    partitions."""
    await subscriber.start()
    try:
        yield subscriber
    finally:
        await subscriber.stop()
