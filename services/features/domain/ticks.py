"""Ticks as the features see them: one normalised market data update, read
from the contract's Quote or Tick, and which ticks can be applied."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from trading.common.v1 import market_pb2
from trading.marketdata.v1 import events_pb2 as marketdata_events_pb2

from runtime.decimals import from_proto as decimal_from_proto


@dataclass(frozen=True, slots=True)
class Tick:
    """One normalised market data update of a symbol.

    ``last``/``last_size`` are the trade that came with this tick (size 0: no
    trade); ``ts`` is timezone-aware; ``sequence`` strictly increases per symbol.
    """

    symbol: str
    bid: Decimal
    ask: Decimal
    bid_size: Decimal
    ask_size: Decimal
    last: Decimal
    last_size: Decimal
    ts: datetime
    sequence: int


def tick_from_quote(msg: market_pb2.Quote | marketdata_events_pb2.Tick) -> Tick:
    """The tick carried by the contract's Quote or Tick event (the two share
    their fields), as published by marketdata."""
    return Tick(
        symbol=msg.symbol,
        bid=decimal_from_proto(msg.bid_price),
        ask=decimal_from_proto(msg.ask_price),
        bid_size=decimal_from_proto(msg.bid_size),
        ask_size=decimal_from_proto(msg.ask_size),
        last=decimal_from_proto(msg.last_price),
        last_size=decimal_from_proto(msg.last_size),
        ts=msg.exchange_time.ToDatetime(tzinfo=UTC),
        sequence=msg.sequence,
    )


def is_valid_tick(tick: Tick) -> bool:
    """A book that is not crossed, positive prices, no negative sizes, no NaN or infinity."""
    bid, ask, bid_size, ask_size = tick.bid, tick.ask, tick.bid_size, tick.ask_size
    last, last_size = tick.last, tick.last_size
    # is_finite first: ordering comparisons with NaN raise.
    if not (
        bid.is_finite()
        and ask.is_finite()
        and bid_size.is_finite()
        and ask_size.is_finite()
        and last.is_finite()
        and last_size.is_finite()
    ):
        return False
    if not (bid > 0 and ask >= bid and bid_size >= 0 and ask_size >= 0 and last_size >= 0):
        return False
    # A trade needs a positive price; without one the last price is not used.
    return last > 0 if last_size > 0 else last >= 0
