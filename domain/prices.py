"""The price a position is marked at, from a quote: shared by portfolio
(valuation) and risk (daily PnL, cluster exposure)."""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from domain.numbers import EXACT

_TWO: Final = Decimal(2)


def mark_price(bid: Decimal | None, ask: Decimal | None, last: Decimal | None) -> Decimal | None:
    """The mid when both sides are quoted, else the last trade price, else None.
    A missing price is None or not positive (an unset contract Decimal reads 0)."""
    if bid is not None and ask is not None and bid > 0 and ask > 0:
        return EXACT.divide(EXACT.add(bid, ask), _TWO)  # halving a decimal is exact
    if last is not None and last > 0:
        return last
    return None
