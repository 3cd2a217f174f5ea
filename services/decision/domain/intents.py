"""The order intent's life cycle: its statuses, what moves it, and when a
pending intent may be retried or is due to expire (pure logic, no I/O)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Final


class IntentStatus(enum.IntEnum):
    """trading.decision.v1.IntentStatus (same numbers)."""

    PENDING = 1
    PLACED = 2
    REFUSED = 3
    EXPIRED = 4


class IntentTrigger(enum.Enum):
    """What moves an intent: execution's answer, or the time-to-live running out."""

    PLACED = "placed"  # PlaceOrder answered with an order
    REFUSED = "refused"  # PlaceOrder refused for good (risk denial, bad request)
    EXPIRED = "expired"  # no answer within the time-to-live


# The intent life cycle, declaratively (like execution's order TRANSITIONS):
# only a PENDING intent moves, and every move ends it. EXPIRED is terminal
# like the others: a late answer for an expired intent changes nothing
# (storage guards every update with "still pending"), because the strategy
# has already been told the intent is given up.
INTENT_TRANSITIONS: Final[Mapping[tuple[IntentStatus, IntentTrigger], IntentStatus]] = MappingProxyType(
    {
        (IntentStatus.PENDING, IntentTrigger.PLACED): IntentStatus.PLACED,
        (IntentStatus.PENDING, IntentTrigger.REFUSED): IntentStatus.REFUSED,
        (IntentStatus.PENDING, IntentTrigger.EXPIRED): IntentStatus.EXPIRED,
    }
)
TERMINAL_INTENT_STATUSES: Final = frozenset(IntentStatus) - {IntentStatus.PENDING}


class InvalidIntentTransition(Exception):
    """A trigger that does not apply to the intent's status (e.g. expiring a placed one)."""


def intent_transition(status: IntentStatus, trigger: IntentTrigger) -> IntentStatus:
    """The status after `trigger`, or InvalidIntentTransition."""
    try:
        return INTENT_TRANSITIONS[(status, trigger)]
    except KeyError:
        raise InvalidIntentTransition(f"{trigger.value} does not apply to a {status.name} intent") from None


def intent_status(*, order_id: str | None, order_error: str | None, expired: bool) -> IntentStatus:
    """The status an intent's stored columns stand for (the row is the state)."""
    if order_id is not None:
        return IntentStatus.PLACED
    if order_error is not None:
        return IntentStatus.REFUSED
    return IntentStatus.EXPIRED if expired else IntentStatus.PENDING


def intent_expiry_cutoff(now: datetime, ttl: timedelta) -> datetime:
    """Intents created at or before this instant are due to expire at `now`."""
    return now - ttl


def intent_is_due(created_at: datetime, now: datetime, ttl: timedelta) -> bool:
    """True when a pending intent created at `created_at` has outlived `ttl`."""
    return created_at <= intent_expiry_cutoff(now, ttl)


def intent_retry_cutoff(now: datetime, ttl: timedelta, answer_within: timedelta) -> datetime:
    """Pending intents created after this instant may still be placed at `now`."""
    return now + answer_within - ttl


def intent_may_retry(created_at: datetime, now: datetime, ttl: timedelta, answer_within: timedelta) -> bool:
    """True when a pending intent may be placed (again) now: only while its
    answer (at most `answer_within`, the PlaceOrder deadline) would still come
    before it expires, so no placement is in flight when the sweeper gives it
    up and EXPIRED stays terminal in practice, not only in the table."""
    return created_at > intent_retry_cutoff(now, ttl, answer_within)
