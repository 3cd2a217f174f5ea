"""The portfolio's ports in process memory: the books and the last quotes,
with the observable behaviour of the PostgreSQL and Redis adapters (tenant
isolation, idempotency by event id and execution id, all-or-nothing fills,
ordering), passing the same suites (``tests/suites/portfolio_ports.py``).
No I/O; every method changes state without awaiting in between, so it is
atomic to other tasks of the event loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

from trading.common.v1 import market_pb2

from runtime.outbox import OutboxRow
from services.portfolio import domain
from services.portfolio.ports import Account, Announce, AppliedFill, Books, FillRecord
from services.portfolio.views import mark_of_quote


@dataclass
class _TenantBooks:
    account: Account | None = None
    positions: dict[str, domain.Position] = field(default_factory=dict)
    updated_at: dict[str, datetime] = field(default_factory=dict)
    event_ids: set[str] = field(default_factory=set)
    execution_ids: set[str] = field(default_factory=set)
    outbox: list[OutboxRow] = field(default_factory=list)


class MemoryBookStore:
    """Every tenant's books in a dict; the rows `announce` makes are kept per
    tenant (:meth:`outbox`), where the PostgreSQL store writes its outbox table."""

    def __init__(self, *, starting_cash: Decimal = domain.DEFAULT_STARTING_CASH) -> None:
        self.starting_cash: Final = starting_cash
        self._tenants: dict[str, _TenantBooks] = {}

    async def apply_fill(
        self,
        tenant_id: str,
        record: FillRecord,
        fill: domain.Fill,
        *,
        now: datetime | None = None,
        announce: Announce | None = None,
    ) -> AppliedFill | None:
        now = now or datetime.now(UTC)
        books = self._tenants.get(tenant_id) or _TenantBooks()
        if record.event_id in books.event_ids or record.execution_id in books.execution_ids:
            return None
        account = books.account or Account(domain.BASE_CURRENCY, self.starting_cash, 0)
        outcome = domain.apply_fill(books.positions.get(fill.symbol, domain.Position(fill.symbol)), fill)
        account = Account(
            account.currency, domain.EXACT.add(account.cash, outcome.cash_change), account.version + 1
        )
        applied = AppliedFill(outcome, account, now)
        rows: Sequence[OutboxRow] = announce(applied) if announce is not None else ()
        # Nothing above changed state: a failing announce leaves the books as they were.
        self._tenants[tenant_id] = books
        books.event_ids.add(record.event_id)
        books.execution_ids.add(record.execution_id)
        books.account = account
        books.positions[fill.symbol] = outcome.position
        books.updated_at[fill.symbol] = now
        books.outbox.extend(rows)
        return applied

    async def books(self, tenant_id: str, *, symbol: str | None = None) -> Books:
        books = self._tenants.get(tenant_id) or _TenantBooks()
        symbols = sorted(s for s in books.positions if symbol is None or s == symbol)
        return Books(
            account=books.account or Account(domain.BASE_CURRENCY, self.starting_cash, 0),
            positions=tuple(books.positions[s] for s in symbols),
            updated_at={s: books.updated_at[s] for s in symbols},
        )

    def outbox(self, tenant_id: str) -> list[OutboxRow]:
        """The outbox rows stored with the tenant's fills, in order."""
        books = self._tenants.get(tenant_id)
        return list(books.outbox) if books is not None else []


class MemoryQuoteCache:
    """The last quote per symbol, set by :meth:`put` (where marketdata writes Redis)."""

    def __init__(self) -> None:
        self._quotes: dict[str, market_pb2.Quote] = {}

    def put(self, symbol: str, quote: market_pb2.Quote) -> None:
        copy = market_pb2.Quote()
        copy.CopyFrom(quote)
        self._quotes[symbol] = copy

    async def marks(self, symbols: Iterable[str]) -> dict[str, domain.Mark]:
        marks: dict[str, domain.Mark] = {}
        for symbol in sorted(set(symbols)):
            quote = self._quotes.get(symbol)
            if quote is None:
                continue
            try:
                mark = mark_of_quote(quote)
            except (ArithmeticError, ValueError):
                continue  # an unreadable price: valued at cost, as in Redis
            if mark is not None:
                marks[symbol] = mark
        return marks
