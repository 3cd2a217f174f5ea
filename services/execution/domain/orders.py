"""Orders and fills: the contract's enums, the immutable order snapshot and
how a NEW order is created (the rules the contract states for its fields)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Final

from domain.numbers import EXACT, ROUNDING, WIRE_QUANTUM
from domain.orders import OrderType as OrderType  # the shared vocabulary, re-exported
from domain.positions import Side as Side  # the shared vocabulary, re-exported
from services.execution.domain.errors import InvalidOrder

# --------------------------------------------------------------------------- enums
# Mirrors of the contract's enums with the same numbers, so domain code reads
# ``OrderStatus.FILLED`` instead of protobuf ints; a unit test pins them to the
# contract.


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


TERMINAL_STATUSES: Final[frozenset[OrderStatus]] = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)
OPEN_STATUSES: Final[frozenset[OrderStatus]] = frozenset(set(OrderStatus) - TERMINAL_STATUSES)
# Orders the venue matches against quotes (PENDING_CANCEL is waiting to leave the book).
WORKING_STATUSES: Final[frozenset[OrderStatus]] = frozenset(
    {OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED}
)


# --------------------------------------------------------------------------- values


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
        return EXACT.multiply(self.price, self.quantity)


@dataclass(frozen=True, slots=True)
class Order:
    """An order snapshot. Immutable: ``lifecycle.apply`` returns the next snapshot."""

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
        return EXACT.subtract(self.quantity, self.filled_quantity)

    @property
    def remaining_quantity(self) -> Decimal:
        """The contract's remaining quantity: open quantity, 0 once terminal."""
        return Decimal(0) if self.is_terminal else self.open_quantity

    @property
    def average_fill_price(self) -> Decimal | None:
        """Volume-weighted average fill price (to 12 places), None before any fill."""
        if self.filled_quantity == 0:
            return None
        return ROUNDING.divide(self.filled_notional, self.filled_quantity).quantize(
            WIRE_QUANTUM, context=ROUNDING
        )


# --------------------------------------------------------------------------- creation


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
