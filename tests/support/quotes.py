"""A marketdata Quote as marketdata writes it (times now), for tests that put
quotes where a service reads them."""

from __future__ import annotations

from decimal import Decimal

from trading.common.v1 import market_pb2

from runtime import decimals


def fresh_quote(
    symbol: str, bid: str, bid_size: str, ask: str, ask_size: str, *, sequence: int = 0
) -> market_pb2.Quote:
    quote = market_pb2.Quote(
        symbol=symbol,
        bid_price=decimals.to_proto(Decimal(bid)),
        bid_size=decimals.to_proto(Decimal(bid_size)),
        ask_price=decimals.to_proto(Decimal(ask)),
        ask_size=decimals.to_proto(Decimal(ask_size)),
        sequence=sequence,
    )
    quote.receive_time.GetCurrentTime()
    quote.exchange_time.GetCurrentTime()
    return quote
