"""Pure portfolio valuation: positions and the portfolio marked to market. No I/O.

Marking: a position is marked at the mid of the last quote, or at the last
trade price when one side is missing (the contract's choice). Without any
price it is valued at its average price (market value = cost basis,
unrealised PnL zero) and ``mark`` stays ``None``, so equity does not jump
before the first quote arrives. Sums and products are exact (the 100-digit
context of :mod:`domain.positions` trapping ``Inexact``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from domain.numbers import exact_sum
from domain.positions import unrealized_pnl
from domain.prices import mark_price as mark_price  # the shared rule, re-exported
from services.portfolio.domain.books import EXACT, ZERO, Position


@dataclass(frozen=True, slots=True)
class Mark:
    """A price to value a position at, and the time of the quote it came from."""

    price: Decimal
    at: datetime | None = None


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
    market = EXACT.multiply(position.quantity, mark.price)
    unrealized = unrealized_pnl(position.quantity, position.average_price, mark.price)
    return PositionValue(position, mark, market, cost, unrealized)


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
    market = exact_sum(v.market_value for v in valued)
    return PortfolioValue(
        cash=cash,
        positions=valued,
        equity=EXACT.add(cash, market),
        market_value=market,
        gross_exposure=exact_sum(EXACT.abs(v.market_value) for v in valued),
        total_realized_pnl=exact_sum(v.position.realized_pnl for v in valued),
        total_unrealized_pnl=exact_sum(v.unrealized_pnl for v in valued),
        total_fees=exact_sum(v.position.fees_paid for v in valued),
    )
