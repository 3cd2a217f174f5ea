"""The lineage projection (services.audit.domain.lineage): which nodes and edges each
event proves, with the ids the contracts link them by."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import message as pb_message
from trading.common.v1 import event_pb2
from trading.common.v1 import types_pb2 as common_types
from trading.decision.v1 import decision_service_pb2 as decision
from trading.decision.v1 import events_pb2 as decision_events
from trading.execution.v1 import events_pb2 as execution_events
from trading.execution.v1 import types_pb2 as execution_types
from trading.marketdata.v1 import events_pb2 as marketdata_events

from runtime.graph import Edge, NodeKey
from runtime.messaging import new_envelope
from services.audit.domain import lineage
from services.audit.domain.lineage import LINEAGE_EVENT_TYPES, project

TENANT = "tenant-a"
T = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def envelope(payload: pb_message.Message, tenant: str = TENANT) -> event_pb2.EventEnvelope:
    return new_envelope(payload, tenant_id=tenant, correlation_id="c-1", producer="test", occurred_at=T)


def signal_event(client_order_id: str = "sig-s1") -> decision_events.SignalGenerated:
    signal = decision.Signal(
        signal_id="s1",
        strategy_id="momentum",
        symbol="BTC-USD",
        direction=decision.SIGNAL_DIRECTION_BUY,
        strength=0.5,
        client_order_id=client_order_id,
        model_scores=[
            decision.ModelScore(model_id="gbt", model_version="2026-11-01.1"),
            decision.ModelScore(model_id="logreg", model_version="2026-11-02.3"),
            decision.ModelScore(model_id="broken", model_version=""),  # answered nothing usable
        ],
    )
    signal.generated_at.FromDatetime(T)
    return decision_events.SignalGenerated(symbol="BTC-USD", signal=signal)


def order(strategy_id: str = "momentum") -> execution_types.Order:
    o = execution_types.Order(
        order_id="o1",
        client_order_id="sig-s1",
        symbol="BTC-USD",
        side=common_types.SIDE_BUY,
        strategy_id=strategy_id,
    )
    o.quantity.value = "0.5"
    o.created_at.FromDatetime(T)
    return o


def test_a_signal_links_its_tenant_strategy_models_and_intent() -> None:
    found = project(envelope(signal_event()), signal_event())
    assert found is not None and found.tenant == TENANT
    signal, strategy = NodeKey(lineage.SIGNAL, "s1"), NodeKey(lineage.STRATEGY, "momentum")
    gbt = NodeKey(lineage.MODEL_VERSION, "gbt@2026-11-01.1")
    assert set(found.edges) == {
        Edge(lineage.RUNS, NodeKey(lineage.TENANT, TENANT), strategy, T),
        Edge(lineage.GENERATED, strategy, signal, T),
        Edge(lineage.SCORED, gbt, signal, T),
        Edge(lineage.SCORED, NodeKey(lineage.MODEL_VERSION, "logreg@2026-11-02.3"), signal, T),
        Edge(lineage.DERIVED, signal, NodeKey(lineage.ORDER_INTENT, "sig-s1"), T),
    }
    nodes = {n.key: n for n in found.nodes}
    assert nodes[signal].attrs == {
        "symbol": "BTC-USD",
        "direction": "BUY",
        "strength": "0.5",
        "confidence": "0.0",
    }
    assert nodes[gbt].attrs == {"model_id": "gbt", "model_version": "2026-11-01.1"}
    assert nodes[signal].at == T
    # A HOLD or cooled-down signal has no intent.
    held = project(envelope(signal_event("")), signal_event(""))
    assert held is not None and all(e.kind != lineage.DERIVED for e in held.edges)


def test_intent_order_and_fill_link_by_client_order_id_and_order_id() -> None:
    intent = decision_events.OrderIntentCreated(
        intent_id="i1",
        strategy_id="momentum",
        signal_id="s1",
        client_order_id="sig-s1",
        symbol="BTC-USD",
        side=common_types.SIDE_BUY,
    )
    intent.quantity.value = "0.5"
    found = project(envelope(intent), intent)
    assert found is not None
    assert found.edges == (
        Edge(lineage.DERIVED, NodeKey(lineage.SIGNAL, "s1"), NodeKey(lineage.ORDER_INTENT, "sig-s1"), T),
    )
    assert (
        found.nodes[0].attrs["intent_id"] == "i1" and found.nodes[0].at == T
    )  # no created_at: the envelope's

    accepted = execution_events.OrderAccepted(order_id="o1", order=order())
    placed = project(envelope(accepted), accepted)
    assert placed is not None
    assert placed.edges == (
        Edge(lineage.PLACED, NodeKey(lineage.ORDER_INTENT, "sig-s1"), NodeKey(lineage.ORDER, "o1"), T),
    )

    fill = execution_types.Fill(
        execution_id="f1", order_id="o1", symbol="BTC-USD", side=common_types.SIDE_BUY
    )
    fill.price.value, fill.quantity.value = "100.5", "0.5"
    fill.executed_at.FromDatetime(T)
    reported = execution_events.OrderFillReported(order_id="o1", fill=fill, order=order())
    filled = project(envelope(reported), reported)
    assert filled is not None
    assert Edge(lineage.FILLED, NodeKey(lineage.ORDER, "o1"), NodeKey(lineage.FILL, "f1"), T) in filled.edges
    assert {n.key: n for n in filled.nodes}[NodeKey(lineage.FILL, "f1")].attrs == {
        "symbol": "BTC-USD", "side": "BUY", "price": "100.5", "quantity": "0.5"
    }  # fmt: skip


def test_what_proves_no_lineage_is_skipped() -> None:
    manual = execution_events.OrderAccepted(order_id="o1", order=order(strategy_id=""))
    found = project(envelope(manual), manual)
    assert found is not None and found.edges == ()  # the order alone: no intent behind it
    tick = marketdata_events.Tick(symbol="BTC-USD")
    assert project(envelope(tick, tenant=""), tick) is None
    assert project(envelope(signal_event(), tenant=""), signal_event()) is None
    assert (
        len(LINEAGE_EVENT_TYPES) == 8 and "trading.execution.v1.OrderStatusChanged" not in LINEAGE_EVENT_TYPES
    )
