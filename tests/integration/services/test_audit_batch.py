"""Batched appends to the audit store on a real PostgreSQL: a batch lands at
the end of its chain in order with the contract's hashes, skips event ids
already stored (in the chain, earlier in the batch, or in another chain),
stores nothing when PostgreSQL refuses one of its records, and 1,000
concurrent appends to one chain (single and batched, with redeliveries)
leave a chain without gaps that verifies. The last two tests print rates
(run with -s; no timing is asserted): appends/s of the one-by-one append and
of the batched one, and events/s through Kafka (tansu) of a per-event
consumer (the audit consumer before batching) and of `AuditSubscriber`."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable
from decimal import Decimal

import asyncpg
import pytest
import pytest_asyncio
from trading.common.v1 import event_pb2
from trading.marketdata.v1 import events_pb2 as marketdata_events

from runtime.config import Settings
from runtime.contracts import event_registry
from runtime.decimals import to_proto
from runtime.messaging import Event, RetryPolicy, new_envelope
from runtime.messaging.kafka import KafkaPublisher, KafkaSubscriber
from runtime.messaging.kafka.admin import dlq_topic, ensure_topics
from runtime.storage.migrations import migrate_pool
from services.audit.adapters.postgres import PostgresAuditStore
from services.audit.consumer import AuditSubscriber
from services.audit.domain import ChainVerifier, chain_hash
from services.audit.ports import AuditStore, NewRecord, new_record

pytestmark = pytest.mark.integration

TICK_KEY = "symbol"  # the partition key of trading.marketdata.v1.Tick


@pytest_asyncio.fixture(loop_scope="session")
async def store(pg_pool: asyncpg.Pool) -> AuditStore:
    await migrate_pool(pg_pool, "audit")
    audit = PostgresAuditStore(pg_pool)
    await audit.secure()
    return audit


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def tick(
    tenant: str, number: int, *, correlation_id: str = "", symbol: str = "BTC-USD"
) -> event_pb2.EventEnvelope:
    """A market data tick as the feed publishes it (here with a tenant, so
    each test has a chain of its own)."""
    payload = marketdata_events.Tick(symbol=symbol, sequence=number, source="test")
    payload.bid_price.CopyFrom(to_proto(Decimal("100.25")))
    payload.ask_price.CopyFrom(to_proto(Decimal("100.5")))
    payload.exchange_time.GetCurrentTime()
    payload.receive_time.GetCurrentTime()
    return new_envelope(
        payload, tenant_id=tenant, correlation_id=correlation_id or f"c-{number}", producer="test"
    )


def record_of(envelope: event_pb2.EventEnvelope) -> NewRecord:
    payload = marketdata_events.Tick.FromString(envelope.payload.value)
    return new_record(envelope, payload, TICK_KEY)


def ticks(tenant: str, count: int) -> list[NewRecord]:
    return [record_of(tick(tenant, n)) for n in range(count)]


async def verified(store: AuditStore, tenant: str) -> ChainVerifier:
    """The whole chain checked record by record, as VerifyChain does."""
    verifier = ChainVerifier(event_registry())
    async for batch in store.records(tenant, from_sequence=1, to_sequence=0, batch=2000):
        for record in batch:
            verifier.check(record)
    assert verifier.broken is None, verifier.broken
    return verifier


async def event_ids_in_order(store: AuditStore, tenant: str) -> list[str]:
    ids: list[str] = []
    async for batch in store.records(tenant, from_sequence=1, to_sequence=0, batch=2000):
        ids += [r.columns.event_id for r in batch]
    return ids


async def test_a_batch_is_appended_in_order_with_the_contract_hashes(store: AuditStore) -> None:
    tenant = new_tenant()
    head = record_of(tick(tenant, 0))
    first = await store.append_record(head)
    assert first is not None and first.sequence == 1
    batch = ticks(tenant, 5)
    results = await store.append_batch(tenant, batch)
    assert [r.sequence for r in results if r is not None] == [2, 3, 4, 5, 6]
    assert await event_ids_in_order(store, tenant) == [head.event_id, *[r.event_id for r in batch]]
    prev = first.hash
    async for records in store.records(tenant, from_sequence=2, to_sequence=0, batch=100):
        for stored, result in zip(records, results, strict=True):
            assert result is not None and stored.hash == result.hash
            assert stored.prev_hash == prev
            assert stored.hash == chain_hash(prev, stored.sequence, stored.envelope_bytes)
            prev = stored.hash
    assert (await verified(store, tenant)).last_sequence == 6
    assert await store.append_batch(tenant, []) == []


async def test_known_event_ids_are_skipped_and_change_nothing(store: AuditStore) -> None:
    tenant = new_tenant()
    batch = ticks(tenant, 4)
    await store.append_batch(tenant, batch[:2])
    before = await verified(store, tenant)
    # Redelivered (0, 1), new (2, 3), and 2 delivered twice within the batch.
    results = await store.append_batch(tenant, [batch[0], batch[2], batch[1], batch[2], batch[3]])
    assert [None if r is None else r.sequence for r in results] == [None, 3, None, None, 4]
    after = await verified(store, tenant)
    assert after.last_sequence == 4
    assert await event_ids_in_order(store, tenant) == [r.event_id for r in batch]
    # The first two records are untouched.
    verifier = ChainVerifier(event_registry())
    async for records in store.records(tenant, from_sequence=1, to_sequence=2, batch=10):
        for record in records:
            verifier.check(record)
    assert verifier.last_hash == before.last_hash
    # All of it again: nothing changes.
    assert await store.append_batch(tenant, batch) == [None] * 4
    assert (await verified(store, tenant)).last_hash == after.last_hash


async def test_an_event_id_of_another_chain_is_skipped_without_a_gap(store: AuditStore) -> None:
    owner, other = new_tenant(), new_tenant()
    taken = tick(owner, 0)
    assert await store.append_record(record_of(taken)) is not None
    # The same event id claimed by another tenant's event (a forgery or a bug
    # upstream): row-level security hides it from `other`'s duplicate check.
    claimed = event_pb2.EventEnvelope()
    claimed.CopyFrom(tick(other, 1))
    claimed.event_id = taken.event_id
    batch = [record_of(tick(other, 2)), record_of(claimed), record_of(tick(other, 3))]
    results = await store.append_batch(other, batch)
    assert [None if r is None else r.sequence for r in results] == [1, None, 2]
    assert (await verified(store, other)).last_sequence == 2
    assert await event_ids_in_order(store, owner) == [taken.event_id]


async def test_a_refused_record_stores_nothing_of_its_batch(store: AuditStore) -> None:
    tenant = new_tenant()
    await store.append_batch(tenant, ticks(tenant, 2))
    poison = record_of(tick(tenant, 9, correlation_id="nul\x00byte"))  # PostgreSQL text refuses NUL
    with pytest.raises(asyncpg.PostgresError):
        await store.append_batch(tenant, [*ticks(tenant, 2), poison])
    assert (await verified(store, tenant)).last_sequence == 2
    with pytest.raises(ValueError, match="another tenant"):
        await store.append_batch(tenant, ticks(new_tenant(), 1))


async def test_1000_concurrent_appends_to_one_chain_leave_no_gap(store: AuditStore) -> None:
    tenant = new_tenant()
    records = ticks(tenant, 1000)
    singles, batched = records[:400], records[400:]
    calls: list[Awaitable[object]] = [store.append_record(r) for r in singles]
    calls += [store.append_batch(tenant, batched[i : i + 50]) for i in range(0, len(batched), 50)]
    # Redeliveries racing their first delivery: each event is stored once.
    calls += [store.append_record(r) for r in records[::10]]
    calls += [store.append_batch(tenant, records[i : i + 25]) for i in range(0, 1000, 100)]
    await asyncio.gather(*calls)
    verifier = await verified(store, tenant)
    assert verifier.checked == 1000 and verifier.last_sequence == 1000
    assert sorted(await event_ids_in_order(store, tenant)) == sorted(r.event_id for r in records)


async def _rate(label: str, count: int, run: Awaitable[object]) -> float:
    started = time.perf_counter()
    await run
    rate = count / (time.perf_counter() - started)
    print(f"\naudit append throughput, {label}: {count} events, {rate:,.0f} appends/s")
    return rate


async def test_append_throughput_one_by_one_and_batched(store: AuditStore) -> None:
    """Prints the rates (run with -s); asserts only that every chain verifies."""
    one_by_one, batched, four = new_tenant(), new_tenant(), [new_tenant() for _ in range(4)]

    async def each(records: list[NewRecord]) -> None:
        for r in records:
            await store.append_record(r)

    async def in_batches(tenant: str, records: list[NewRecord], size: int) -> None:
        for i in range(0, len(records), size):
            await store.append_batch(tenant, records[i : i + size])

    await _rate("one by one (before)", 2000, each(ticks(one_by_one, 2000)))
    await _rate("batches of 1000, one chain", 20000, in_batches(batched, ticks(batched, 20000), 1000))
    per_tenant = {t: ticks(t, 5000) for t in four}
    await _rate(
        "batches of 250 per chain, 4 chains concurrently",
        20000,
        asyncio.gather(*(in_batches(t, r, 250) for t, r in per_tenant.items())),
    )
    for tenant, count in [(one_by_one, 2000), (batched, 20000), *((t, 5000) for t in four)]:
        assert (await verified(store, tenant)).last_sequence == count


async def _consume_rate(
    settings: Settings, store: AuditStore, *, batched: bool, count: int, symbols: int
) -> tuple[str, float]:
    """Publish `count` ticks of a new tenant (over `symbols` keys, so several
    partitions) to a topic of their own, then time a new consumer group from
    its partition assignment until the chain holds them all."""
    registry = event_registry()
    prefix = f"audit-bench-{uuid.uuid4().hex[:8]}."
    topic = prefix + registry.route("trading.marketdata.v1.Tick").kafka_topic
    await ensure_topics(settings.kafka, [topic, dlq_topic(topic)])
    tenant = new_tenant()
    envelopes = [tick(tenant, n, symbol=f"SYM{n % symbols}-USD") for n in range(count)]
    async with KafkaPublisher(settings.kafka, registry, topic_prefix=prefix, client_id="audit-bench") as out:
        for i in range(0, count, 500):
            await out.publish_many([(e, None) for e in envelopes[i : i + 500]])
        group = f"audit-bench-{uuid.uuid4().hex[:8]}"
        consumer: KafkaSubscriber
        if batched:
            consumer = AuditSubscriber(
                settings.kafka,
                registry,
                store,
                group=group,
                topics=[topic],
                dead_letters=out,
                retry=RetryPolicy(max_attempts=3),
                batch_max_events=1000,
                batch_max_interval_s=0.1,
            )
        else:

            async def append_one(event: Event) -> None:
                await store.append(event.envelope, event.payload, TICK_KEY)

            consumer = KafkaSubscriber(
                settings.kafka, registry, append_one, group=group, topics=[topic], dead_letters=out
            )
        async with consumer:
            await consumer.wait_assigned(30.0)
            started = time.perf_counter()
            async with asyncio.timeout(120):
                while await store.head(tenant) < count:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            rate = count / (time.perf_counter() - started)
    label = "AuditSubscriber (batched)" if batched else "per-event consumer (before)"
    print(f"\naudit consumer throughput via Kafka, {label}: {count} events, {rate:,.0f} events/s")
    return tenant, rate


async def test_consumer_throughput_through_kafka_per_event_and_batched(
    store: AuditStore, infra_settings: Settings
) -> None:
    """Prints the rates (run with -s); asserts that every event of several
    partitions reached one gapless chain that verifies."""
    before, _ = await _consume_rate(infra_settings, store, batched=False, count=1000, symbols=6)
    after, _ = await _consume_rate(infra_settings, store, batched=True, count=10000, symbols=6)
    assert (await verified(store, before)).last_sequence == 1000
    assert (await verified(store, after)).last_sequence == 10000
