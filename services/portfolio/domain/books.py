"""Pure portfolio accounting: positions, cash and PnL from fills. No I/O, no clock.

Rules (one position per tenant and symbol, one cash balance per tenant):

- Quantity, average price and realised PnL of one fill follow the position
  arithmetic every service shares (:mod:`domain.positions`: signed quantity,
  re-weighted average entry price, PnL booked on the closed quantity, a flip
  opens the rest at the fill price). Realised PnL (gross, fees apart as the
  contract says) accumulates over the life of the position, across closes
  and re-opens.
- Cash moves by ``-signed quantity x price - fee`` per fill: buys cost, sells
  bring cash, fees always cost. A tenant starts with :data:`DEFAULT_STARTING_CASH`
  (1,000,000 USD) unless the service is configured otherwise.

Numbers are :class:`decimal.Decimal` everywhere. Sums and products run in a
100-digit context that traps ``Inexact``, so nothing is rounded silently. The
one rounding is the re-weighted average price, which is a quotient and is
kept to the contract's 12 fractional digits (half-even); realised PnL is then
exact with respect to that stored average. Everything else (cash, quantity,
equity) is exact, hence independent of the order of the fills. Valuation at
marks is :mod:`services.portfolio.domain.valuation`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Final

# The shared vocabulary, re-exported (the books' modules read it from here).
from domain.numbers import EXACT as EXACT
from domain.numbers import WIRE_QUANTUM as WIRE_QUANTUM
from domain.numbers import ZERO as ZERO
from domain.numbers import wire as wire
from domain.positions import Side as Side
from domain.positions import after_fill

# The portfolio's base currency (v1: instruments are quoted in it too).
BASE_CURRENCY: Final = "USD"
# What a tenant's cash starts at before its first fill.
DEFAULT_STARTING_CASH: Final = Decimal("1000000")
SYMBOL_RE: Final = re.compile(r"^[A-Z0-9]{1,12}(-[A-Z0-9]{1,12})?$")


class InvalidFillError(ValueError):
    """A fill the books cannot take (non-positive quantity or price, negative
    fee, fee in another currency, bad symbol). Retrying cannot fix it."""


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution as the books see it. `quantity` and `price` are positive."""

    symbol: str
    side: Side
    quantity: Decimal
    price: Decimal
    fee: Decimal = ZERO

    def __post_init__(self) -> None:
        if not SYMBOL_RE.fullmatch(self.symbol):
            raise InvalidFillError(f"invalid symbol {self.symbol!r}")
        if not isinstance(self.side, Side):
            raise InvalidFillError(f"invalid side {self.side!r}")
        for name in ("quantity", "price", "fee"):
            if not getattr(self, name).is_finite():
                raise InvalidFillError(f"{name} must be a finite number")
        if self.quantity <= 0:
            raise InvalidFillError(f"quantity must be greater than zero, got {self.quantity}")
        if self.price <= 0:
            raise InvalidFillError(f"price must be greater than zero, got {self.price}")
        if self.fee < 0:
            raise InvalidFillError(f"fee must not be negative, got {self.fee}")

    @property
    def signed_quantity(self) -> Decimal:
        return self.side.signed(self.quantity)

    @property
    def cash_change(self) -> Decimal:
        """What the fill does to cash: ``-signed quantity x price - fee``."""
        return EXACT.subtract(EXACT.minus(EXACT.multiply(self.signed_quantity, self.price)), self.fee)


@dataclass(frozen=True, slots=True)
class Position:
    """A tenant's holding of one symbol. `average_price` is None when flat."""

    symbol: str
    quantity: Decimal = ZERO
    average_price: Decimal | None = None
    realized_pnl: Decimal = ZERO
    fees_paid: Decimal = ZERO
    # +1 per applied fill.
    version: int = 0

    @property
    def is_open(self) -> bool:
        return self.quantity != 0

    @property
    def cost_basis(self) -> Decimal:
        """quantity x average price (negative for a short)."""
        if self.average_price is None:
            return ZERO
        return EXACT.multiply(self.quantity, self.average_price)


@dataclass(frozen=True, slots=True)
class FillOutcome:
    """A position after a fill and what the fill changed."""

    position: Position
    previous_quantity: Decimal
    realized_pnl_change: Decimal
    fee: Decimal
    cash_change: Decimal


def apply_fill(position: Position, fill: Fill) -> FillOutcome:
    """The position after `fill` (the arithmetic is :func:`domain.positions.after_fill`)."""
    if fill.symbol != position.symbol:
        raise InvalidFillError(f"fill of {fill.symbol} applied to position in {position.symbol}")
    change = after_fill(position.quantity, position.average_price, fill.side, fill.quantity, fill.price)
    after = replace(
        position,
        quantity=change.quantity,
        average_price=change.average_price,
        realized_pnl=EXACT.add(position.realized_pnl, change.realized),
        fees_paid=EXACT.add(position.fees_paid, fill.fee),
        version=position.version + 1,
    )
    return FillOutcome(after, position.quantity, change.realized, fill.fee, fill.cash_change)


def apply_fills(position: Position, fills: Iterable[Fill]) -> Position:
    """Apply fills in order (tests, replays)."""
    for fill in fills:
        position = apply_fill(position, fill).position
    return position
