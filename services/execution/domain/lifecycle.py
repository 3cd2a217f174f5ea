"""The order life cycle: a declarative transition table and the one function
that applies an input to an order.

``TRANSITIONS`` maps (status, trigger) -> next status. :func:`apply` looks the
transition up and checks every precondition *before* it builds the new order,
so an invalid input raises a typed error and leaves the caller's order
untouched (orders are immutable; a change is a new snapshot with
``version + 1``), and an event is emitted only for a transition the table
allows. A fill whose execution id the order already has is refused
(:class:`DuplicateFill`), even after the order completed.

Inputs (venue reports, API decisions, expiry) carry their own timestamps, so
nothing here reads a clock.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Final

from domain.numbers import EXACT
from services.execution.domain.errors import DuplicateFill, InvalidFill, InvalidTransition, Overfill
from services.execution.domain.orders import CancelReason, Fill, Liquidity, Order, OrderStatus


class Trigger(enum.Enum):
    """What can happen to an order; the columns of the transition table."""

    ACCEPT = "accept"
    REJECT = "reject"
    PARTIAL_FILL = "partial_fill"  # a fill that leaves quantity working
    FILL = "fill"  # the fill that completes the order
    REQUEST_CANCEL = "request_cancel"
    CANCEL = "cancel"
    EXPIRE = "expire"


# ------------------------------------------------------------------ the table

TRANSITIONS: Final[Mapping[tuple[OrderStatus, Trigger], OrderStatus]] = MappingProxyType(
    {
        (OrderStatus.NEW, Trigger.ACCEPT): OrderStatus.ACCEPTED,
        (OrderStatus.NEW, Trigger.REJECT): OrderStatus.REJECTED,
        (OrderStatus.ACCEPTED, Trigger.PARTIAL_FILL): OrderStatus.PARTIALLY_FILLED,
        (OrderStatus.ACCEPTED, Trigger.FILL): OrderStatus.FILLED,
        (OrderStatus.ACCEPTED, Trigger.REQUEST_CANCEL): OrderStatus.PENDING_CANCEL,
        # A direct cancel (no pending step) is the venue's own: the unfilled
        # rest of an IOC/FOK order, a venue halt, or a paper venue that
        # confirms a cancel at once.
        (OrderStatus.ACCEPTED, Trigger.CANCEL): OrderStatus.CANCELED,
        (OrderStatus.ACCEPTED, Trigger.EXPIRE): OrderStatus.EXPIRED,
        (OrderStatus.PARTIALLY_FILLED, Trigger.PARTIAL_FILL): OrderStatus.PARTIALLY_FILLED,
        (OrderStatus.PARTIALLY_FILLED, Trigger.FILL): OrderStatus.FILLED,
        (OrderStatus.PARTIALLY_FILLED, Trigger.REQUEST_CANCEL): OrderStatus.PENDING_CANCEL,
        (OrderStatus.PARTIALLY_FILLED, Trigger.CANCEL): OrderStatus.CANCELED,
        (OrderStatus.PARTIALLY_FILLED, Trigger.EXPIRE): OrderStatus.EXPIRED,
        # Fills may still arrive while the venue has not confirmed the cancel.
        (OrderStatus.PENDING_CANCEL, Trigger.PARTIAL_FILL): OrderStatus.PENDING_CANCEL,
        (OrderStatus.PENDING_CANCEL, Trigger.FILL): OrderStatus.FILLED,
        (OrderStatus.PENDING_CANCEL, Trigger.CANCEL): OrderStatus.CANCELED,
        # The trading day can end before the venue answers the cancel.
        (OrderStatus.PENDING_CANCEL, Trigger.EXPIRE): OrderStatus.EXPIRED,
    }
)
# For each trigger, the statuses it is valid in (derived from the table).
TRANSITION_SOURCES: Final[Mapping[Trigger, frozenset[OrderStatus]]] = MappingProxyType(
    {t: frozenset(s for (s, tt) in TRANSITIONS if tt is t) for t in Trigger}
)


# ------------------------------------------------------------------ inputs
# What can be applied to an order: acknowledgements and reports from the venue,
# decisions of the API (cancel requests) and of time (expiry). Each carries its
# own timestamp, so apply() never reads a clock.


@dataclass(frozen=True, slots=True)
class Accept:
    """The order passed risk and the venue acknowledged it."""

    at: datetime
    venue: str = ""
    venue_order_id: str = ""


@dataclass(frozen=True, slots=True)
class Reject:
    """Risk or the venue refused the order."""

    at: datetime
    reason: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class ReportFill:
    """The venue executed (part of) the order."""

    at: datetime
    execution_id: str
    price: Decimal
    quantity: Decimal
    liquidity: Liquidity = Liquidity.TAKER
    fee: Decimal = Decimal(0)
    fee_currency: str = ""
    venue_execution_id: str = ""


@dataclass(frozen=True, slots=True)
class RequestCancel:
    """A cancel was sent to the venue; it is not confirmed yet."""

    at: datetime
    reason: CancelReason = CancelReason.CLIENT_REQUEST
    message: str = ""


@dataclass(frozen=True, slots=True)
class Cancel:
    """The venue confirmed (or itself decided) the cancel.

    ``reason`` UNSPECIFIED keeps the reason of the pending request.
    """

    at: datetime
    reason: CancelReason = CancelReason.UNSPECIFIED
    message: str = ""


@dataclass(frozen=True, slots=True)
class Expire:
    """The order reached the end of its time in force."""

    at: datetime
    message: str = ""


OrderInput = Accept | Reject | ReportFill | RequestCancel | Cancel | Expire


# ------------------------------------------------------------------ emitted events


class EventKind(enum.Enum):
    """The contract's order events (events.proto), one per applied input."""

    ACCEPTED = "OrderAccepted"
    REJECTED = "OrderRejected"
    CANCEL_REQUESTED = "OrderCancelRequested"
    CANCELED = "OrderCanceled"
    EXPIRED = "OrderExpired"
    FILL_REPORTED = "OrderFillReported"


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """A domain event: the order after the step, its status before, and the fill if one caused it."""

    kind: EventKind
    order: Order
    previous_status: OrderStatus
    fill: Fill | None = None


