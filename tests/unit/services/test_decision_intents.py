"""The order-intent life cycle (services.decision.domain), pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from trading.decision.v1 import decision_service_pb2 as pb

from services.decision.domain import (
    INTENT_TRANSITIONS,
    TERMINAL_INTENT_STATUSES,
    IntentStatus,
    IntentTrigger,
    InvalidIntentTransition,
    intent_is_due,
    intent_may_retry,
    intent_status,
    intent_transition,
)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
TTL = timedelta(minutes=10)
ANSWER = timedelta(seconds=2)


def test_statuses_have_the_contract_numbers() -> None:
    assert {s.name: int(s) for s in IntentStatus} == {
        pb.IntentStatus.Name(v).removeprefix("INTENT_STATUS_"): v
        for v in pb.IntentStatus.values()
        if v != pb.INTENT_STATUS_UNSPECIFIED
    }


@pytest.mark.parametrize(
    ("trigger", "after"),
    [
        (IntentTrigger.PLACED, IntentStatus.PLACED),
        (IntentTrigger.REFUSED, IntentStatus.REFUSED),
        (IntentTrigger.EXPIRED, IntentStatus.EXPIRED),
    ],
)
def test_a_pending_intent_moves_once_to_a_terminal_status(
    trigger: IntentTrigger, after: IntentStatus
) -> None:
    assert intent_transition(IntentStatus.PENDING, trigger) is after
    assert after in TERMINAL_INTENT_STATUSES


@pytest.mark.parametrize("status", sorted(TERMINAL_INTENT_STATUSES))
@pytest.mark.parametrize("trigger", list(IntentTrigger))
def test_terminal_intents_never_move(status: IntentStatus, trigger: IntentTrigger) -> None:
    with pytest.raises(InvalidIntentTransition, match=status.name):
        intent_transition(status, trigger)


def test_only_pending_is_a_source() -> None:
    assert {source for source, _ in INTENT_TRANSITIONS} == {IntentStatus.PENDING}


def test_an_intent_is_due_once_it_outlived_the_ttl() -> None:
    assert not intent_is_due(NOW - TTL + timedelta(microseconds=1), NOW, TTL)
    assert intent_is_due(NOW - TTL, NOW, TTL)
    assert intent_is_due(NOW - 2 * TTL, NOW, TTL)


def test_retries_stop_before_expiry_so_no_answer_is_in_flight_when_it_expires() -> None:
    created = NOW - TTL + ANSWER + timedelta(seconds=1)
    assert intent_may_retry(created, NOW, TTL, ANSWER)
    assert not intent_may_retry(NOW - TTL + ANSWER, NOW, TTL, ANSWER)
    # Whenever a retry is allowed, its answer comes before the intent is due.
    for age_s in range(0, 700, 7):
        created = NOW - timedelta(seconds=age_s)
        if intent_may_retry(created, NOW, TTL, ANSWER):
            assert not intent_is_due(created, NOW + ANSWER, TTL)


def test_the_stored_columns_name_the_status() -> None:
    assert intent_status(order_id=None, order_error=None, expired=False) is IntentStatus.PENDING
    assert intent_status(order_id="o-1", order_error=None, expired=False) is IntentStatus.PLACED
    assert intent_status(order_id=None, order_error="RISK: no", expired=False) is IntentStatus.REFUSED
    assert intent_status(order_id=None, order_error=None, expired=True) is IntentStatus.EXPIRED
