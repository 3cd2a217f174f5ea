"""Lineage, used for real: decision's and execution's events published to
tansu with the platform's KafkaPublisher are turned into the lineage graph
by audit's lineage consumer (group of its own) in PostgreSQL, and GetLineage
answers over gRPC, as the gateway calls it: a fill walked back to its signal
and model versions, a strategy's day walked forward in pages, another
tenant refused (it sees nothing), bad requests INVALID_ARGUMENT."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest
import pytest_asyncio
from google.protobuf import message as pb_message
from trading.audit.v1 import audit_service_pb2 as pb
from trading.audit.v1 import audit_service_pb2_grpc as pb_grpc
from trading.common.v1 import market_pb2
from trading.common.v1 import types_pb2 as common
from trading.decision.v1 import decision_service_pb2 as decision
from trading.decision.v1 import events_pb2 as decision_events
from trading.execution.v1 import events_pb2 as execution_events
from trading.execution.v1 import types_pb2 as execution_types

from runtime.config import Settings
from runtime.contracts import event_registry
from runtime.errors import error_details
from runtime.messaging import new_envelope
from runtime.messaging.kafka import KafkaPublisher
from services.audit.main import make_spec
from services.audit.settings import AuditSettings
from tests.support.polling import eventually
from tests.support.security import service_channel, user_md
from tests.support.services import running_service

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
MODELS = (("gbt-trend", "2026-11-01.1"), ("logreg-trend", "2026-11-02.3"))
N = pb.LineageNodeKind


@dataclass
class Harness:
    stub: pb_grpc.AuditServiceAsyncStub
    publisher: KafkaPublisher


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def audit(infra_settings: Settings) -> AsyncIterator[Harness]:
    """One running audit service for the module, with its own consumer groups."""
    token = uuid.uuid4().hex[:8]
    spec = make_spec(
        AuditSettings(consumer_group=f"audit.test-{token}", lineage_group=f"audit.lineage-{token}")
    )
    async with (
        running_service(spec, infra_settings) as address,
        service_channel(address, "audit") as channel,
        KafkaPublisher(infra_settings.kafka, event_registry(), client_id="test-lineage") as publisher,
    ):
        yield Harness(pb_grpc.AuditServiceStub(channel), publisher)


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def uid() -> str:
    return str(uuid.uuid4())


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@dataclass(frozen=True)
class Trade:
    """One strategy trade's ids: signal -> intent -> order -> fills."""

    signal_id: str
    intent_id: str
    client_order_id: str
    order_id: str
    fill_ids: tuple[str, str]


def trade_events(tenant: str, strategy: str, minute: float) -> tuple[Trade, list[pb_message.Message]]:
    """The events decision and execution publish for one traded signal."""
    t = Trade(uid(), uid(), "", uid(), (uid(), uid()))
    coid = f"sig-{t.signal_id}"
    t = Trade(t.signal_id, t.intent_id, coid, t.order_id, t.fill_ids)
    signal = decision.Signal(
        signal_id=t.signal_id,
        strategy_id=strategy,
        symbol="BTC-USD",
        direction=decision.SIGNAL_DIRECTION_BUY,
        strength=0.4,
        client_order_id=coid,
        model_scores=[decision.ModelScore(model_id=m, model_version=v, score=0.4) for m, v in MODELS],
    )
    signal.generated_at.FromDatetime(at(minute))
    intent = decision_events.OrderIntentCreated(
        intent_id=t.intent_id, strategy_id=strategy, signal_id=t.signal_id, client_order_id=coid,
        symbol="BTC-USD", side=common.SIDE_BUY, order_type=market_pb2.ORDER_TYPE_MARKET,
    )  # fmt: skip
    intent.quantity.value = "0.02"
    intent.created_at.FromDatetime(at(minute + 0.01))
    order = execution_types.Order(
        order_id=t.order_id,
        client_order_id=coid,
        symbol="BTC-USD",
        side=common.SIDE_BUY,
        strategy_id=strategy,
        version=2,
    )
    order.quantity.value = "0.02"
    order.created_at.FromDatetime(at(minute + 0.02))
    events: list[pb_message.Message] = [
        decision_events.SignalGenerated(symbol="BTC-USD", signal=signal),
        intent,
        execution_events.OrderAccepted(order_id=t.order_id, order=order),
    ]
    for n, fill_id in enumerate(t.fill_ids):
        fill = execution_types.Fill(execution_id=fill_id, order_id=t.order_id, client_order_id=coid,
                                    symbol="BTC-USD", side=common.SIDE_BUY)  # fmt: skip
        fill.price.value, fill.quantity.value = f"{100 + n}.5", "0.01"
        fill.executed_at.FromDatetime(at(minute + 0.03 + n / 100))
        events.append(execution_events.OrderFillReported(order_id=t.order_id, fill=fill, order=order))
    return t, events


