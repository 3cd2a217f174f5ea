"""How an event reads as a notification (title, body, kind, severity).

Pure functions: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from google.protobuf import message as pb_message
from trading.common.v1 import event_pb2, types_pb2
from trading.execution.v1 import events_pb2 as execution_events
from trading.execution.v1 import types_pb2 as execution_types
from trading.notification.v1 import types_pb2 as pb
from trading.portfolio.v1 import events_pb2 as portfolio_events
from trading.risk.v1 import events_pb2 as risk_events
from trading.risk.v1 import risk_service_pb2 as risk_types

from runtime.messaging import uuid7
from services.notification.domain.events import ORDER_STATUS_CHANGED, POSITION_CHANGED, RISK_EVENT_TYPES

Kind: TypeAlias = pb.NotificationKind.ValueType
Severity: TypeAlias = pb.Severity.ValueType


@dataclass(frozen=True, slots=True)
class Reading:
    """How one event reads to a person."""

    kind: Kind
    severity: Severity
    title: str
    body: str


def _side(side: int, *, done: bool) -> str:
    if side == types_pb2.SIDE_BUY:
        return "Bought" if done else "Buy"
    if side == types_pb2.SIDE_SELL:
        return "Sold" if done else "Sell"
    return "Traded" if done else "Trade"


_ORDER_TITLES: dict[int, tuple[str, Severity]] = {
    execution_types.ORDER_STATUS_NEW: ("Order received", pb.SEVERITY_INFO),
    execution_types.ORDER_STATUS_ACCEPTED: ("Order accepted", pb.SEVERITY_INFO),
    execution_types.ORDER_STATUS_PARTIALLY_FILLED: ("Order partly filled", pb.SEVERITY_INFO),
    execution_types.ORDER_STATUS_FILLED: ("Order filled", pb.SEVERITY_INFO),
    execution_types.ORDER_STATUS_PENDING_CANCEL: ("Cancel requested", pb.SEVERITY_INFO),
    execution_types.ORDER_STATUS_CANCELED: ("Order canceled", pb.SEVERITY_INFO),
    execution_types.ORDER_STATUS_REJECTED: ("Order rejected", pb.SEVERITY_WARNING),
    execution_types.ORDER_STATUS_EXPIRED: ("Order expired", pb.SEVERITY_INFO),
}

_STATE_NAMES = {
    risk_types.TRADING_STATE_ACTIVE: ("Trading active", pb.SEVERITY_INFO),
    risk_types.TRADING_STATE_REDUCING: ("Trading reduce-only", pb.SEVERITY_WARNING),
    risk_types.TRADING_STATE_HALTED: ("Trading halted", pb.SEVERITY_CRITICAL),
}

_ALERT_SEVERITY = {
    risk_events.RISK_ALERT_SEVERITY_INFO: pb.SEVERITY_INFO,
    risk_events.RISK_ALERT_SEVERITY_WARNING: pb.SEVERITY_WARNING,
    risk_events.RISK_ALERT_SEVERITY_CRITICAL: pb.SEVERITY_CRITICAL,
}


def _order_reading(event: execution_events.OrderStatusChanged) -> Reading:
    order = event.order
    title, severity = _ORDER_TITLES.get(order.status, ("Order updated", pb.SEVERITY_INFO))
    if event.HasField("fill"):
        fill = event.fill
        body = f"{_side(fill.side, done=True)} {fill.quantity.value} {fill.symbol} at {fill.price.value}"
        return Reading(pb.NOTIFICATION_KIND_FILL, severity, title, body)
    body = f"{_side(order.side, done=False)} {order.quantity.value} {order.symbol}"
    if order.status == execution_types.ORDER_STATUS_REJECTED and order.reject_reason:
        body += f": {order.reject_reason}"
    elif order.status_message:
        body += f": {order.status_message}"
    return Reading(pb.NOTIFICATION_KIND_ORDER, severity, title, body)


def _risk_reading(payload: pb_message.Message) -> Reading:
    risk = pb.NOTIFICATION_KIND_RISK
    if isinstance(payload, risk_events.OrderRiskRejected):
        reasons = "; ".join(d.message or d.code for d in payload.denials) or "refused"
        body = f"{_side(payload.side, done=False)} {payload.quantity.value} {payload.symbol}: {reasons}"
        return Reading(risk, pb.SEVERITY_WARNING, "Order refused by risk", body)
    if isinstance(payload, risk_events.TradingStateChanged):
        title, severity = _STATE_NAMES.get(payload.state, ("Trading state changed", pb.SEVERITY_WARNING))
        how = "automatically" if payload.automatic else "by an operator"
        body = f"{title} {how}" + (f": {payload.reason}" if payload.reason else "")
        return Reading(risk, severity, title, body)
    if isinstance(payload, risk_events.LimitsChanged):
        return Reading(
            risk, pb.SEVERITY_INFO, "Risk limits changed", f"Limits are now version {payload.version}"
        )
    if isinstance(payload, risk_events.RiskAlert):
        severity = _ALERT_SEVERITY.get(payload.severity, pb.SEVERITY_WARNING)
        kind = risk_events.RiskAlertKind.Name(payload.kind).removeprefix("RISK_ALERT_KIND_")
        title = "Risk alert: " + kind.replace("_", " ").lower()
        return Reading(risk, severity, title, payload.message or title)
    raise TypeError(f"not a risk event: {type(payload).__name__}")


def _position_reading(event: portfolio_events.PositionChanged) -> Reading:
    before, after = event.previous_quantity.value or "0", event.position.quantity.value or "0"
    if _is_zero(before):
        title = "Position opened"
    elif _is_zero(after):
        title = "Position closed"
    else:
        title = "Position changed"
    body = f"{event.symbol}: {before} -> {after}"
    return Reading(pb.NOTIFICATION_KIND_PORTFOLIO, pb.SEVERITY_INFO, title, body)


def _is_zero(value: str) -> bool:
    return value.lstrip("+-").replace("0", "").replace(".", "") == ""


def reading(event_type: str, payload: pb_message.Message) -> Reading | None:
    """How the event reads, or None for event types notification does not deliver."""
    if event_type == ORDER_STATUS_CHANGED and isinstance(payload, execution_events.OrderStatusChanged):
        return _order_reading(payload)
    if event_type in RISK_EVENT_TYPES:
        return _risk_reading(payload)
    if event_type == POSITION_CHANGED and isinstance(payload, portfolio_events.PositionChanged):
        return _position_reading(payload)
    return None


def to_notification(envelope: event_pb2.EventEnvelope, payload: pb_message.Message) -> pb.Notification | None:
    """The notification made from one event, or None if it is not delivered."""
    read = reading(envelope.event_type, payload)
    if read is None:
        return None
    notification = pb.Notification(
        notification_id=str(uuid7()),
        kind=read.kind,
        severity=read.severity,
        title=read.title,
        body=read.body,
        event_id=envelope.event_id,
        event_type=envelope.event_type,
        correlation_id=envelope.correlation_id,
        payload=envelope.payload,
    )
    if envelope.HasField("occurred_at"):
        notification.occurred_at.CopyFrom(envelope.occurred_at)
    return notification
