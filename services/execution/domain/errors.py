"""The typed errors of execution's domain: every invalid input raises one of
these and leaves the caller's order untouched."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.execution.domain.lifecycle import Trigger
    from services.execution.domain.orders import OrderStatus


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
