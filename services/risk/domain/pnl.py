"""Risk's own position and PnL view from fills, and how far the day's loss
has gone towards the limit. No I/O, no clock."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Final

from domain.numbers import ZERO
from domain.positions import Side, after_fill, unrealized_pnl


@dataclass(frozen=True, slots=True)
class Position:
    """Risk's own view of one instrument: signed quantity and average entry price."""

    quantity: Decimal = ZERO
    average_price: Decimal = ZERO

    def unrealized(self, mark: Decimal | None) -> Decimal:
        """Open PnL against `mark` (0 without a mark: it cannot be told)."""
        if mark is None:
            return ZERO
        return unrealized_pnl(self.quantity, self.average_price, mark)


@dataclass(frozen=True, slots=True)
class Fill:
    """One fill as risk applies it: to the position in `symbol` and to
    `day`'s realised PnL, net of `fee`."""

    fill_id: str  # applied once by this id (the fill's execution id, else its event's)
    symbol: str
    side: Side
    quantity: Decimal
    price: Decimal
    fee: Decimal
    day: date


def apply_fill(position: Position, side: Side, quantity: Decimal, price: Decimal) -> tuple[Position, Decimal]:
    """The position after a fill and the PnL it realised (before fees), by the
    shared arithmetic (:func:`domain.positions.after_fill`); flat is (0, 0) here."""
    average = position.average_price if position.quantity != 0 else None
    change = after_fill(position.quantity, average, side, quantity, price)
    if change.average_price is None:
        return Position(ZERO, ZERO), change.realized
    return Position(change.quantity, change.average_price.normalize()), change.realized


def daily_pnl(
    realized: Decimal, positions: Mapping[str, Position], marks: Mapping[str, Decimal | None]
) -> Decimal:
    """Realised PnL of the day plus the open PnL of every position.

    Open PnL is measured from the average entry price, not from the start of
    the day (risk keeps no start-of-day marks): conservative for positions
    carried over with a gain, and exact for positions opened today.
    """
    return realized + sum((p.unrealized(marks.get(symbol)) for symbol, p in positions.items()), ZERO)


# Shares of the daily loss limit at which alerts are raised (contract: 80%).
LOSS_WARNING_SHARE: Final = Decimal("0.8")


class LossLevel(enum.IntEnum):
    """How far today's loss has gone towards the limit."""

    OK = 0
    WARNING = 1
    BREACHED = 2


def loss_level(pnl: Decimal, limit: Decimal) -> LossLevel:
    loss = -pnl
    if loss >= limit:
        return LossLevel.BREACHED
    if loss >= limit * LOSS_WARNING_SHARE:
        return LossLevel.WARNING
    return LossLevel.OK


def held_symbols(positions: Iterable[tuple[str, Position]]) -> frozenset[str]:
    return frozenset(s for s, p in positions if p.quantity != 0)
