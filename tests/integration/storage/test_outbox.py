"""The shared transactional outbox (runtime/outbox.py, runtime/outbox_redis.py)
on real PostgreSQL, Redis, tansu and NATS: a rolled-back change publishes
nothing; a committed one is published once even with two relays racing; a
failed publish is retried and not lost; rows of one key and destination go
out in the order they were written, and a key's NATS rows do not wait for its
Kafka rows; an unpublishable row is set aside.

The relay tests run against both stores (the `outbox` fixture): the
PostgreSQL table, in its own schema created by the real migration runner from
outbox_table_sql() (the DDL every service's migrations contain), and the
Redis streams risk uses, under their own service name.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from trading.common.v1 import event_pb2
from trading.execution.v1 import events_pb2 as execution_events
from trading.execution.v1 import types_pb2 as execution_types

from runtime.config import Settings
from runtime.contracts import event_registry
from runtime.messaging import new_envelope
from runtime.messaging.kafka import KafkaPublisher
from runtime.messaging.kafka.admin import ensure_topics, platform_topics
from runtime.messaging.nats import NatsPublisher
from runtime.messaging.nats.streams import ensure_streams, platform_streams
from runtime.outbox import (
    KAFKA,
    NATS,
    OutboxRelay,
    OutboxStore,
    OutboxWriter,
    PostgresOutbox,
    check_outbox_shape,
    outbox_row,
    outbox_table_sql,
    running_relays,
)
from runtime.outbox_redis import RedisOutbox
from runtime.storage.migrations import migrate
from runtime.storage.postgres import tenant_transaction
from tests.support.faultproxy import FaultProxy
from tests.support.nats import connect_harness
from tests.support.polling import eventually

ORDERS_TOPIC = "trading.execution.orders"


@pytest_asyncio.fixture(loop_scope="session")
async def schema(pg_pool: asyncpg.Pool, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh schema holding nothing but an outbox made by the migration runner."""
    name = f"outbox_{uuid.uuid4().hex[:10]}"
    async with pg_pool.acquire() as conn:
        user = await conn.fetchval("SELECT current_user")
        (tmp_path / "0001_outbox.sql").write_text(outbox_table_sql(user))
        await migrate(conn, name, tmp_path)
        await check_outbox_shape(conn, name)
    yield name
    await pg_pool.execute(f'DROP SCHEMA "{name}" CASCADE')


@dataclass
class OutboxUnderTest:
    """One outbox store and how a test writes to it and looks into it: the
    relay tests below run against both (the PostgreSQL table and the Redis
    streams must behave alike)."""

    store: OutboxStore
    write: Callable[[str, Sequence[tuple[str, event_pb2.EventEnvelope, str]]], Awaitable[None]]
    unsent: Callable[[], Awaitable[int]]
    set_aside_errors: Callable[[], Awaitable[list[str]]]


