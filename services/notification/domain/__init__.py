"""Notification's pure logic: no I/O.

- `events`: the event types notification delivers;
- `readings`: how an event reads as a notification;
- `subscriptions`: the Subscribe filter and which events a webhook gets.

The public names are re-exported here (``from services.notification import domain``).
"""

from services.notification.domain.events import (
    DELIVERED_EVENT_TYPES,
    LIMITS_CHANGED,
    ORDER_EVENT_TYPES,
    ORDER_RISK_REJECTED,
    ORDER_STATUS_CHANGED,
    PORTFOLIO_EVENT_TYPES,
    POSITION_CHANGED,
    RISK_ALERT,
    RISK_EVENT_TYPES,
    TRADING_STATE_CHANGED,
)
from services.notification.domain.readings import Kind, Reading, Severity, reading, to_notification
from services.notification.domain.subscriptions import (
    CLOCK_SKEW,
    after_registration,
    wanted,
    webhook_wants,
)

__all__ = [
    "CLOCK_SKEW",
    "DELIVERED_EVENT_TYPES",
    "LIMITS_CHANGED",
    "ORDER_EVENT_TYPES",
    "ORDER_RISK_REJECTED",
    "ORDER_STATUS_CHANGED",
    "PORTFOLIO_EVENT_TYPES",
    "POSITION_CHANGED",
    "RISK_ALERT",
    "RISK_EVENT_TYPES",
    "TRADING_STATE_CHANGED",
    "Kind",
    "Reading",
    "Severity",
    "after_registration",
    "reading",
    "to_notification",
    "wanted",
    "webhook_wants",
]
