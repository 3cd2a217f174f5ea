"""Helpers for tests against a real Kafka broker (the transport-neutral ones,
`EventCollector` and `wait_dead_letters`, are `runtime.messaging.testing`;
`runtime.messaging.nats.testing` is the NATS counterpart of this module)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from runtime.messaging.kafka.subscriber import KafkaSubscriber


@asynccontextmanager
async def consuming(subscriber: KafkaSubscriber, *, timeout: float = 15.0) -> AsyncIterator[KafkaSubscriber]:
    """The subscriber started and holding partitions, so it is ready to
    receive (a group join takes a while on Kafka); stopped on exit."""
    await subscriber.start()
    try:
        await subscriber.wait_assigned(timeout)
        yield subscriber
    finally:
        await subscriber.stop()