async def publish(h: Harness, tenant: str, payloads: list[pb_message.Message]) -> None:
    for payload in payloads:
        envelope = new_envelope(payload, tenant_id=tenant, correlation_id=f"c-{uid()[:8]}", producer="test")
        await h.publisher.publish(envelope, payload=payload)


async def lineage(h: Harness, tenant: str, **fields: object) -> pb.GetLineageResponse:
    reply: pb.GetLineageResponse = await h.stub.GetLineage(
        pb.GetLineageRequest(**fields),  # type: ignore[arg-type]
        metadata=user_md("audit", tenant),
        timeout=10,
    )
    return reply


async def settled(h: Harness, tenant: str, count: int, **fields: object) -> pb.GetLineageResponse:
    """GetLineage once the consumer stored enough for `count` nodes."""

    async def probe() -> pb.GetLineageResponse | None:
        try:
            reply = await lineage(h, tenant, **fields)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None  # its events are not consumed yet
            raise
        return reply if len(reply.nodes) >= count else None

    return await eventually(probe, 30.0, f"{count} lineage nodes of {fields}")


def refs(reply: pb.GetLineageResponse) -> set[tuple[int, str]]:
    return {(n.kind, n.id) for n in reply.nodes}


async def test_a_fill_is_walked_back_to_its_signal_and_model_versions(audit: Harness) -> None:
    tenant = new_tenant()
    trade, events = trade_events(tenant, "btc-momentum", 0)
    # Out of order (fills before the signal) and a fill delivered twice.
    await publish(audit, tenant, [*reversed(events), events[-1]])
    reply = await settled(audit, tenant, 7, execution_id=trade.fill_ids[1])
    assert reply.direction == pb.LINEAGE_DIRECTION_UPSTREAM
    assert (reply.start.kind, reply.start.id) == (N.Value("LINEAGE_NODE_KIND_FILL"), trade.fill_ids[1])
    assert reply.start.attributes["price"] == "101.5"
    assert refs(reply) == {
        (pb.LINEAGE_NODE_KIND_ORDER, trade.order_id),
        (pb.LINEAGE_NODE_KIND_ORDER_INTENT, trade.client_order_id),
        (pb.LINEAGE_NODE_KIND_SIGNAL, trade.signal_id),
        (pb.LINEAGE_NODE_KIND_STRATEGY, "btc-momentum"),
        (pb.LINEAGE_NODE_KIND_TENANT, tenant),
        *((pb.LINEAGE_NODE_KIND_MODEL_VERSION, f"{m}@{v}") for m, v in MODELS),
    }
    # Which signal and which model versions led to this fill: the edges say.
    scored = {(e.kind, getattr(e, "from").id, e.to.id) for e in reply.edges}
    for m, v in MODELS:
        assert (pb.LINEAGE_EDGE_KIND_SCORED, f"{m}@{v}", trade.signal_id) in scored
    assert (pb.LINEAGE_EDGE_KIND_FILLED, trade.order_id, trade.fill_ids[1]) in scored
    assert (pb.LINEAGE_EDGE_KIND_FILLED, trade.order_id, trade.fill_ids[0]) not in scored  # upstream only
    assert len(reply.edges) == 7 and not reply.truncated and not reply.next_page_token
    signal = next(n for n in reply.nodes if n.kind == pb.LINEAGE_NODE_KIND_SIGNAL)
    assert signal.attributes["direction"] == "BUY" and signal.at.ToDatetime(tzinfo=UTC) == at(0)
    # The order answers the same way; a model version leads forward to the fill.
    by_order = await lineage(audit, tenant, order_id=trade.order_id)
    assert (pb.LINEAGE_NODE_KIND_SIGNAL, trade.signal_id) in refs(by_order)
    model, version = MODELS[0]
    forward = await lineage(audit, tenant, model_id=model, model_version=version)
    assert forward.direction == pb.LINEAGE_DIRECTION_DOWNSTREAM
    assert {(pb.LINEAGE_NODE_KIND_FILL, f) for f in trade.fill_ids} <= refs(forward)


