"""The lineage graph of a tenant's trading, as nodes and edges made from events.

Pure: :func:`project` turns one event into the nodes and edges it proves
(:mod:`runtime.graph.port` types); the lineage consumer
(:class:`services.audit.consumer.LineageSubscriber`) stores them, and
GetLineage walks them. Edges point from the cause to the effect:

    tenant -runs-> strategy -generated-> signal -derived-> order intent -placed-> order -filled-> fill
                              model version -scored-> signal

Which event proves which link (the ids come from the contracts):

- ``SignalGenerated``: strategy -> signal (``signal.strategy_id``), model
  version -> signal (``signal.model_scores``, one per model that answered),
  tenant -> strategy, and signal -> intent when ``signal.client_order_id``
  is set;
- ``OrderIntentCreated``: signal -> intent (``signal_id`` ->
  ``client_order_id``);
- execution's order events (``order``): intent -> order for strategy orders
  (``order.strategy_id`` set; the intent is named by the client order id,
  which execution keeps one to one with the order);
- ``OrderFillReported``: order -> fill (``fill.execution_id``).

An order intent's node id is its client order id (the one id both decision
and execution know), with the intent id as an attribute. Every node and edge
is keyed by ids the event carries, so applying an event again (a
redelivery, a replay) writes the same keys and changes nothing; events may
arrive in any order (a fill before its order's acceptance, say).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from google.protobuf import message as pb_message
from google.protobuf.timestamp_pb2 import Timestamp
from trading.common.v1 import event_pb2
from trading.decision.v1 import decision_service_pb2 as decision
from trading.decision.v1 import events_pb2 as decision_events
from trading.execution.v1 import events_pb2 as execution_events
from trading.execution.v1 import types_pb2 as execution_types

from runtime.graph.port import Edge, Node, NodeKey

# Node kinds (the contract's LineageNodeKind, by these names).
TENANT: Final = "tenant"
STRATEGY: Final = "strategy"
MODEL_VERSION: Final = "model_version"
SIGNAL: Final = "signal"
ORDER_INTENT: Final = "order_intent"
ORDER: Final = "order"
FILL: Final = "fill"
NODE_KINDS: Final = (TENANT, STRATEGY, MODEL_VERSION, SIGNAL, ORDER_INTENT, ORDER, FILL)

# Edge kinds (the contract's LineageEdgeKind).
RUNS: Final = "runs"
GENERATED: Final = "generated"
SCORED: Final = "scored"
DERIVED: Final = "derived"
PLACED: Final = "placed"
FILLED: Final = "filled"
EDGE_KINDS: Final = (RUNS, GENERATED, SCORED, DERIVED, PLACED, FILLED)

_ORDER_EVENTS: Final = (
    execution_events.OrderAccepted,
    execution_events.OrderRejected,
    execution_events.OrderCancelRequested,
    execution_events.OrderCanceled,
    execution_events.OrderExpired,
)
# The event types the lineage consumer reads.
LINEAGE_EVENT_TYPES: Final[tuple[str, ...]] = tuple(
    m.DESCRIPTOR.full_name
    for m in (
        decision_events.SignalGenerated,
        decision_events.OrderIntentCreated,
        *_ORDER_EVENTS,
        execution_events.OrderFillReported,
    )
)
_SIDES: Final = {1: "BUY", 2: "SELL"}


@dataclass(frozen=True, slots=True)
class Lineage:
    """What one event adds to its tenant's graph."""

    tenant: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]


def model_version_id(model_id: str, version: str) -> str:
    """A model version's node id."""
    return f"{model_id}@{version}"


def _time(stamp: Timestamp, fallback: datetime) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC) if stamp.seconds or stamp.nanos else fallback


def _attrs(**values: str) -> Mapping[str, str]:
    """Attributes without the empty ones (an event that lacks a fact says nothing about it)."""
    return {k: v for k, v in values.items() if v}


def project(envelope: event_pb2.EventEnvelope, payload: pb_message.Message) -> Lineage | None:
    """The nodes and edges `payload` proves, or None when it proves none
    (another event type, a platform-wide event, a manual order's events)."""
    tenant = envelope.tenant_id
    if not tenant:
        return None
    occurred = _time(envelope.occurred_at, datetime.now(UTC))
    if isinstance(payload, decision_events.SignalGenerated):
        return _signal(tenant, payload.signal, occurred)
    if isinstance(payload, decision_events.OrderIntentCreated):
        return _intent(tenant, payload, occurred)
    if isinstance(payload, _ORDER_EVENTS):
        return _order(tenant, payload.order, occurred)
    if isinstance(payload, execution_events.OrderFillReported):
        return _fill(tenant, payload, occurred)
    return None


