"""Pure portfolio logic, no I/O: :mod:`.books` (fills -> positions, cash and
PnL) and :mod:`.valuation` (positions and the portfolio marked to market).
The public names of both are re-exported here (``from
services.portfolio.domain import Fill``)."""

from services.portfolio.domain.books import (
    BASE_CURRENCY,
    DEFAULT_STARTING_CASH,
    EXACT,
    SYMBOL_RE,
    WIRE_QUANTUM,
    ZERO,
    Fill,
    FillOutcome,
    InvalidFillError,
    Position,
    Side,
    apply_fill,
    apply_fills,
    wire,
)
from services.portfolio.domain.valuation import (
    Mark,
    PortfolioValue,
    PositionValue,
    mark_price,
    value_portfolio,
    value_position,
)

__all__ = [
    "BASE_CURRENCY",
    "DEFAULT_STARTING_CASH",
    "EXACT",
    "SYMBOL_RE",
    "WIRE_QUANTUM",
    "ZERO",
    "Fill",
    "FillOutcome",
    "InvalidFillError",
    "Mark",
    "PortfolioValue",
    "Position",
    "PositionValue",
    "Side",
    "apply_fill",
    "apply_fills",
    "mark_price",
    "value_portfolio",
    "value_position",
    "wire",
]
