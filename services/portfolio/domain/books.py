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
- Marking: a position is marked at the mid of the last quote, or at the last
  trade price when one side is missing (the contract's choice). Without any
  price it is valued at its average price (market value = cost basis,
  unrealised PnL zero) and ``mark`` stays ``None``, so equity does not jump
  before the first quote arrives.

Numbers are :class:`decimal.Decimal` everywhere. Sums and products run in a
100-digit context that traps ``Inexact``, so nothing is rounded silently. The
one rounding is the re-weighted average price, which is a quotient and is
kept to the contract's 12 fractional digits (half-even); realised PnL is then
exact with respect to that stored average. Everything else (cash, quantity,
equity) is exact, hence independent of the order of the fills.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Final

# The shared vocabulary, re-exported (the books' modules read it from here).
from domain.positions import EXACT as _EXACT
from domain.positions import WIRE_QUANTUM as WIRE_QUANTUM
from domain.positions import ZERO as ZERO
from domain.positions import Side as Side
from domain.positions import after_fill
from domain.positions import wire as wire

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
        return _EXACT.subtract(_EXACT.minus(_EXACT.multiply(self.signed_quantity, self.price)), self.fee)


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
        return _EXACT.multiply(self.quantity, self.average_price)


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
        realized_pnl=_EXACT.add(position.realized_pnl, change.realized),
        fees_paid=_EXACT.add(position.fees_paid, fill.fee),
        version=position.version + 1,
    )
    return FillOutcome(after, position.quantity, change.realized, fill.fee, fill.cash_change)


def apply_fills(position: Position, fills: Iterable[Fill]) -> Position:
    """Apply fills in order (tests, replays)."""
    for fill in fills:
        position = apply_fill(position, fill).position
    return position


# --------------------------------------------------------------------------- marking


@dataclass(frozen=True, slots=True)
class Mark:
    """A price to value a position at, and the time of the quote it came from."""

    price: Decimal
    at: datetime | None = None


def mark_price(bid: Decimal, ask: Decimal, last: Decimal) -> Decimal | None:
    """The mid when both sides are quoted, else the last trade price, else None.
    Zero (an unset contract Decimal) counts as missing."""
    if bid > 0 and ask > 0:
        return _EXACT.divide(_EXACT.add(bid, ask), Decimal(2))  # halving a decimal is exact
    if last > 0:
        return last
    return None


@dataclass(frozen=True, slots=True)
class PositionValue:
    """A position valued at a mark (or at cost without one)."""

    position: Position
    mark: Mark | None
    market_value: Decimal
    cost_basis: Decimal
    unrealized_pnl: Decimal


def value_position(position: Position, mark: Mark | None) -> PositionValue:
    cost = position.cost_basis
    if not position.is_open:
        return PositionValue(position, mark, ZERO, ZERO, ZERO)
    if mark is None:
        return PositionValue(position, None, cost, cost, ZERO)
    market = _EXACT.multiply(position.quantity, mark.price)
    return PositionValue(position, mark, market, cost, _EXACT.subtract(market, cost))


@dataclass(frozen=True, slots=True)
class PortfolioValue:
    """Cash, the valued positions (all of them, closed ones included) and totals."""

    cash: Decimal
    positions: tuple[PositionValue, ...]
    equity: Decimal
    market_value: Decimal
    gross_exposure: Decimal
    total_realized_pnl: Decimal
    total_unrealized_pnl: Decimal
    total_fees: Decimal

    @property
    def open_positions(self) -> tuple[PositionValue, ...]:
        return tuple(p for p in self.positions if p.position.is_open)


def value_portfolio(
    cash: Decimal, positions: Iterable[Position], marks: Mapping[str, Mark]
) -> PortfolioValue:
    """Value every position at its symbol's mark; positions ordered by symbol."""
    valued = tuple(value_position(p, marks.get(p.symbol)) for p in sorted(positions, key=lambda p: p.symbol))
    market = _sum(v.market_value for v in valued)
    return PortfolioValue(
        cash=cash,
        positions=valued,
        equity=_EXACT.add(cash, market),
        market_value=market,
        gross_exposure=_sum(_EXACT.abs(v.market_value) for v in valued),
        total_realized_pnl=_sum(v.position.realized_pnl for v in valued),
        total_unrealized_pnl=_sum(v.unrealized_pnl for v in valued),
        total_fees=_sum(v.position.fees_paid for v in valued),
    )


def _sum(values: Iterable[Decimal]) -> Decimal:
    """Exact sum (the builtin sum would round in the thread's default context)."""
    total = ZERO
    for value in values:
        total = _EXACT.add(total, value)
    return total
