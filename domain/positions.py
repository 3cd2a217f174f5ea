"""Sides and position arithmetic, shared by execution, risk, portfolio and decision.

A position is a signed quantity (long > 0, short < 0) and the average entry
price of what is open. A fill adding to it (or opening it) re-weights the
average; one reducing it realises ``(price - average) x closed`` (the other
way round for a short) and keeps the average; one closing it leaves it flat
(no average); one flipping it closes the old side and opens the rest at the
fill's price.

Arithmetic is exact (:data:`domain.numbers.EXACT`, trapping any rounding),
except the average price, which is a division: rounded half-even to the
contract's 12 fractional digits (:func:`domain.numbers.wire`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal

from domain.numbers import EXACT, ROUNDING, ZERO, wire


class Side(enum.IntEnum):
    """trading.common.v1.Side (same numbers; UNSPECIFIED is never a side)."""

    BUY = 1
    SELL = 2

    def signed(self, quantity: Decimal) -> Decimal:
        """`quantity` as a change of position: + for a buy, - for a sell."""
        return quantity if self is Side.BUY else EXACT.minus(quantity)


@dataclass(frozen=True, slots=True)
class PositionChange:
    """What one fill does to a position."""

    quantity: Decimal
    # None when the position is flat afterwards.
    average_price: Decimal | None
    # PnL realised by the fill, before fees.
    realized: Decimal


def _sign(value: Decimal) -> int:
    return (value > 0) - (value < 0)


def after_fill(
    quantity: Decimal, average_price: Decimal | None, side: Side, fill_quantity: Decimal, price: Decimal
) -> PositionChange:
    """The position (`quantity`, `average_price`) after a fill of `fill_quantity`
    (positive) at `price` on `side` (see the module docstring for the rules)."""
    delta = side.signed(fill_quantity)
    new_quantity = EXACT.add(quantity, delta)
    if quantity == 0 or average_price is None or _sign(delta) == _sign(quantity):
        # Opening or adding: re-weight the average entry price.
        if quantity == 0 or average_price is None:
            return PositionChange(new_quantity, price, ZERO)
        cost = EXACT.add(
            EXACT.multiply(EXACT.abs(quantity), average_price), EXACT.multiply(fill_quantity, price)
        )
        return PositionChange(new_quantity, wire(ROUNDING.divide(cost, EXACT.abs(new_quantity))), ZERO)
    # Reducing, closing or flipping: book PnL on the closed quantity.
    closed = min(EXACT.abs(quantity), fill_quantity)
    per_unit = EXACT.subtract(price, average_price) if quantity > 0 else EXACT.subtract(average_price, price)
    realized = EXACT.multiply(per_unit, closed)
    if new_quantity == 0:
        return PositionChange(new_quantity, None, realized)
    if _sign(new_quantity) != _sign(quantity):
        return PositionChange(new_quantity, price, realized)  # flipped: the rest opened at the fill price
    return PositionChange(new_quantity, average_price, realized)


def unrealized_pnl(quantity: Decimal, average_price: Decimal | None, mark: Decimal) -> Decimal:
    """Open PnL of a position marked at `mark`: ``(mark - average) x quantity``
    (negative quantity for a short); zero when flat."""
    if quantity == 0 or average_price is None:
        return ZERO
    return EXACT.multiply(EXACT.subtract(mark, average_price), quantity)