@pytest_asyncio.fixture(loop_scope="session", params=["postgres", "redis"])
async def outbox(
    request: pytest.FixtureRequest, pg_pool: asyncpg.Pool, redis_client: Redis, tmp_path: Path
) -> AsyncIterator[OutboxUnderTest]:
    name = f"outbox_{uuid.uuid4().hex[:10]}"
    if request.param == "postgres":
        async with pg_pool.acquire() as conn:
            user = await conn.fetchval("SELECT current_user")
            (tmp_path / "0001_outbox.sql").write_text(outbox_table_sql(user))
            await migrate(conn, name, tmp_path)
        writer = OutboxWriter(name)

        async def pg_unsent() -> int:
            return await unsent(pg_pool, name)

        async def pg_set_aside() -> list[str]:
            rows = await pg_pool.fetch(f'SELECT last_error FROM "{name}".outbox WHERE failed_at IS NOT NULL')
            return [r["last_error"] for r in rows]

        async def pg_write(tenant: str, rows: Sequence[tuple[str, event_pb2.EventEnvelope, str]]) -> None:
            await write(pg_pool, writer, tenant, rows)

        yield OutboxUnderTest(PostgresOutbox(pg_pool, name), pg_write, pg_unsent, pg_set_aside)
        await pg_pool.execute(f'DROP SCHEMA "{name}" CASCADE')
        return
    store = RedisOutbox(redis_client, name, quiet_s=0.5)

    async def redis_write(tenant: str, rows: Sequence[tuple[str, event_pb2.EventEnvelope, str]]) -> None:
        await store.append(tenant, [outbox_row(e, d, partition_key=k) for d, e, k in rows])  # type: ignore[arg-type]

    async def redis_set_aside() -> list[str]:
        entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis_client.xrange(store.failed_key)  # type: ignore[assignment]
        return [fields[b"error"].decode() for _, fields in entries]

    yield OutboxUnderTest(store, redis_write, store.backlog, redis_set_aside)
    keys = [k async for k in redis_client.scan_iter(match=f"*{name}*")]
    if keys:
        await redis_client.delete(*keys)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def brokers(infra_settings: Settings) -> AsyncIterator[tuple[KafkaPublisher, NatsClient]]:
    registry = event_registry()
    await ensure_topics(infra_settings.kafka, platform_topics(registry))
    nc = await connect_harness(infra_settings)
    await ensure_streams(nc.jetstream(), platform_streams(registry))
    async with KafkaPublisher(infra_settings.kafka, registry, client_id="test-shared-outbox") as kafka:
        yield kafka, nc
    await nc.close()


def status_changed(tenant: str, order_id: str) -> event_pb2.EventEnvelope:
    """OrderStatusChanged: NATS only, through JetStream (Nats-Msg-Id = event id)."""
    payload = execution_events.OrderStatusChanged(
        order_id=order_id,
        symbol="BTC-USD",
        order=execution_types.Order(order_id=order_id, symbol="BTC-USD"),
    )
    return new_envelope(payload, tenant_id=tenant, correlation_id="test", producer="execution")


def accepted(tenant: str, order_id: str) -> event_pb2.EventEnvelope:
    """OrderAccepted: Kafka only."""
    payload = execution_events.OrderAccepted(
        order_id=order_id, order=execution_types.Order(order_id=order_id, symbol="BTC-USD")
    )
    return new_envelope(payload, tenant_id=tenant, correlation_id="test", producer="execution")


class Received:
    """Every NATS envelope of a tenant, in arrival order (core subscription: the stored ones arrive too)."""

    def __init__(self) -> None:
        self.envelopes: list[event_pb2.EventEnvelope] = []

    async def on_msg(self, msg: Msg) -> None:
        self.envelopes.append(event_pb2.EventEnvelope.FromString(msg.data))

    def ids(self) -> list[str]:
        return [e.event_id for e in self.envelopes]


async def subscribe(nc: NatsClient, tenant: str) -> tuple[Received, object]:
    received = Received()
    sub = await nc.subscribe(f"execution.orders.{tenant}.>", cb=received.on_msg)
    await nc.flush()
    return received, sub


async def write(
    pool: asyncpg.Pool,
    writer: OutboxWriter,
    tenant: str,
    rows: Sequence[tuple[str, event_pb2.EventEnvelope, str]],
) -> None:
    """One committed tenant transaction adding (destination, envelope, key) rows."""
    async with tenant_transaction(pool, tenant) as conn:
        for destination, envelope, key in rows:
            await writer.add(conn, destination, envelope, partition_key=key)  # type: ignore[arg-type]


async def unsent(pool: asyncpg.Pool, schema: str) -> int:
    count: int = await pool.fetchval(f'SELECT count(*) FROM "{schema}".outbox WHERE sent_at IS NULL')
    return count


def published_total(service: str, destination: str) -> float:
    labels = {"service": service, "destination": destination}
    return REGISTRY.get_sample_value("outbox_published_total", labels) or 0.0


