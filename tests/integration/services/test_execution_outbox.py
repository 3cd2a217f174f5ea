"""The outbox relay on real PostgreSQL, tansu and NATS: every committed row
becomes its Kafka/NATS event, and a relay that dies after publishing but
before marking the rows sent publishes them again with the same event ids
(at-least-once; consumers deduplicate on the event id), never loses one and
never invents one."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Hashable, Sequence
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from trading.common.v1 import event_pb2

from runtime.config import Settings
from runtime.contracts import event_registry
from runtime.messaging.kafka import KafkaPublisher
from runtime.messaging.kafka.admin import ensure_topics, platform_topics
from runtime.messaging.nats import NatsPublisher
from runtime.messaging.nats.streams import ensure_streams, platform_streams
from runtime.outbox import OutboxRelay, PostgresOutbox
from runtime.storage.migrations import migrate_pool
from runtime.storage.postgres import tenant_transaction
from services.execution.adapters.postgres import PostgresOrderStore
from services.execution.domain import (
    Accept,
    OrderType,
    Reject,
    ReportFill,
    Side,
    TimeInForce,
    apply_all,
    new_order,
)
from services.execution.outbox import outbox_rows
from tests.support.nats import connect_harness

TOPICS = ("trading.execution.orders", "trading.execution.fills")


class Crash(Exception):
    """Stands for the process dying between the broker's ack and the commit."""


class CrashingOutbox(PostgresOutbox):
    """The real outbox, except that the relay dies right before marking rows sent."""

    async def mark_sent(self, conn: asyncpg.Connection, ids: Sequence[Hashable]) -> None:
        raise Crash(f"died before marking {len(ids)} rows sent")


async def _place(store: PostgresOrderStore, tenant: str, *, fill: bool) -> str:
    now = datetime.now(UTC)
    order = new_order(
        order_id=str(uuid.uuid4()),
        tenant_id=tenant,
        client_order_id=uuid.uuid4().hex,
        symbol="BTC-USD",
        side=Side.BUY,
        type=OrderType.MARKET,
        time_in_force=TimeInForce.IOC,
        quantity=Decimal("2"),
        limit_price=None,
        created_at=now,
    )
    inputs = (
        (
            Accept(at=now, venue="paper"),
            ReportFill(at=now, execution_id=str(uuid.uuid4()), price=Decimal("100.5"), quantity=Decimal("2")),
        )
        if fill
        else (Reject(at=now, reason="RISK_TRADING_HALTED"),)
    )
    final, events = apply_all(order, inputs)
    stored = await store.create(final, events, outbox_rows(events), request_hash=b"x", expires_at=None)
    assert stored is not None
    return order.order_id


@pytest_asyncio.fixture(loop_scope="session")
async def brokers(
    infra_settings: Settings,
) -> AsyncIterator[tuple[KafkaPublisher, NatsPublisher, NatsClient]]:
    registry = event_registry()
    await ensure_topics(infra_settings.kafka, platform_topics(registry))
    nc = await connect_harness(infra_settings)
    await ensure_streams(nc.jetstream(), platform_streams(registry))
    async with KafkaPublisher(infra_settings.kafka, registry, client_id="test-outbox") as kafka:
        yield kafka, NatsPublisher(nc, registry), nc
    await nc.close()


async def _kafka_envelopes(
    settings: Settings, tenant: str, want: int, timeout: float = 20
) -> list[event_pb2.EventEnvelope]:
    """Every envelope of `tenant` on the execution topics, once `want` arrived (or at the deadline)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.servers, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [
            TopicPartition(t, p)
            for t in TOPICS
            for p in (consumer.partitions_for_topic(t) or await _partitions(consumer, t))
        ]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        found: list[event_pb2.EventEnvelope] = []
        deadline = time.monotonic() + timeout
        while len(found) < want and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    envelope = event_pb2.EventEnvelope.FromString(record.value)
                    if envelope.tenant_id == tenant:
                        found.append(envelope)
        return found
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or {0}


async def test_relay_republishes_after_a_crash_and_consumers_deduplicate(
    infra_settings: Settings, pg_pool: asyncpg.Pool, brokers: tuple[KafkaPublisher, NatsPublisher, NatsClient]
) -> None:
    kafka, nats_publisher, nc = brokers
    await migrate_pool(pg_pool, "execution")
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    received: list[event_pb2.EventEnvelope] = []
    all_received = asyncio.Event()

    async def on_nats(msg: Msg) -> None:
        received.append(event_pb2.EventEnvelope.FromString(msg.data))
        if len(received) >= 6:
            all_received.set()

    sub = await nc.subscribe(f"execution.orders.{tenant}.>", cb=on_nats)
    store = PostgresOrderStore(pg_pool)
    filled = await _place(store, tenant, fill=True)  # OrderAccepted + OrderFillReported
    rejected = await _place(store, tenant, fill=False)  # OrderRejected
    async with tenant_transaction(pg_pool, tenant) as conn:
        rows = await conn.fetch("SELECT event_id::text, destination FROM execution.outbox ORDER BY id")
    kafka_ids = {r["event_id"] for r in rows if r["destination"] == "kafka"}
    nats_ids = {r["event_id"] for r in rows if r["destination"] == "nats"}
    assert (len(kafka_ids), len(nats_ids)) == (3, 3)

    # 1. The relay publishes everything, then dies before the commit.
    crashing = OutboxRelay(
        CrashingOutbox(pg_pool, "execution"), kafka=kafka, nats=nats_publisher, batch_size=1000
    )
    try:
        await crashing.run_once()
        raise AssertionError("the crashing relay should have crashed")
    except Crash:
        pass
    async with tenant_transaction(pg_pool, tenant) as conn:
        assert await conn.fetchval("SELECT count(*) FROM execution.outbox WHERE sent_at IS NULL") == 6

    # 2. After a restart, the same envelopes go out again and are marked sent.
    relay = OutboxRelay(
        PostgresOutbox(pg_pool, "execution"), kafka=kafka, nats=nats_publisher, batch_size=1000
    )
    assert await relay.run_once() >= 6
    assert await relay.run_once() == 0  # nothing left: no event invented
    async with tenant_transaction(pg_pool, tenant) as conn:
        assert await conn.fetchval("SELECT count(*) FROM execution.outbox WHERE sent_at IS NULL") == 0

    on_kafka = await _kafka_envelopes(infra_settings, tenant, want=6)
    await asyncio.wait_for(all_received.wait(), 10)
    await sub.unsubscribe()

    # Each row went out twice (at-least-once) with the same event id ...
    assert sorted(e.event_id for e in on_kafka) == sorted([*kafka_ids, *kafka_ids])
    assert sorted(e.event_id for e in received) == sorted([*nats_ids, *nats_ids])
    # ... so a consumer deduplicating on it sees every event exactly once, in order per order.
    unique: dict[str, event_pb2.EventEnvelope] = {}
    for envelope in on_kafka:
        unique.setdefault(envelope.event_id, envelope)
    assert set(unique) == kafka_ids
    types_by_order: dict[str, list[str]] = defaultdict(list)
    registry = event_registry()
    for envelope in unique.values():
        payload = registry.message_class(envelope.event_type)()
        envelope.payload.Unpack(payload)
        types_by_order[payload.order_id].append(envelope.event_type.rsplit(".", 1)[1])  # type: ignore[attr-defined]
    assert sorted(types_by_order[filled]) == ["OrderAccepted", "OrderFillReported"]
    assert types_by_order[rejected] == ["OrderRejected"]
