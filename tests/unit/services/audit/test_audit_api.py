"""AuditService's QueryEvents, VerifyChain and ReplayTenant on the in-memory adapters.

GetLineage runs on runtime.graph's PostgreSQL adapter in
tests/integration/services/test_audit_lineage.py (runtime.graph has no
in-memory adapter)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import grpc
import pytest
from trading.audit.v1 import audit_service_pb2 as pb
from trading.audit.v1 import events_pb2 as audit_events
from trading.audit.v1 import types_pb2 as types
from trading.common.v1 import types_pb2
from trading.execution.v1 import events_pb2 as execution_events
from trading.portfolio.v1 import types_pb2 as portfolio_types

from runtime.contracts import event_registry
from runtime.decimals import to_proto
from runtime.messaging import new_envelope, unpack
from services.audit.adapters.memory import MemoryAuditStore, MemoryLiveState, MemoryPublisher
from services.audit.api import AuditApi, Context
from services.audit.settings import AuditSettings
from tests.support.servicers import as_caller, expect_error, servicer_context

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@dataclass
class Harness:
    api: AuditApi
    store: MemoryAuditStore
    live: MemoryLiveState
    alerts: MemoryPublisher


@pytest.fixture
def audit() -> Harness:
    store, live, alerts = MemoryAuditStore(), MemoryLiveState(), MemoryPublisher()
    api = AuditApi(store, live, event_registry(), alerts, AuditSettings(read_batch=10))
    return Harness(api, store, live, alerts)


def context() -> Context:
    """A fresh recorded call context, typed as the servicer's."""
    return servicer_context()


def buy_fill(symbol: str, quantity: str, price: str) -> execution_events.OrderFillReported:
    order_id = str(uuid.uuid4())
    payload = execution_events.OrderFillReported(order_id=order_id)
    fill = payload.fill
    fill.execution_id, fill.order_id, fill.symbol = str(uuid.uuid4()), order_id, symbol
    fill.side = types_pb2.SIDE_BUY
    fill.quantity.CopyFrom(to_proto(quantity))
    fill.price.CopyFrom(to_proto(price))
    fill.fee.currency = "USD"
    fill.fee.amount.CopyFrom(to_proto("0"))
    fill.executed_at.FromDatetime(T0)
    payload.order.order_id, payload.order.symbol = order_id, symbol
    return payload


async def store_fills(h: Harness, tenant: str, count: int, *, correlation_id: str = "corr-1") -> None:
    for n in range(count):
        payload = buy_fill("BTC-USD", "1", str(100 + n))
        envelope = new_envelope(
            payload, tenant_id=tenant, correlation_id=correlation_id, producer="execution"
        )
        assert await h.store.append(envelope, payload, payload.order_id) is not None


def live_position(symbol: str, quantity: str, average: str) -> portfolio_types.Position:
    position = portfolio_types.Position(symbol=symbol, quantity=to_proto(quantity))
    position.average_price.CopyFrom(to_proto(average))
    position.realized_pnl.amount.CopyFrom(to_proto("0"))
    position.fees_paid.amount.CopyFrom(to_proto("0"))
    return position


async def test_events_are_queried_by_correlation_and_paged(audit: Harness) -> None:
    h = audit
    await store_fills(h, "tenant-a", 3, correlation_id="corr-1")
    await store_fills(h, "tenant-a", 2, correlation_id="corr-2")
    with as_caller("tenant-a"):
        first = await h.api.QueryEvents(
            pb.QueryEventsRequest(correlation_id="corr-1", page_size=2), context()
        )
        second = await h.api.QueryEvents(
            pb.QueryEventsRequest(correlation_id="corr-1", page_size=2, page_token=first.next_page_token),
            context(),
        )
        raw = await h.api.QueryEvents(pb.QueryEventsRequest(from_sequence=5, include_raw=True), context())
    assert [r.sequence for r in [*first.records, *second.records]] == [1, 2, 3]
    assert second.next_page_token == ""
    assert {r.correlation_id for r in [*first.records, *second.records]} == {"corr-1"}
    [last] = raw.records
    assert (last.sequence, last.correlation_id) == (5, "corr-2")
    assert last.envelope.SerializeToString(deterministic=True) == last.envelope_bytes


