"""The paper venue's matching on top of book: which fills a quote gives an order.

Pure functions that return the inputs to apply (``ReportFill``), so the
transition table stays the only place that decides what may happen to an
order.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Final

from services.execution.domain.lifecycle import ReportFill
from services.execution.domain.orders import Liquidity, Order, OrderType, Side


@dataclass(frozen=True, slots=True)
class Quote:
    """Top of book of one instrument. A side with a non-positive price or size offers nothing."""

    symbol: str
    bid: Decimal
    bid_size: Decimal
    ask: Decimal
    ask_size: Decimal
    sequence: int = 0


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
