"""Who gets what: the Subscribe filter and which events a webhook gets.

Pure functions: no I/O."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from trading.notification.v1 import types_pb2 as pb

from services.notification.domain.events import DELIVERED_EVENT_TYPES


def wanted(notification: pb.Notification, kinds: Collection[int], min_severity: int) -> bool:
    """Does a Subscribe filter (kinds: empty = all; min severity: 0 = all) pass it?"""
    if kinds and notification.kind not in kinds:
        return False
    return notification.severity >= min_severity


def webhook_wants(event_types: Collection[str], event_type: str) -> bool:
    """Does a webhook subscribed to `event_types` (empty = every delivered type) get it?"""
    if event_type not in DELIVERED_EVENT_TYPES:
        return False
    return not event_types or event_type in event_types


# Producers' clocks may run a little ahead of or behind ours.
CLOCK_SKEW = timedelta(seconds=5)


def after_registration(webhook_created_at: datetime, occurred_at: datetime | None) -> bool:
    """Is the event new to the webhook? A webhook gets the events that happen
    after it is registered, not a backlog (e.g. a new consumer reading a
    stream from its start). Events without a time count as new."""
    return occurred_at is None or occurred_at >= webhook_created_at - CLOCK_SKEW
