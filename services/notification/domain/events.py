"""What notification delivers: the event types.

The delivered event types are the tenant-scoped events of orders (with their
fills), risk and the portfolio:

- ``trading.execution.v1.OrderStatusChanged``: every order state change; one
  that carries a fill is a FILL notification. (The Kafka-only
  OrderFillReported carries the same fill: notification takes fills from the
  order updates, which are durable on JetStream.)
- the four ``trading.risk.v1`` events (refusals, trading state, limits, alerts);
- ``trading.portfolio.v1.PositionChanged`` (snapshots are state, not news).
"""

from __future__ import annotations

from trading.execution.v1 import events_pb2 as execution_events
from trading.portfolio.v1 import events_pb2 as portfolio_events
from trading.risk.v1 import events_pb2 as risk_events

ORDER_STATUS_CHANGED = execution_events.OrderStatusChanged.DESCRIPTOR.full_name
ORDER_RISK_REJECTED = risk_events.OrderRiskRejected.DESCRIPTOR.full_name
TRADING_STATE_CHANGED = risk_events.TradingStateChanged.DESCRIPTOR.full_name
LIMITS_CHANGED = risk_events.LimitsChanged.DESCRIPTOR.full_name
RISK_ALERT = risk_events.RiskAlert.DESCRIPTOR.full_name
POSITION_CHANGED = portfolio_events.PositionChanged.DESCRIPTOR.full_name

ORDER_EVENT_TYPES = (ORDER_STATUS_CHANGED,)
RISK_EVENT_TYPES = (ORDER_RISK_REJECTED, TRADING_STATE_CHANGED, LIMITS_CHANGED, RISK_ALERT)
PORTFOLIO_EVENT_TYPES = (POSITION_CHANGED,)
DELIVERED_EVENT_TYPES: frozenset[str] = frozenset(
    ORDER_EVENT_TYPES + RISK_EVENT_TYPES + PORTFOLIO_EVENT_TYPES
)
