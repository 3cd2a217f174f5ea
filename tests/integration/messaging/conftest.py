"""Fixtures of the messaging integration tests: a Kafka publisher on the
session's tansu, a NATS connection (the test harness user: these tests drive
invented subjects and streams) to the session's server, unique namespaces
per test so tests never share topics, subjects or streams."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError
from opentelemetry.sdk.trace import TracerProvider
from trading.common.v1 import decimal_pb2, event_pb2
from trading.marketdata.v1 import events_pb2 as md_events

from runtime.config import KafkaSettings, Settings
from runtime.contracts import EventRegistry, event_registry
from runtime.messaging import new_envelope
from runtime.messaging.kafka import KafkaPublisher
from tests.support.nats import connect_harness
from tools.infra import ManagedProcess


@pytest.fixture(scope="session")
def registry() -> EventRegistry:
    return event_registry()


@pytest.fixture(scope="session")
def kafka_settings(tansu: ManagedProcess) -> KafkaSettings:
    # Defaults keep the short group timings (session 6 s, rebalance 3 s).
    return KafkaSettings(bootstrap_servers=tansu.address)


@pytest.fixture
def ns() -> str:
    """A unique namespace token for this test."""
    return uuid.uuid4().hex[:10]


@pytest_asyncio.fixture(loop_scope="session")
async def kafka_publisher(
    kafka_settings: KafkaSettings, registry: EventRegistry, ns: str
) -> AsyncIterator[KafkaPublisher]:
    async with KafkaPublisher(kafka_settings, registry, topic_prefix=f"t{ns}.") as publisher:
        yield publisher


@pytest_asyncio.fixture(loop_scope="session")
async def nats_client(infra_settings: Settings) -> AsyncIterator[NatsClient]:
    nc = await connect_harness(infra_settings)
    yield nc
    await nc.close()


@pytest_asyncio.fixture(loop_scope="session")
async def nats_streams(nats_client: NatsClient, ns: str) -> AsyncIterator[list[str]]:
    """Names of streams a test created (appended by the test); deleted afterwards."""
    created: list[str] = []
    yield created
    js = nats_client.jetstream()
    for name in created:
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(name)


@pytest.fixture(scope="session")
def sdk_tracer() -> TracerProvider:
    """An SDK tracer provider of our own, to start recording root spans
    whatever the process-wide provider is."""
    return TracerProvider()


TickFactory = Callable[..., tuple[event_pb2.EventEnvelope, md_events.Tick]]


@pytest.fixture
def tick_event() -> TickFactory:
    """Makes (envelope, Tick) pairs: a real event payload with Kafka and NATS routes."""

    def make(symbol: str, sequence: int = 1) -> tuple[event_pb2.EventEnvelope, md_events.Tick]:
        tick = md_events.Tick(
            symbol=symbol,
            bid_price=decimal_pb2.Decimal(value="100.25"),
            ask_price=decimal_pb2.Decimal(value="100.5"),
            sequence=sequence,
            source="test",
        )
        tick.exchange_time.GetCurrentTime()
        tick.receive_time.GetCurrentTime()
        envelope = new_envelope(
            tick, tenant_id="", correlation_id=f"corr-{symbol}-{sequence}", producer="tests.messaging"
        )
        return envelope, tick

    return make