# ------------------------------------------------------------------ the machine


def next_status(status: OrderStatus, trigger: Trigger) -> OrderStatus:
    """The table's answer, or InvalidTransition."""
    try:
        return TRANSITIONS[(status, trigger)]
    except KeyError:
        raise InvalidTransition(status, trigger) from None


def trigger_of(order: Order, event: OrderInput) -> Trigger:
    """Which trigger an input fires on this order (a fill is FILL only if it completes it)."""
    match event:
        case Accept():
            return Trigger.ACCEPT
        case Reject():
            return Trigger.REJECT
        case ReportFill():
            total = EXACT.add(order.filled_quantity, event.quantity)
            return Trigger.FILL if total >= order.quantity else Trigger.PARTIAL_FILL
        case RequestCancel():
            return Trigger.REQUEST_CANCEL
        case Cancel():
            return Trigger.CANCEL
        case Expire():
            return Trigger.EXPIRE


def apply(order: Order, event: OrderInput) -> tuple[Order, tuple[OrderEvent, ...]]:
    """Apply one input: (the next snapshot, the events it emits).

    Every check runs before anything is built, so on any error the caller
    still holds the unchanged order. Checks: duplicate execution id (first, so
    a redelivered fill is recognised as such even after the order completed),
    then the transition table, then fill sanity and overfill.
    """
    if isinstance(event, ReportFill) and event.execution_id in order.execution_ids:
        raise DuplicateFill(event.execution_id)
    trigger = trigger_of(order, event)
    status = next_status(order.status, trigger)
    base = replace(order, status=status, updated_at=event.at, version=order.version + 1)
    match event:
        case Accept():
            new = replace(base, venue=event.venue or order.venue, venue_order_id=event.venue_order_id)
            return new, (OrderEvent(EventKind.ACCEPTED, new, order.status),)
        case Reject():
            new = replace(base, reject_reason=event.reason, status_message=event.message)
            return new, (OrderEvent(EventKind.REJECTED, new, order.status),)
        case ReportFill():
            return _apply_fill(order, base, event)
        case RequestCancel():
            new = replace(base, cancel_reason=event.reason, status_message=event.message)
            return new, (OrderEvent(EventKind.CANCEL_REQUESTED, new, order.status),)
        case Cancel():
            reason = event.reason
            if reason is CancelReason.UNSPECIFIED:
                reason = order.cancel_reason
            new = replace(base, cancel_reason=reason, status_message=event.message or order.status_message)
            return new, (OrderEvent(EventKind.CANCELED, new, order.status),)
        case Expire():
            new = replace(base, status_message=event.message)
            return new, (OrderEvent(EventKind.EXPIRED, new, order.status),)


def _apply_fill(order: Order, base: Order, event: ReportFill) -> tuple[Order, tuple[OrderEvent, ...]]:
    if not event.quantity.is_finite() or event.quantity <= 0:
        raise InvalidFill("fill quantity must be greater than zero")
    if not event.price.is_finite() or event.price <= 0:
        raise InvalidFill("fill price must be greater than zero")
    filled = EXACT.add(order.filled_quantity, event.quantity)
    if filled > order.quantity:
        raise Overfill(order.quantity, order.filled_quantity, event.quantity)
    fill = Fill(
        execution_id=event.execution_id,
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        price=event.price,
        quantity=event.quantity,
        liquidity=event.liquidity,
        executed_at=event.at,
        fee=event.fee,
        fee_currency=event.fee_currency,
        venue_execution_id=event.venue_execution_id,
    )
    new = replace(
        base,
        filled_quantity=filled,
        filled_notional=EXACT.add(order.filled_notional, fill.notional),
        execution_ids=order.execution_ids | {event.execution_id},
    )
    return new, (OrderEvent(EventKind.FILL_REPORTED, new, order.status, fill),)


def apply_all(order: Order, events: Iterable[OrderInput]) -> tuple[Order, tuple[OrderEvent, ...]]:
    """Apply inputs in order; all or nothing (an error leaves the caller's order as it was)."""
    emitted: list[OrderEvent] = []
    for event in events:
        order, out = apply(order, event)
        emitted.extend(out)
    return order, tuple(emitted)


def is_cancelable(order: Order) -> bool:
    """Whether a cancel request is valid now (the API answers NOT_CANCELABLE otherwise)."""
    return order.status in TRANSITION_SOURCES[Trigger.REQUEST_CANCEL]
