"""The portfolio as the contract shows it: books (the BookStore port, PostgreSQL
in production), marked with the last quotes (the QuoteCache port, Redis),
valued by the domain and turned into `trading.portfolio.v1` messages. Shared
by the API and the event publisher; also the one reading of a contract Quote
as a mark (:func:`mark_of_quote`).

Amounts go out rounded (half-even) to the contract's 12 fractional digits;
inside, everything stays exact.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from google.protobuf.timestamp_pb2 import Timestamp
from trading.common.v1 import decimal_pb2, market_pb2
from trading.portfolio.v1 import types_pb2 as pb

from runtime import decimals
from services.portfolio import domain
from services.portfolio.ports import Books, BookStore, QuoteCache


def dec(value: Decimal) -> decimal_pb2.Decimal:
    return decimals.to_proto(domain.wire(value))


def money(amount: Decimal, currency: str) -> decimal_pb2.Money:
    return decimal_pb2.Money(currency=currency, amount=dec(amount))


def timestamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


def mark_of_quote(quote: market_pb2.Quote) -> domain.Mark | None:
    """The mark of a quote: mid, else last trade price; timed by the exchange
    time (the receive time when the feed gives none)."""
    price = domain.mark_price(
        decimals.from_proto(quote.bid_price),
        decimals.from_proto(quote.ask_price),
        decimals.from_proto(quote.last_price),
    )
    if price is None:
        return None
    stamp = quote.exchange_time if quote.HasField("exchange_time") else quote.receive_time
    at = stamp.ToDatetime(tzinfo=UTC) if stamp.seconds or stamp.nanos else None
    return domain.Mark(price, at)


def position_message(value: domain.PositionValue, currency: str, updated_at: datetime | None) -> pb.Position:
    """A valued position as the contract's Position."""
    p = value.position
    message = pb.Position(
        symbol=p.symbol,
        quantity=dec(p.quantity),
        market_value=money(value.market_value, currency),
        cost_basis=money(value.cost_basis, currency),
        realized_pnl=money(p.realized_pnl, currency),
        unrealized_pnl=money(value.unrealized_pnl, currency),
        fees_paid=money(p.fees_paid, currency),
        version=p.version,
    )
    if p.average_price is not None:
        message.average_price.CopyFrom(dec(p.average_price))
    if value.mark is not None:
        message.mark_price.CopyFrom(dec(value.mark.price))
        if value.mark.at is not None:
            message.marked_at.CopyFrom(timestamp(value.mark.at))
    if updated_at is not None:
        message.updated_at.CopyFrom(timestamp(updated_at))
    return message


def portfolio_message(
    books: Books, value: domain.PortfolioValue, as_of: datetime, *, include_positions: bool = True
) -> pb.Portfolio:
    currency = books.account.currency
    return pb.Portfolio(
        cash=money(value.cash, currency),
        positions=[
            position_message(v, currency, books.updated_at.get(v.position.symbol))
            for v in value.open_positions
        ]
        if include_positions
        else [],
        equity=money(value.equity, currency),
        market_value=money(value.market_value, currency),
        gross_exposure=money(value.gross_exposure, currency),
        total_realized_pnl=money(value.total_realized_pnl, currency),
        total_unrealized_pnl=money(value.total_unrealized_pnl, currency),
        total_fees=money(value.total_fees, currency),
        as_of=timestamp(as_of),
        version=books.account.version,
    )


class PortfolioViews:
    """Reads and values a tenant's portfolio."""

    def __init__(self, store: BookStore, quotes: QuoteCache) -> None:
        self._store = store
        self._quotes = quotes

    async def positions(
        self, tenant_id: str, *, symbol: str | None = None, include_closed: bool = False
    ) -> tuple[list[pb.Position], datetime]:
        books = await self._store.books(tenant_id, symbol=symbol)
        as_of = datetime.now(UTC)
        wanted = [p for p in books.positions if include_closed or p.is_open]
        marks = await self._quotes.marks(p.symbol for p in wanted if p.is_open)
        currency = books.account.currency
        return [
            position_message(
                domain.value_position(p, marks.get(p.symbol)), currency, books.updated_at.get(p.symbol)
            )
            for p in wanted
        ], as_of

    async def portfolio(self, tenant_id: str, *, include_positions: bool = True) -> pb.Portfolio:
        books = await self._store.books(tenant_id)
        marks = await self._quotes.marks(p.symbol for p in books.positions if p.is_open)
        value = domain.value_portfolio(books.account.cash, books.positions, marks)
        return portfolio_message(books, value, datetime.now(UTC), include_positions=include_positions)
