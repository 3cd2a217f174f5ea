"""Pure order logic of the execution service: no I/O, no clock, no randomness.

- The order life cycle is a declarative transition table, ``TRANSITIONS``:
  (status, trigger) -> next status. :func:`apply` looks the transition up and
  checks every precondition *before* it builds the new order, so an invalid
  input raises a typed error and leaves the caller's order untouched (orders
  are immutable; a change is a new snapshot with ``version + 1``).
- Time in force (IOC/FOK/GTC/DAY) and the paper venue's matching are pure
  functions that return the inputs to apply (fills, cancels, expiries), so the
  table stays the only place that decides what may happen to an order.
- Prices and quantities are :class:`decimal.Decimal`. Sums of fills are kept
  exact (an arithmetic context that traps any rounding); the volume-weighted
  average price is derived from the exact notional and rounded only for the
  wire (the contract's Decimal carries at most 12 fractional digits).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
)
from types import MappingProxyType
from typing import Final, TypeVar

from google.protobuf import timestamp_pb2
from trading.common.v1 import decimal_pb2, market_pb2
from trading.common.v1 import types_pb2 as common_types_pb2
from trading.execution.v1 import events_pb2, types_pb2

from domain.positions import Side as Side  # the shared vocabulary, re-exported
from runtime.decimals import from_proto as decimal_from_proto
from runtime.decimals import to_proto as decimal_to_proto

# --------------------------------------------------------------------------- enums
# Mirrors of the contract's enums with the same numbers, so domain code reads
# ``OrderStatus.FILLED`` instead of protobuf ints; a unit test pins them to the
# contract.


class OrderType(enum.IntEnum):
    """trading.common.v1.OrderType."""

    MARKET = 1
    LIMIT = 2


class TimeInForce(enum.IntEnum):
    """trading.execution.v1.TimeInForce."""

    DAY = 1
    GTC = 2
    IOC = 3
    FOK = 4


class OrderStatus(enum.IntEnum):
    """trading.execution.v1.OrderStatus."""

    NEW = 1
    ACCEPTED = 2
    PARTIALLY_FILLED = 3
    FILLED = 4
    PENDING_CANCEL = 5
    CANCELED = 6
    REJECTED = 7
    EXPIRED = 8


class CancelReason(enum.IntEnum):
    """trading.execution.v1.CancelReason (UNSPECIFIED means "not canceled")."""

    UNSPECIFIED = 0
    CLIENT_REQUEST = 1
    RISK = 2
    UNFILLED_REMAINDER = 3
    VENUE = 4


class Liquidity(enum.IntEnum):
    """trading.execution.v1.Liquidity."""

    UNSPECIFIED = 0
    MAKER = 1
    TAKER = 2


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

TERMINAL_STATUSES: Final[frozenset[OrderStatus]] = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)
OPEN_STATUSES: Final[frozenset[OrderStatus]] = frozenset(set(OrderStatus) - TERMINAL_STATUSES)
# For each trigger, the statuses it is valid in (derived from the table).
TRANSITION_SOURCES: Final[Mapping[Trigger, frozenset[OrderStatus]]] = MappingProxyType(
    {t: frozenset(s for (s, tt) in TRANSITIONS if tt is t) for t in Trigger}
)
# Orders the venue matches against quotes (PENDING_CANCEL is waiting to leave the book).
WORKING_STATUSES: Final[frozenset[OrderStatus]] = frozenset(
    {OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED}
)

# The contract's Decimal allows at most 12 fractional digits.
WIRE_QUANTUM: Final = Decimal("1e-12")

# Sums and products of contract-sized numbers (<= 30 significant digits) fit
# in 100 digits; trapping Inexact turns any silent rounding into an error.
_EXACT: Final = Context(prec=100, traps=[Inexact, InvalidOperation, DivisionByZero, Overflow])
_ROUNDING: Final = Context(prec=100, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero])


# ------------------------------------------------------------------ errors


class OrderError(Exception):
    """Base of every domain error of execution."""


class InvalidOrder(OrderError):
    """The order's own fields are inconsistent (checked when it is created)."""


