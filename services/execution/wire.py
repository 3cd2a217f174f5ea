"""The contract's (protobuf) forms of execution's domain values.

Domain -> wire: orders, fills and the order events (the durable Kafka
payloads and the low-latency NATS ``OrderStatusChanged``); wire -> domain:
quotes (marketdata's), and order snapshots (audit rebuilds orders from the
events it stored). Decimals on the wire carry at most 12 fractional digits.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from decimal import Decimal
from typing import TypeVar

from google.protobuf import timestamp_pb2
from trading.common.v1 import decimal_pb2, market_pb2
from trading.common.v1 import types_pb2 as common_types_pb2
from trading.execution.v1 import events_pb2, types_pb2

from domain.numbers import ROUNDING
from runtime.decimals import from_proto as decimal_from_proto
from runtime.decimals import to_proto as decimal_to_proto
from services.execution.domain import (
    WIRE_QUANTUM,
    CancelReason,
    EventKind,
    Fill,
    InvalidOrder,
    Order,
    OrderEvent,
    OrderStatus,
    OrderType,
    Quote,
    Side,
    TimeInForce,
)


def quote_from_proto(msg: market_pb2.Quote) -> Quote:
    """The domain quote of the contract's Quote."""
    return Quote(
        symbol=msg.symbol,
        bid=decimal_from_proto(msg.bid_price),
        bid_size=decimal_from_proto(msg.bid_size),
        ask=decimal_from_proto(msg.ask_price),
        ask_size=decimal_from_proto(msg.ask_size),
        sequence=msg.sequence,
    )


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def _datetime(value: timestamp_pb2.Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


def _wire(value: Decimal) -> decimal_pb2.Decimal:
    return decimal_to_proto(value.quantize(WIRE_QUANTUM, context=ROUNDING))


def order_to_proto(order: Order) -> types_pb2.Order:
    """The contract's Order snapshot of a domain order."""
    msg = types_pb2.Order(
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=common_types_pb2.Side.ValueType(order.side.value),
        type=market_pb2.OrderType.ValueType(order.type.value),
        time_in_force=types_pb2.TimeInForce.ValueType(order.time_in_force.value),
        quantity=decimal_to_proto(order.quantity),
        status=types_pb2.OrderStatus.ValueType(order.status.value),
        filled_quantity=decimal_to_proto(order.filled_quantity),
        remaining_quantity=decimal_to_proto(order.remaining_quantity),
        reject_reason=order.reject_reason,
        cancel_reason=types_pb2.CancelReason.ValueType(order.cancel_reason.value),
        status_message=order.status_message,
        strategy_id=order.strategy_id,
        venue=order.venue,
        venue_order_id=order.venue_order_id,
        created_at=_timestamp(order.created_at),
        updated_at=_timestamp(order.updated_at),
        version=order.version,
    )
    if order.limit_price is not None:
        msg.limit_price.CopyFrom(decimal_to_proto(order.limit_price))
    average = order.average_fill_price
    if average is not None:
        msg.average_fill_price.CopyFrom(decimal_to_proto(average))
    return msg


_E = TypeVar("_E", bound=enum.IntEnum)


def _enum(kind: type[_E], value: int, what: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        raise InvalidOrder(f"{what} {value} is not a known value") from None


def order_from_proto(
    msg: types_pb2.Order,
    *,
    tenant_id: str,
    execution_ids: frozenset[str] = frozenset(),
    filled_notional: Decimal | None = None,
) -> Order:
    """A domain order from a contract snapshot (the tenant is not in the message).

    The snapshot's average price is rounded to 12 places, so the exact notional
    is taken from ``filled_notional`` when the caller stored it; otherwise it is
    rebuilt as average * filled (exact only when the average was).
    """
    filled = decimal_from_proto(msg.filled_quantity)
    if filled_notional is None:
        average = decimal_from_proto(msg.average_fill_price)
        filled_notional = ROUNDING.multiply(average, filled)
    return Order(
        order_id=msg.order_id,
        tenant_id=tenant_id,
        client_order_id=msg.client_order_id,
        symbol=msg.symbol,
        side=_enum(Side, msg.side, "side"),
        type=_enum(OrderType, msg.type, "type"),
        time_in_force=_enum(TimeInForce, msg.time_in_force, "time_in_force"),
        quantity=decimal_from_proto(msg.quantity),
        limit_price=decimal_from_proto(msg.limit_price) if msg.HasField("limit_price") else None,
        created_at=_datetime(msg.created_at),
        updated_at=_datetime(msg.updated_at),
        status=_enum(OrderStatus, msg.status, "status"),
        filled_quantity=filled,
        filled_notional=filled_notional,
        execution_ids=execution_ids,
        reject_reason=msg.reject_reason,
        cancel_reason=_enum(CancelReason, msg.cancel_reason, "cancel_reason"),
        status_message=msg.status_message,
        strategy_id=msg.strategy_id,
        venue=msg.venue,
        venue_order_id=msg.venue_order_id,
        version=msg.version,
    )


def fill_to_proto(fill: Fill) -> types_pb2.Fill:
    """The contract's Fill. The fee is set only when its currency is known."""
    msg = types_pb2.Fill(
        execution_id=fill.execution_id,
        order_id=fill.order_id,
        client_order_id=fill.client_order_id,
        symbol=fill.symbol,
        side=common_types_pb2.Side.ValueType(fill.side.value),
        price=decimal_to_proto(fill.price),
        quantity=decimal_to_proto(fill.quantity),
        liquidity=types_pb2.Liquidity.ValueType(fill.liquidity.value),
        venue_execution_id=fill.venue_execution_id,
        executed_at=_timestamp(fill.executed_at),
    )
    if fill.fee_currency:
        msg.fee.currency = fill.fee_currency
        msg.fee.amount.CopyFrom(_wire(fill.fee))
    return msg


EventPayload = (
    events_pb2.OrderAccepted
    | events_pb2.OrderRejected
    | events_pb2.OrderCancelRequested
    | events_pb2.OrderCanceled
    | events_pb2.OrderExpired
    | events_pb2.OrderFillReported
)


def event_to_proto(event: OrderEvent) -> EventPayload:
    """The durable (Kafka, via the outbox) payload of a domain event."""
    order = order_to_proto(event.order)
    oid = event.order.order_id
    match event.kind:
        case EventKind.ACCEPTED:
            return events_pb2.OrderAccepted(order_id=oid, order=order)
        case EventKind.REJECTED:
            return events_pb2.OrderRejected(order_id=oid, order=order)
        case EventKind.CANCEL_REQUESTED:
            return events_pb2.OrderCancelRequested(order_id=oid, order=order)
        case EventKind.CANCELED:
            return events_pb2.OrderCanceled(order_id=oid, order=order)
        case EventKind.EXPIRED:
            return events_pb2.OrderExpired(order_id=oid, order=order)
        case EventKind.FILL_REPORTED:
            assert event.fill is not None  # apply() always attaches the fill
            return events_pb2.OrderFillReported(order_id=oid, fill=fill_to_proto(event.fill), order=order)


def status_changed_to_proto(event: OrderEvent) -> events_pb2.OrderStatusChanged:
    """The low-latency (NATS) form of any domain event."""
    msg = events_pb2.OrderStatusChanged(
        order_id=event.order.order_id,
        symbol=event.order.symbol,
        order=order_to_proto(event.order),
        previous_status=types_pb2.OrderStatus.ValueType(event.previous_status.value),
    )
    if event.fill is not None:
        msg.fill.CopyFrom(fill_to_proto(event.fill))
    return msg