def _signal(tenant: str, signal: decision.Signal, occurred: datetime) -> Lineage | None:
    if not signal.signal_id or not signal.strategy_id:
        return None
    at = _time(signal.generated_at, occurred)
    strategy = NodeKey(STRATEGY, signal.strategy_id)
    key = NodeKey(SIGNAL, signal.signal_id)
    direction = decision.SignalDirection.Name(signal.direction).removeprefix("SIGNAL_DIRECTION_")
    nodes = [
        Node(NodeKey(TENANT, tenant), at),
        Node(strategy, at),
        Node(
            key,
            at,
            _attrs(
                symbol=signal.symbol,
                direction=direction,
                strength=repr(signal.strength),
                confidence=repr(signal.confidence),
                fallback="true" if signal.fallback else "",
            ),
        ),
    ]
    edges = [Edge(RUNS, NodeKey(TENANT, tenant), strategy, at), Edge(GENERATED, strategy, key, at)]
    for score in signal.model_scores:
        if not score.model_id or not score.model_version:
            continue
        model = NodeKey(MODEL_VERSION, model_version_id(score.model_id, score.model_version))
        nodes.append(Node(model, at, _attrs(model_id=score.model_id, model_version=score.model_version)))
        edges.append(Edge(SCORED, model, key, at))
    if signal.client_order_id:
        edges.append(Edge(DERIVED, key, NodeKey(ORDER_INTENT, signal.client_order_id), at))
    return Lineage(tenant, tuple(nodes), tuple(edges))


def _trade_node(
    key: NodeKey,
    at: datetime,
    trade: decision_events.OrderIntentCreated | execution_types.Order,
    **ids: str,
) -> Node:
    """The node of an intent or an order: its `ids`, then what it trades."""
    return Node(
        key,
        at,
        _attrs(
            **ids,
            strategy_id=trade.strategy_id,
            symbol=trade.symbol,
            side=_SIDES.get(trade.side, ""),
            quantity=trade.quantity.value,
        ),
    )


def _intent(tenant: str, intent: decision_events.OrderIntentCreated, occurred: datetime) -> Lineage | None:
    if not intent.signal_id or not intent.client_order_id:
        return None
    at = _time(intent.created_at, occurred)
    key = NodeKey(ORDER_INTENT, intent.client_order_id)
    node = _trade_node(key, at, intent, intent_id=intent.intent_id)
    return Lineage(tenant, (node,), (Edge(DERIVED, NodeKey(SIGNAL, intent.signal_id), key, at),))


def _order(tenant: str, order: execution_types.Order, occurred: datetime) -> Lineage | None:
    if not order.order_id:
        return None
    at = _time(order.created_at, occurred)
    key = NodeKey(ORDER, order.order_id)
    node = _trade_node(key, at, order, client_order_id=order.client_order_id)
    if not order.strategy_id or not order.client_order_id:
        return Lineage(tenant, (node,), ())  # a manual order: no intent behind it
    intent = NodeKey(ORDER_INTENT, order.client_order_id)
    return Lineage(tenant, (node,), (Edge(PLACED, intent, key, at),))


def _fill(tenant: str, event: execution_events.OrderFillReported, occurred: datetime) -> Lineage | None:
    fill = event.fill
    order_id = fill.order_id or event.order_id
    if not fill.execution_id or not order_id:
        return None
    at = _time(fill.executed_at, occurred)
    key = NodeKey(FILL, fill.execution_id)
    node = Node(
        key,
        at,
        _attrs(
            symbol=fill.symbol,
            side=_SIDES.get(fill.side, ""),
            price=fill.price.value,
            quantity=fill.quantity.value,
        ),
    )
    lineage = _order(tenant, event.order, occurred) if event.order.order_id else None
    nodes = (*(lineage.nodes if lineage else ()), node)
    edges = (*(lineage.edges if lineage else ()), Edge(FILLED, NodeKey(ORDER, order_id), key, at))
    return Lineage(tenant, nodes, edges)