class InvalidTransition(OrderError):
    """The table has no transition for (status, trigger); the order is unchanged."""

    def __init__(self, status: OrderStatus, trigger: Trigger) -> None:
        super().__init__(f"cannot {trigger.value} an order in status {status.name}")
        self.status = status
        self.trigger = trigger


class InvalidFill(OrderError):
    """A fill with a non-positive quantity or price."""


class DuplicateFill(OrderError):
    """A fill whose execution id the order already has (a redelivery)."""

    def __init__(self, execution_id: str) -> None:
        super().__init__(f"execution {execution_id} was already applied")
        self.execution_id = execution_id


class Overfill(OrderError):
    """A fill that would take the filled quantity above the order quantity."""

    def __init__(self, quantity: Decimal, filled: Decimal, fill_quantity: Decimal) -> None:
        super().__init__(
            f"fill of {fill_quantity} exceeds remaining {quantity - filled} (ordered {quantity})"
        )
        self.quantity = quantity
        self.filled = filled
        self.fill_quantity = fill_quantity


# ------------------------------------------------------------------ values


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution of an order."""

    execution_id: str
    order_id: str
    client_order_id: str
    symbol: str
    side: Side
    price: Decimal
    quantity: Decimal
    liquidity: Liquidity
    executed_at: datetime
    fee: Decimal = Decimal(0)
    fee_currency: str = ""
    venue_execution_id: str = ""

    @property
    def notional(self) -> Decimal:
        """price * quantity, exact."""
        return _EXACT.multiply(self.price, self.quantity)


@dataclass(frozen=True, slots=True)
class Order:
    """An order snapshot. Immutable: :func:`apply` returns the next snapshot."""

    order_id: str
    tenant_id: str
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce
    quantity: Decimal
    limit_price: Decimal | None
    created_at: datetime
    updated_at: datetime
    status: OrderStatus = OrderStatus.NEW
    filled_quantity: Decimal = Decimal(0)
    # Exact sum of price * quantity over the fills: the source of the average
    # price, and what cash reconciles against (never average * quantity).
    filled_notional: Decimal = Decimal(0)
    # Execution ids already applied, so a redelivered fill is refused.
    execution_ids: frozenset[str] = field(default_factory=frozenset)
    reject_reason: str = ""
    cancel_reason: CancelReason = CancelReason.UNSPECIFIED
    status_message: str = ""
    strategy_id: str = ""
    venue: str = ""
    venue_order_id: str = ""
    version: int = 1

    @property
    def is_terminal(self) -> bool:
        """True once the order can never change again."""
        return self.status in TERMINAL_STATUSES

    @property
    def is_working(self) -> bool:
        """True while the venue may match it against quotes."""
        return self.status in WORKING_STATUSES

    @property
    def open_quantity(self) -> Decimal:
        """Quantity not yet filled (whatever the status)."""
        return _EXACT.subtract(self.quantity, self.filled_quantity)

    @property
    def remaining_quantity(self) -> Decimal:
        """The contract's remaining quantity: open quantity, 0 once terminal."""
        return Decimal(0) if self.is_terminal else self.open_quantity

    @property
    def average_fill_price(self) -> Decimal | None:
        """Volume-weighted average fill price (to 12 places), None before any fill."""
        if self.filled_quantity == 0:
            return None
        return _ROUNDING.divide(self.filled_notional, self.filled_quantity).quantize(
            WIRE_QUANTUM, context=_ROUNDING
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


# ------------------------------------------------------------------ creation


def new_order(
    *,
    order_id: str,
    tenant_id: str,
    client_order_id: str,
    symbol: str,
    side: Side,
    type: OrderType,
    time_in_force: TimeInForce,
    quantity: Decimal,
    limit_price: Decimal | None,
    created_at: datetime,
    strategy_id: str = "",
    venue: str = "",
) -> Order:
    """A NEW order (version 1), after checking the rules the contract states."""
    if not quantity.is_finite() or quantity <= 0:
        raise InvalidOrder("quantity must be greater than zero")
    if type is OrderType.LIMIT:
        if limit_price is None:
            raise InvalidOrder("limit_price is required for LIMIT orders")
        if not limit_price.is_finite() or limit_price <= 0:
            raise InvalidOrder("limit_price must be greater than zero")
    elif limit_price is not None:
        raise InvalidOrder("limit_price must not be set for MARKET orders")
    if created_at.tzinfo is None:
        raise InvalidOrder("created_at must be timezone-aware")
    return Order(
        order_id=order_id,
        tenant_id=tenant_id,
        client_order_id=client_order_id,
        symbol=symbol,
        side=side,
        type=type,
        time_in_force=time_in_force,
        quantity=quantity,
        limit_price=limit_price,
        created_at=created_at,
        updated_at=created_at,
        strategy_id=strategy_id,
        venue=venue,
    )


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
            total = _EXACT.add(order.filled_quantity, event.quantity)
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
    filled = _EXACT.add(order.filled_quantity, event.quantity)
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
        filled_notional=_EXACT.add(order.filled_notional, fill.notional),
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


# ------------------------------------------------------------------ quotes and matching


@dataclass(frozen=True, slots=True)
class Quote:
    """Top of book of one instrument. A side with a non-positive price or size offers nothing."""

    symbol: str
    bid: Decimal
    bid_size: Decimal
    ask: Decimal
    ask_size: Decimal
    sequence: int = 0


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


_EXECUTION_NAMESPACE: Final = uuid.UUID("6f1c1c2e-3b0a-4d55-9a57-0e9f5e0c2a11")


def derive_execution_id(order_id: str, quote_sequence: int) -> str:
    """A deterministic execution id for the fill of an order on a quote.

    Matching on top of book gives at most one fill per (order, quote), so the
    pair identifies it; re-running the match on the same quote (a replay after
    a crash) yields the same id, which apply() refuses as a duplicate.
    """
    return str(uuid.uuid5(_EXECUTION_NAMESPACE, f"{order_id}/{quote_sequence}"))


def is_marketable(order: Order, quote: Quote) -> bool:
    """Whether the order would trade against the opposite touch of this quote now."""
    price, size = (quote.ask, quote.ask_size) if order.side is Side.BUY else (quote.bid, quote.bid_size)
    if price <= 0 or size <= 0:
        return False
    if order.type is OrderType.MARKET:
        return True
    assert order.limit_price is not None  # new_order guarantees it for LIMIT
    return price <= order.limit_price if order.side is Side.BUY else price >= order.limit_price


def match_quote(
    order: Order,
    quote: Quote,
    *,
    at: datetime,
    incoming: bool,
    execution_id: str | None = None,
) -> tuple[ReportFill, ...]:
    """The fills the paper venue gives the order on this quote, now.

    A marketable order trades against the opposite touch, up to the size shown
    there (a partial fill when that is less than the open quantity). An
    ``incoming`` order (just arrived) takes liquidity at the touch price
    (TAKER); a limit order that was resting when the market moved through it
    fills at its own limit price, as the maker it was. Non-marketable orders,
    quotes of another symbol and orders that are not working get nothing.
    """
    if not order.is_working or quote.symbol != order.symbol or not is_marketable(order, quote):
        return ()
    touch, size = (quote.ask, quote.ask_size) if order.side is Side.BUY else (quote.bid, quote.bid_size)
    resting_limit = order.type is OrderType.LIMIT and not incoming
    price = order.limit_price if resting_limit and order.limit_price is not None else touch
    quantity = min(order.open_quantity, size)
    return (
        ReportFill(
            at=at,
            execution_id=execution_id or derive_execution_id(order.order_id, quote.sequence),
            price=price,
            quantity=quantity,
            liquidity=Liquidity.MAKER if resting_limit else Liquidity.TAKER,
        ),
    )


# ------------------------------------------------------------------ time in force


def day_session_end(created_at: datetime, close: time = time(0, 0)) -> datetime:
    """End of the trading day an order created at ``created_at`` belongs to.

    The first ``close`` (UTC) strictly after creation; 00:00 UTC is the
    contract's end of day for venues that trade around the clock.
    """
    at = created_at.astimezone(UTC)
    end = datetime.combine(at.date(), close, tzinfo=UTC)
    return end if end > at else end + timedelta(days=1)


def expiry_due(order: Order, now: datetime, session_end: datetime | None) -> tuple[OrderInput, ...]:
    """An Expire for a DAY order still open at or after its session end; nothing otherwise."""
    if (
        order.time_in_force is TimeInForce.DAY
        and session_end is not None
        and now >= session_end
        and order.status in TRANSITION_SOURCES[Trigger.EXPIRE]
    ):
        return (Expire(at=now, message="end of trading day"),)
    return ()


def on_quote(
    order: Order,
    quote: Quote | None,
    *,
    at: datetime,
    incoming: bool,
    session_end: datetime | None = None,
    execution_id: str | None = None,
) -> tuple[OrderInput, ...]:
    """What happens to the order on a quote, by its time in force: the inputs to apply.

    - IOC: the fill available now, then a cancel of any unfilled rest.
    - FOK: the fill if it covers the whole open quantity, else a cancel and no fill.
    - GTC: the fill available now; the rest keeps working.
    - DAY: like GTC until ``session_end``; at or after it, an expiry instead.

    ``quote`` None (no market for the symbol) fills nothing: IOC/FOK are
    canceled, GTC/DAY rest. IOC and FOK end on their first look.
    """
    expired = expiry_due(order, at, session_end)
    if expired:
        return expired
    if not order.is_working:
        return ()
    fills: tuple[ReportFill, ...] = ()
    if quote is not None:
        fills = match_quote(order, quote, at=at, incoming=incoming, execution_id=execution_id)
    filled = sum((f.quantity for f in fills), Decimal(0))
    rest = _EXACT.subtract(order.open_quantity, filled)
    unfilled = Cancel(at=at, reason=CancelReason.UNFILLED_REMAINDER, message="unfilled remainder")
    match order.time_in_force:
        case TimeInForce.IOC:
            return (*fills, unfilled) if rest > 0 else fills
        case TimeInForce.FOK:
            if rest > 0:
                return (Cancel(at=at, reason=CancelReason.UNFILLED_REMAINDER, message="fill or kill"),)
            return fills
        case TimeInForce.GTC | TimeInForce.DAY:
            return fills


def is_cancelable(order: Order) -> bool:
    """Whether a cancel request is valid now (the API answers NOT_CANCELABLE otherwise)."""
    return order.status in TRANSITION_SOURCES[Trigger.REQUEST_CANCEL]


# ------------------------------------------------------------------ contract conversions


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def _datetime(value: timestamp_pb2.Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


def _wire(value: Decimal) -> decimal_pb2.Decimal:
    return decimal_to_proto(value.quantize(WIRE_QUANTUM, context=_ROUNDING))


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
        filled_notional = _ROUNDING.multiply(average, filled)
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


def fill_from_proto(msg: types_pb2.Fill) -> Fill:
    """A domain fill from the contract's Fill (e.g. in portfolio's consumer)."""
    return Fill(
        execution_id=msg.execution_id,
        order_id=msg.order_id,
        client_order_id=msg.client_order_id,
        symbol=msg.symbol,
        side=_enum(Side, msg.side, "side"),
        price=decimal_from_proto(msg.price),
        quantity=decimal_from_proto(msg.quantity),
        liquidity=_enum(Liquidity, msg.liquidity, "liquidity"),
        executed_at=_datetime(msg.executed_at),
        fee=decimal_from_proto(msg.fee.amount),
        fee_currency=msg.fee.currency,
        venue_execution_id=msg.venue_execution_id,
    )


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
