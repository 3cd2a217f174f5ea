"""The contract of audit's event store port (services.audit.ports.AuditStore),
run against each adapter: ``TestMemoryAuditStore`` (unit) and
``TestPostgresAuditStore`` (integration) subclass :class:`AuditStoreSuite`
and provide its ``store`` fixture."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from trading.common.v1 import event_pb2
from trading.marketdata.v1 import events_pb2 as marketdata_events

from runtime.contracts import event_registry
from runtime.decimals import to_proto
from runtime.messaging import new_envelope
from services.audit.domain import GENESIS_HASH, ChainVerifier, StoredRecord, canonical_bytes, chain_hash
from services.audit.ports import AuditStore, EventFilter, NewRecord, new_record

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
TICK = "trading.marketdata.v1.Tick"


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def tick(
    tenant_id: str, number: int, *, correlation_id: str = "", symbol: str = "BTC-USD", minute: int = 0
) -> tuple[event_pb2.EventEnvelope, marketdata_events.Tick]:
    payload = marketdata_events.Tick(symbol=symbol, sequence=number, source="test")
    payload.bid_price.CopyFrom(to_proto(Decimal("100.25")))
    payload.ask_price.CopyFrom(to_proto(Decimal("100.5")))
    envelope = new_envelope(
        payload,
        tenant_id=tenant_id,
        correlation_id=correlation_id or f"c-{number}",
        producer="test",
        occurred_at=T0 + timedelta(minutes=minute),
    )
    return envelope, payload


def record(
    tenant_id: str, number: int, *, correlation_id: str = "", symbol: str = "BTC-USD", minute: int = 0
) -> NewRecord:
    envelope, payload = tick(tenant_id, number, correlation_id=correlation_id, symbol=symbol, minute=minute)
    return new_record(envelope, payload, "symbol")


async def chain_of(store: AuditStore, tenant_id: str, *, batch: int = 1000) -> list[StoredRecord]:
    found: list[StoredRecord] = []
    async for records in store.records(tenant_id, from_sequence=1, to_sequence=0, batch=batch):
        assert 0 < len(records) <= batch
        found += records
    return found


class AuditStoreSuite:
    """Chains per tenant, the contract's hashes, event ids unique across
    chains, batches, filters and ordering."""

    async def test_appends_make_the_contracts_hash_chain(self, store: AuditStore) -> None:
        t = tenant()
        assert await store.head(t) == 0
        envelope, payload = tick(t, 0)
        first = await store.append(envelope, payload, "symbol")
        assert first is not None and first.sequence == 1
        assert first.hash == chain_hash(GENESIS_HASH, 1, canonical_bytes(envelope))
        results = await store.append_batch(t, [record(t, n) for n in range(1, 4)])
        assert [r.sequence for r in results if r is not None] == [2, 3, 4]
        assert await store.head(t) == 4
        prev = GENESIS_HASH
        verifier = ChainVerifier(event_registry())
        for stored in await chain_of(store, t):
            assert stored.prev_hash == prev
            assert stored.hash == chain_hash(prev, stored.sequence, stored.envelope_bytes)
            assert verifier.check(stored) is None
            prev = stored.hash
        assert verifier.last_sequence == 4

    async def test_a_known_event_id_stores_nothing(self, store: AuditStore) -> None:
        t = tenant()
        batch = [record(t, n) for n in range(3)]
        assert all(await store.append_batch(t, batch[:2]))
        assert await store.append_record(batch[0]) is None
        # Redelivered (0, 1), new (2), and 2 twice within the batch.
        results = await store.append_batch(t, [batch[0], batch[2], batch[1], batch[2]])
        assert [None if r is None else r.sequence for r in results] == [None, 3, None, None]
        assert [r.columns.event_id for r in await chain_of(store, t)] == [r.event_id for r in batch]

    async def test_event_ids_are_unique_across_chains_without_gaps(self, store: AuditStore) -> None:
        a, b = tenant(), tenant()
        stored_in_a = record(a, 0)
        assert await store.append_record(stored_in_a) is not None
        # The same event id under tenant b (a replayed or forged copy) is skipped.
        copy = replace(stored_in_a, columns=replace(stored_in_a.columns, tenant_id=b))
        fresh = record(b, 1)
        results = await store.append_batch(b, [copy, fresh])
        assert results[0] is None and results[1] is not None and results[1].sequence == 1
        assert [r.columns.event_id for r in await chain_of(store, b)] == [fresh.event_id]

    async def test_a_batch_of_another_tenants_records_is_refused(self, store: AuditStore) -> None:
        a, b = tenant(), tenant()
        with pytest.raises(ValueError, match="another tenant"):
            await store.append_batch(a, [record(a, 0), record(b, 1)])
        assert await store.head(a) == 0 and await store.head(b) == 0

    async def test_one_tenants_chain_is_invisible_to_another(self, store: AuditStore) -> None:
        a, b = tenant(), tenant()
        await store.append_batch(a, [record(a, n, correlation_id="shared") for n in range(3)])
        assert await store.head(b) == 0
        assert await chain_of(store, b) == []
        assert await store.page(b, EventFilter(correlation_id="shared"), after=0, limit=10) == []
        assert [x async for x in store.events_of_types(b, [TICK], up_to=10, batch=10)] == []

    async def test_concurrent_appends_to_one_chain_leave_no_gap(self, store: AuditStore) -> None:
        t = tenant()
        results = await asyncio.gather(*(store.append_record(record(t, n)) for n in range(20)))
        assert sorted(r.sequence for r in results if r is not None) == list(range(1, 21))
        verifier = ChainVerifier(event_registry())
        for stored in await chain_of(store, t):
            assert verifier.check(stored) is None

    async def test_the_platform_chain_is_the_empty_tenant(self, store: AuditStore) -> None:
        before = await store.head("")
        appended = await store.append_record(record("", 0))
        assert appended is not None and appended.sequence == before + 1
        assert await store.head("") == before + 1

    async def test_pages_filter_and_ascend(self, store: AuditStore) -> None:
        t = tenant()
        records = [
            record(t, 0, correlation_id="x", minute=0),
            record(t, 1, correlation_id="y", minute=1, symbol="ETH-USD"),
            record(t, 2, correlation_id="x", minute=2),
            record(t, 3, correlation_id="x", minute=3, symbol="ETH-USD"),
        ]
        await store.append_batch(t, records)

        async def sequences(where: EventFilter, *, after: int = 0, limit: int = 10) -> list[int]:
            return [r.record.sequence for r in await store.page(t, where, after=after, limit=limit)]

        assert await sequences(EventFilter()) == [1, 2, 3, 4]
        assert await sequences(EventFilter(correlation_id="x")) == [1, 3, 4]
        assert await sequences(EventFilter(correlation_id="x"), after=1, limit=1) == [3]
        assert await sequences(EventFilter(aggregate_id="ETH-USD")) == [2, 4]
        assert await sequences(EventFilter(event_type=TICK, from_sequence=3)) == [3, 4]
        window = EventFilter(occurred_from=T0 + timedelta(minutes=1), occurred_to=T0 + timedelta(minutes=3))
        assert await sequences(window) == [2, 3]
        assert await sequences(EventFilter(event_type="trading.other.v1.Nothing")) == []
        rows = await store.page(t, EventFilter(), after=0, limit=1)
        assert rows[0].record.columns.event_id == records[0].event_id
        assert rows[0].record.columns.correlation_id == "x"

    async def test_records_come_in_batches_within_bounds(self, store: AuditStore) -> None:
        t = tenant()
        await store.append_batch(t, [record(t, n) for n in range(7)])
        batches = [
            [r.sequence for r in b] async for b in store.records(t, from_sequence=2, to_sequence=6, batch=2)
        ]
        assert batches == [[2, 3], [4, 5], [6]]
        assert len(await chain_of(store, t, batch=3)) == 7
        beyond = [b async for b in store.records(t, from_sequence=1, to_sequence=2**64 - 1, batch=100)]
        assert [r.sequence for r in beyond[0]] == list(range(1, 8))

    async def test_events_of_types_up_to_a_sequence(self, store: AuditStore) -> None:
        t = tenant()
        batch = [record(t, n) for n in range(5)]
        await store.append_batch(t, batch)
        found = [x async for b in store.events_of_types(t, [TICK], up_to=4, batch=3) for x in b]
        assert [seq for seq, _ in found] == [1, 2, 3, 4]
        assert [data for _, data in found] == [r.envelope_bytes for r in batch[:4]]
        assert [
            x async for x in store.events_of_types(t, ["trading.other.v1.Nothing"], up_to=5, batch=3)
        ] == []