async def test_everything_a_strategy_touched_in_a_time_range_page_by_page(audit: Harness) -> None:
    tenant = new_tenant()
    trades = []
    for minute in range(6):
        trade, events = trade_events(tenant, "eth-revert", minute * 10)
        trades.append(trade)
        await publish(audit, tenant, events)
    await settled(audit, tenant, 6 * 5, strategy_id="eth-revert", page_size=500)
    time_range = common.TimeRange()  # signals at minutes 10, 20 and 30
    time_range.start.FromDatetime(at(10))
    time_range.end.FromDatetime(at(40))
    seen: set[tuple[int, str]] = set()
    token, pages = "", 0
    while True:
        page = await lineage(audit, tenant, strategy_id="eth-revert", time_range=time_range, page_size=2,
                             page_token=token)  # fmt: skip
        assert page.start.id == "eth-revert" and page.direction == pb.LINEAGE_DIRECTION_DOWNSTREAM
        seen |= refs(page)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 2
    inside = trades[1:4]
    assert {i for k, i in seen if k == pb.LINEAGE_NODE_KIND_SIGNAL} == {t.signal_id for t in inside}
    assert {i for k, i in seen if k == pb.LINEAGE_NODE_KIND_FILL} == {f for t in inside for f in t.fill_ids}
    assert {i for k, i in seen if k == pb.LINEAGE_NODE_KIND_ORDER} == {t.order_id for t in inside}
    # The model versions the strategy's signals used come along (their causes).
    assert {i for k, i in seen if k == pb.LINEAGE_NODE_KIND_MODEL_VERSION} == {f"{m}@{v}" for m, v in MODELS}
    # A token is good for the request it was issued for only.
    with pytest.raises(grpc.aio.AioRpcError) as foreign:
        first = await lineage(audit, tenant, strategy_id="eth-revert", page_size=1)
        await lineage(audit, tenant, strategy_id="eth-revert", page_size=1, max_depth=3,
                      page_token=first.next_page_token)  # fmt: skip
    assert foreign.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(foreign.value).violated_fields == ["page_token"]


async def test_another_tenant_sees_nothing_of_it(audit: Harness) -> None:
    owner, other = new_tenant(), new_tenant()
    trade, events = trade_events(owner, "shared-name", 0)
    await publish(audit, owner, events)
    await settled(audit, owner, 7, execution_id=trade.fill_ids[0])
    # The fill, order, signal and a strategy of the same name: unknown to the other tenant.
    for fields in (
        {"execution_id": trade.fill_ids[0]},
        {"order_id": trade.order_id},
        {"signal_id": trade.signal_id},
        {"strategy_id": "shared-name"},
        {"model_id": MODELS[0][0], "model_version": MODELS[0][1]},
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await lineage(audit, other, **fields)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND, fields
        info = error_details(refused.value).error_info
        assert info is not None and info.reason == "AUDIT_LINEAGE_NOT_FOUND"
    # Its own strategy of that name is its own.
    mine, events = trade_events(other, "shared-name", 5)
    await publish(audit, other, events)
    reply = await settled(audit, other, 5, strategy_id="shared-name")
    assert {i for k, i in refs(reply) if k == pb.LINEAGE_NODE_KIND_SIGNAL} == {mine.signal_id}


async def test_bad_requests_are_invalid_argument(audit: Harness) -> None:
    tenant = new_tenant()
    for fields, field in (
        ({}, "start"),
        ({"model_id": "gbt-trend"}, ""),
        ({"strategy_id": "x", "model_version": "1"}, ""),
        ({"execution_id": "not-a-uuid"}, "execution_id"),
        ({"strategy_id": "x", "max_depth": 13}, "max_depth"),
        ({"strategy_id": "x", "page_token": "garbage!"}, "page_token"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await lineage(audit, tenant, **fields)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, fields
        if field:
            assert field in error_details(bad.value).violated_fields, fields
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await audit.stub.GetLineage(pb.GetLineageRequest(strategy_id="x"), timeout=10)
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