async def test_a_page_token_of_other_filters_or_not_ours_is_invalid_argument(audit: Harness) -> None:
    h = audit
    await store_fills(h, "tenant-a", 3)
    with as_caller("tenant-a"):
        first = await h.api.QueryEvents(pb.QueryEventsRequest(page_size=1), context())
        for request in (
            pb.QueryEventsRequest(page_size=1, correlation_id="corr-1", page_token=first.next_page_token),
            pb.QueryEventsRequest(page_token="not-a-token"),
        ):
            await expect_error(h.api.QueryEvents(request, context()), grpc.StatusCode.INVALID_ARGUMENT)


async def test_another_tenant_sees_none_of_a_tenants_chain(audit: Harness) -> None:
    h = audit
    await store_fills(h, "tenant-a", 2)
    h.live.positions_by_tenant["tenant-a"] = [live_position("BTC-USD", "2", "100.5")]
    with as_caller("tenant-b"):
        queried = await h.api.QueryEvents(pb.QueryEventsRequest(correlation_id="corr-1"), context())
        verified = await h.api.VerifyChain(pb.VerifyChainRequest(), context())
        replayed = await h.api.ReplayTenant(pb.ReplayTenantRequest(), context())
    assert list(queried.records) == []
    assert (verified.ok, verified.records_checked) == (True, 0)
    assert (replayed.consistent, replayed.events_replayed, replayed.positions_compared) == (True, 0, 0)


async def test_an_intact_chain_verifies(audit: Harness) -> None:
    h = audit
    await store_fills(h, "tenant-a", 25)  # three read batches of 10
    with as_caller("tenant-a"):
        whole = await h.api.VerifyChain(pb.VerifyChainRequest(), context())
        part = await h.api.VerifyChain(pb.VerifyChainRequest(from_sequence=5, to_sequence=9), context())
    assert (whole.ok, whole.records_checked, whole.first_sequence, whole.last_sequence) == (True, 25, 1, 25)
    assert (part.ok, part.records_checked, part.first_sequence, part.last_sequence) == (True, 5, 5, 9)
    assert h.alerts.published == []


async def test_a_tampered_record_is_named_and_alerted(audit: Harness) -> None:
    h = audit
    await store_fills(h, "tenant-a", 5)
    # What someone with write access to the table could do: change a record's bytes.
    chain = h.store._chains["tenant-a"]
    tampered = chain[2].record
    chain[2] = replace(chain[2], record=replace(tampered, envelope_bytes=tampered.envelope_bytes + b"\x00"))
    with as_caller("tenant-a"):
        reply = await h.api.VerifyChain(pb.VerifyChainRequest(), context())
    assert not reply.ok
    assert reply.first_break.sequence == 3
    assert reply.first_break.event_id == tampered.columns.event_id
    [alert] = h.alerts.published
    payload = unpack(alert, event_registry())
    assert isinstance(payload, audit_events.AuditChainBroken)
    assert (alert.tenant_id, payload.chain_break.sequence) == ("tenant-a", 3)


async def test_positions_replayed_from_fills_match_the_live_ones(audit: Harness) -> None:
    h = audit
    await store_fills(h, "tenant-a", 2)  # 1 @ 100, 1 @ 101
    h.live.positions_by_tenant["tenant-a"] = [live_position("BTC-USD", "2", "100.5")]
    request = pb.ReplayTenantRequest(aggregates=[types.REPLAY_AGGREGATE_POSITIONS])
    with as_caller("tenant-a"):
        consistent = await h.api.ReplayTenant(request, context())
        h.live.positions_by_tenant["tenant-a"] = [live_position("BTC-USD", "3", "100.5")]
        differs = await h.api.ReplayTenant(request, context())
    assert (consistent.consistent, consistent.events_replayed, consistent.up_to_sequence) == (True, 2, 2)
    assert consistent.positions_compared == 1
    assert not differs.consistent
    [difference] = differs.differences
    assert (difference.aggregate_id, difference.field) == ("BTC-USD", "quantity")
    assert (difference.kind, difference.replayed_value, difference.live_value) == (
        types.DIFFERENCE_KIND_VALUE_MISMATCH,
        "2",
        "3",
    )