async def kafka_envelopes(settings: Settings, tenant: str, want: int, timeout: float = 20) -> list[str]:
    """Event ids of `tenant` on the orders topic once `want` arrived, then another second for extras."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.servers, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        parts = [TopicPartition(ORDERS_TOPIC, p) for p in consumer.partitions_for_topic(ORDERS_TOPIC) or {0}]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        found: list[str] = []
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    envelope = event_pb2.EventEnvelope.FromString(record.value)
                    if envelope.tenant_id == tenant:
                        found.append(envelope.event_id)
            if len(found) >= want:
                # Enough: read a little longer, so a duplicate would be seen too.
                settle_until = settle_until or time.monotonic() + 1.0
                if time.monotonic() >= settle_until:
                    break
        return found
    finally:
        await consumer.stop()


async def test_a_rolled_back_change_publishes_nothing(
    pg_pool: asyncpg.Pool, schema: str, brokers: tuple[KafkaPublisher, NatsClient]
) -> None:
    kafka, nc = brokers
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    writer = OutboxWriter(schema)
    received, sub = await subscribe(nc, tenant)
    relay = OutboxRelay(
        PostgresOutbox(pg_pool, schema), kafka=kafka, nats=NatsPublisher(nc, event_registry())
    )

    class Abort(Exception):
        pass

    with pytest.raises(Abort):
        async with tenant_transaction(pg_pool, tenant) as conn:
            await writer.add(conn, NATS, status_changed(tenant, str(uuid.uuid4())))
            await writer.add(conn, KAFKA, accepted(tenant, str(uuid.uuid4())))
            raise Abort  # the change fails after its events were added
    assert await relay.run_once() == 0
    assert await relay.backlog() == 0
    assert await pg_pool.fetchval(f'SELECT count(*) FROM "{schema}".outbox') == 0
    await nc.flush()
    await asyncio.sleep(0.3)
    assert received.envelopes == []

    # Outside a transaction the writer refuses: the row would commit on its own.
    async with pg_pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="transaction"):
            await writer.add(conn, NATS, status_changed(tenant, str(uuid.uuid4())))
    await sub.unsubscribe()  # type: ignore[attr-defined]


async def test_committed_rows_are_published_exactly_once_by_two_racing_relays(
    infra_settings: Settings, outbox: OutboxUnderTest, brokers: tuple[KafkaPublisher, NatsClient]
) -> None:
    kafka, nc = brokers
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    schema = outbox.store.name
    received, sub = await subscribe(nc, tenant)
    orders = [str(uuid.uuid4()) for _ in range(6)]
    written: list[tuple[str, event_pb2.EventEnvelope, str]] = []
    for _ in range(5):
        rows = [(KAFKA, accepted(tenant, o), o) for o in orders] + [
            (NATS, status_changed(tenant, o), o) for o in orders
        ]
        await outbox.write(tenant, rows)
        written.extend(rows)
    kafka_ids = [e.event_id for d, e, _ in written if d == KAFKA]
    nats_ids = [e.event_id for d, e, _ in written if d == NATS]
    before = {d: published_total(schema, d) for d in (KAFKA, NATS)}

    nats_publisher = NatsPublisher(nc, event_registry())
    # Small batches, so the two relays take turns over several rounds.
    relays = [
        OutboxRelay(
            outbox.store,
            kafka=kafka,
            nats=nats_publisher,
            batch_size=7,
            poll_interval_s=0.01,
        )
        for _ in range(2)
    ]
    for relay in relays:
        await relay.start()
    assert set(relays) <= set(running_relays())
    try:
        await eventually(lambda: _zero(outbox.unsent()), what="every row sent")
    finally:
        for relay in relays:
            await relay.stop()

    # Every row was published by exactly one relay, once.
    assert published_total(schema, KAFKA) - before[KAFKA] == len(kafka_ids)
    assert published_total(schema, NATS) - before[NATS] == len(nats_ids)
    on_kafka = await kafka_envelopes(infra_settings, tenant, want=len(kafka_ids))
    assert sorted(on_kafka) == sorted(kafka_ids)  # no loss, no duplicate
    await eventually(lambda: _true(len(received.envelopes) >= len(nats_ids)), what="every NATS event")
    assert sorted(received.ids()) == sorted(nats_ids)
    # Per key (order), the events arrived in the order they were written.
    for order in orders:
        wrote = [e.event_id for d, e, k in written if d == NATS and k == order]
        got = [e.event_id for e in received.envelopes if _order_id(e) == order]
        assert got == wrote
    assert await relays[0].backlog() == 0
    assert not set(relays) & set(running_relays())  # stopped
    assert REGISTRY.get_sample_value("outbox_backlog", {"service": schema}) == 0
    await sub.unsubscribe()  # type: ignore[attr-defined]


async def test_a_failed_publish_is_retried_in_order_and_not_lost(
    infra_settings: Settings, outbox: OutboxUnderTest, brokers: tuple[KafkaPublisher, NatsClient]
) -> None:
    kafka, nc = brokers
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    received, sub = await subscribe(nc, tenant)
    scheme, address = infra_settings.nats.url.split("://", 1)
    host, port = address.rsplit(":", 1)
    async with FaultProxy(host, int(port)) as proxy:
        # The relay's own connection goes through the proxy; the test's subscription does not.
        proxied = infra_settings.nats.model_copy(update={"url": f"{scheme}://{proxy.address}"})
        relay_nc = await connect_harness(infra_settings.model_copy(update={"nats": proxied}))
        try:
            publisher = NatsPublisher(relay_nc, event_registry(), js_timeout_s=0.3)
            relay = OutboxRelay(
                outbox.store,
                kafka=kafka,
                nats=publisher,
                poll_interval_s=0.05,
                retry_delay_s=0.05,
                max_retry_delay_s=0.2,
            )
            keys = [str(uuid.uuid4()) for _ in range(2)]
            written = [(NATS, status_changed(tenant, k), k) for _ in range(4) for k in keys]
            proxy.hold()  # the broker stops answering: every publish times out
            await relay.start()
            try:
                await outbox.write(tenant, written[:4])
                relay.wake()
                await eventually(lambda: _true(relay.last_error is not None), what="a failed publish")
                assert max(relay.retry_delay(lane) for lane in outbox.store.lanes) > 0
                await outbox.write(tenant, written[4:])  # more arrives during the outage
                assert await relay.backlog() == len(written)  # nothing lost, nothing marked
                proxy.release()
                await eventually(lambda: _zero(outbox.unsent()), what="every row sent after the outage")
                await eventually(lambda: _true(relay.last_error is None), what="the relay healthy again")
            finally:
                await relay.stop()
        finally:
            await relay_nc.close()
    await eventually(lambda: _true(len(set(received.ids())) >= len(written)), what="every event")
    # JetStream dropped the retried copies (same Nats-Msg-Id), so each arrived once, in order per key.
    first_seen = list(dict.fromkeys(received.ids()))
    assert sorted(first_seen) == sorted(e.event_id for _, e, _ in written)
    for key in keys:
        wrote = [e.event_id for _, e, k in written if k == key]
        assert [i for i in first_seen if i in set(wrote)] == wrote
    await sub.unsubscribe()  # type: ignore[attr-defined]


async def test_an_unpublishable_row_is_set_aside_without_blocking_the_rest(
    outbox: OutboxUnderTest, brokers: tuple[KafkaPublisher, NatsClient]
) -> None:
    kafka, nc = brokers
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    received, sub = await subscribe(nc, tenant)
    order = str(uuid.uuid4())
    good = status_changed(tenant, order)
    # OrderAccepted has no NATS subject: it can never go there.
    await outbox.write(tenant, [(NATS, accepted(tenant, order), "k"), (NATS, good, "k")])
    relay = OutboxRelay(outbox.store, kafka=kafka, nats=NatsPublisher(nc, event_registry()))
    assert await relay.run_once() == 1
    assert not relay.last_round_failed
    errors = await outbox.set_aside_errors()
    assert len(errors) == 1 and "nats_subject" in errors[0]
    assert await relay.backlog() == 0
    assert await relay.run_once() == 0  # set aside: not tried again
    await eventually(lambda: _true(received.ids() == [good.event_id]), what="the good row published")
    await sub.unsubscribe()  # type: ignore[attr-defined]


async def test_a_live_update_does_not_wait_for_the_durable_event_written_before_it(
    outbox: OutboxUnderTest, brokers: tuple[KafkaPublisher, NatsClient]
) -> None:
    """Order is kept per key and destination: the order's NATS update goes out
    while its Kafka event, written first, cannot (here: no Kafka publisher at
    all, a retryable failure); the Kafka row stays pending, nothing is lost."""
    _, nc = brokers
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    received, sub = await subscribe(nc, tenant)
    order = str(uuid.uuid4())
    live = status_changed(tenant, order)
    await outbox.write(tenant, [(KAFKA, accepted(tenant, order), order), (NATS, live, order)])
    relay = OutboxRelay(outbox.store, kafka=None, nats=NatsPublisher(nc, event_registry()))
    assert await relay.run_once() == 1  # the NATS row
    assert relay.last_round_failed  # the Kafka row failed, and waits
    assert await relay.backlog() == 1
    await eventually(lambda: _true(received.ids() == [live.event_id]), what="the live update published")
    await sub.unsubscribe()  # type: ignore[attr-defined]


async def test_a_running_relay_sends_live_updates_while_the_kafka_lane_backs_off(
    outbox: OutboxUnderTest, brokers: tuple[KafkaPublisher, NatsClient]
) -> None:
    """A store with lanes (the PostgreSQL table) runs a relay loop per
    destination: while Kafka rows keep failing (no Kafka publisher: retryable)
    and their lane waits out a 30 s back-off, the NATS updates of orders placed
    meanwhile still go out at once. One loop for both waited out the back-off
    (and, when Kafka was merely slow, its acks) before the next NATS rows."""
    if outbox.store.lanes == (None,):
        pytest.skip("one lane: the Redis streams hold both destinations in one stream per tenant")
    _, nc = brokers
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    received, sub = await subscribe(nc, tenant)
    relay = OutboxRelay(
        outbox.store,
        kafka=None,
        nats=NatsPublisher(nc, event_registry()),
        retry_delay_s=30,
        max_retry_delay_s=30,
    )
    await relay.start()
    try:
        live: list[str] = []
        for _ in range(3):
            order = str(uuid.uuid4())
            update = status_changed(tenant, order)
            await outbox.write(tenant, [(KAFKA, accepted(tenant, order), order), (NATS, update, order)])
            relay.wake()
            live.append(update.event_id)
            await eventually(lambda: _true(received.ids() == live), 10.0, "the order's live update")
        assert relay.retry_delay(KAFKA) == 30  # the Kafka lane is backing off all along
        assert await outbox.unsent() == 3  # its rows wait, nothing lost
    finally:
        await relay.stop()
        await sub.unsubscribe()  # type: ignore[attr-defined]


def _order_id(envelope: event_pb2.EventEnvelope) -> str:
    payload = execution_events.OrderStatusChanged()
    envelope.payload.Unpack(payload)
    return payload.order_id


async def _zero(count: Awaitable[int]) -> bool:
    return await count == 0


async def _true(value: bool) -> bool:
    return value


async def test_the_redis_index_forgets_a_quiet_drained_tenant_but_not_one_about_to_write(
    redis_client: Redis, brokers: tuple[KafkaPublisher, NatsClient]
) -> None:
    kafka, nc = brokers
    name = f"outbox_{uuid.uuid4().hex[:10]}"
    store = RedisOutbox(redis_client, name, quiet_s=0.3)
    relay = OutboxRelay(store, kafka=kafka, nats=NatsPublisher(nc, event_registry()))
    quiet, busy = f"t-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:10]}"
    try:
        await store.append(quiet, [outbox_row(status_changed(quiet, "o1"), NATS)])
        assert await relay.run_once() == 1
        await asyncio.sleep(0.4)
        await store.enlist(busy)  # a writer about to run its script
        assert await relay.run_once() == 0
        members: list[bytes] = await redis_client.zrange(f"{name}:outbox:tenants", 0, -1)  # type: ignore[assignment]
        enlisted = {t.decode() for t in members}
        assert enlisted == {busy}  # the drained, quiet tenant is gone; the writer's is kept
        await store.append(busy, [outbox_row(status_changed(busy, "o2"), NATS)])
        assert await relay.backlog() == 1
        assert await relay.run_once() == 1
    finally:
        keys = [k async for k in redis_client.scan_iter(match=f"*{name}*")]
        if keys:
            await redis_client.delete(*keys)
