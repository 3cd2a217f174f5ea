"""In-process adapters of execution's ports: the same observable behaviour as
the PostgreSQL and Redis ones (they pass the same suites,
``tests/suites/execution_ports.py``), no I/O.

Asyncio-safe without locks: no method awaits between reading and writing its
state, so each change is atomic with respect to the other tasks of the loop.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from runtime.outbox import OutboxRow
from services.execution.domain import (
    OPEN_STATUSES,
    Fill,
    Order,
    OrderEvent,
    OrderStatus,
    OrderType,
    Quote,
    Side,
    apply_all,
)
from services.execution.metrics import count_committed
from services.execution.ports import Cursor, Decide, OrderFilter, StoredOrder, ToOutbox

# What the due-expiry scan looks at (NEW orders are not yet at a venue).
_EXPIRABLE = frozenset({OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED, OrderStatus.PENDING_CANCEL})


@dataclass(frozen=True, slots=True)
class _Row:
    stored: StoredOrder  # the order carries its execution ids here
    risk_check_id: str


def _order_key(order_id: str) -> uuid.UUID:
    """The order id as the database compares it (ValueError if it is no UUID)."""
    return uuid.UUID(order_id)


def _bare(order: Order) -> Order:
    """The snapshot as reads answer it (without execution ids)."""
    return replace(order, execution_ids=frozenset()) if order.execution_ids else order


def _newest_first(order: Order) -> tuple[datetime, uuid.UUID]:
    return order.created_at, _order_key(order.order_id)


class MemoryOrderStore:
    """Orders, executions and outbox rows in dicts and lists.

    :attr:`executions` and :attr:`outbox` hold what was committed, in commit
    order (tests read them as they would read the tables)."""

    def __init__(self) -> None:
        self._rows: dict[uuid.UUID, _Row] = {}
        self._by_client: dict[tuple[str, str], uuid.UUID] = {}
        self.executions: list[tuple[str, Fill]] = []  # (tenant, fill)
        self.outbox: list[OutboxRow] = []

    async def create(
        self,
        order: Order,
        events: Sequence[OrderEvent],
        outbox: Sequence[OutboxRow],
        *,
        request_hash: bytes,
        expires_at: datetime | None,
        risk_check_id: str = "",
    ) -> StoredOrder | None:
        key = _order_key(order.order_id)
        if (order.tenant_id, order.client_order_id) in self._by_client:
            return None
        if key in self._rows:
            raise ValueError(f"order id {order.order_id} is taken")
        stored = StoredOrder(order, request_hash, expires_at)
        self._rows[key] = _Row(replace(stored, order=replace(order, order_id=str(key))), risk_check_id)
        self._by_client[(order.tenant_id, order.client_order_id)] = key
        self._commit(order.tenant_id, events, outbox)
        return stored

    async def get(
        self, tenant_id: str, *, order_id: str | None = None, client_order_id: str | None = None
    ) -> StoredOrder | None:
        row = self._find(tenant_id, order_id, client_order_id)
        if row is None:
            return None
        return replace(row.stored, order=_bare(row.stored.order))

    async def update(
        self,
        tenant_id: str,
        decide: Decide,
        to_outbox: ToOutbox,
        *,
        order_id: str | None = None,
        client_order_id: str | None = None,
    ) -> tuple[Order, tuple[OrderEvent, ...]] | None:
        row = self._find(tenant_id, order_id, client_order_id)
        if row is None:
            return None
        current = row.stored.order
        inputs = decide(current, row.stored.expires_at)
        if not inputs:
            return current, ()
        new, events = apply_all(current, inputs)
        rows = to_outbox(events)
        # Everything above may raise; nothing was changed until here.
        self._rows[_order_key(new.order_id)] = replace(row, stored=replace(row.stored, order=new))
        self._commit(tenant_id, events, rows)
        return new, events

    async def page(
        self, tenant_id: str, *, where: OrderFilter, after: Cursor | None, limit: int
    ) -> list[Order]:
        after_key = (after.created_at, _order_key(after.order_id)) if after is not None else None
        orders = [
            o
            for o in self._orders(tenant_id)
            if (after_key is None or _newest_first(o) < after_key)
            and (not where.statuses or int(o.status) in where.statuses)
            and (where.symbol is None or o.symbol == where.symbol)
            and (where.strategy_id is None or o.strategy_id == where.strategy_id)
            and (where.created_from is None or o.created_at >= where.created_from)
            and (where.created_to is None or o.created_at < where.created_to)
        ]
        orders.sort(key=_newest_first, reverse=True)
        return [_bare(o) for o in orders[: max(limit, 0)]]

    async def open_orders(self, tenant_id: str, symbol: str | None) -> list[Order]:
        orders = [
            o
            for o in self._orders(tenant_id)
            if o.status in OPEN_STATUSES and (symbol is None or o.symbol == symbol)
        ]
        orders.sort(key=_newest_first)
        return [_bare(o) for o in orders]

    async def marketable(
        self, symbol: str, *, bid: Decimal | None, ask: Decimal | None, limit: int = 500
    ) -> list[tuple[str, str]]:
        def crosses(o: Order) -> bool:
            market = o.type is OrderType.MARKET
            if o.side is Side.BUY:
                return ask is not None and (market or (o.limit_price is not None and o.limit_price >= ask))
            return bid is not None and (market or (o.limit_price is not None and o.limit_price <= bid))

        orders = [o for o in self._all() if o.symbol == symbol and o.is_working and crosses(o)]
        orders.sort(key=_newest_first)
        return [(o.tenant_id, o.order_id) for o in orders[: max(limit, 0)]]

    async def working_symbols(self) -> list[str]:
        return sorted({o.symbol for o in self._all() if o.is_working})

    async def due_expiries(self, now: datetime, limit: int = 500) -> list[tuple[str, str]]:
        due = [
            (row.stored.expires_at, row.stored.order)
            for row in self._rows.values()
            if row.stored.expires_at is not None
            and row.stored.expires_at <= now
            and row.stored.order.status in _EXPIRABLE
        ]
        due.sort(key=lambda item: (item[0], _newest_first(item[1])))
        return [(o.tenant_id, o.order_id) for _, o in due[: max(limit, 0)]]

    # ---- internals

    def _find(self, tenant_id: str, order_id: str | None, client_order_id: str | None) -> _Row | None:
        key: uuid.UUID | None = None
        if order_id is not None:
            key = _order_key(order_id)
        elif client_order_id is not None:
            key = self._by_client.get((tenant_id, client_order_id))
        row = self._rows.get(key) if key is not None else None
        if row is None or row.stored.order.tenant_id != tenant_id:
            return None  # another tenant's order does not exist for this one
        return row

    def _all(self) -> list[Order]:
        return [row.stored.order for row in self._rows.values()]

    def _orders(self, tenant_id: str) -> list[Order]:
        return [o for o in self._all() if o.tenant_id == tenant_id]

    def _commit(self, tenant_id: str, events: Sequence[OrderEvent], outbox: Sequence[OutboxRow]) -> None:
        self.executions.extend((tenant_id, e.fill) for e in events if e.fill is not None)
        self.outbox.extend(outbox)
        count_committed(events)


class MemoryMarketQuotes:
    """Marketdata's cache in a dict: :meth:`list_instruments` publishes the
    instrument set, :meth:`put` a symbol's last quote."""

    def __init__(self) -> None:
        self._instruments: set[str] | None = None  # None: never published
        self._quotes: dict[str, Quote] = {}

    def list_instruments(self, symbols: Sequence[str]) -> None:
        """Add listed instruments (what marketdata does at start)."""
        self._instruments = (self._instruments or set()) | set(symbols)

    def put(self, quote: Quote) -> None:
        """Replace the symbol's last quote."""
        self._quotes[quote.symbol] = quote

    async def lists(self, symbol: str) -> bool:
        return self._instruments is None or symbol in self._instruments or symbol in self._quotes

    async def last_quote(self, symbol: str) -> Quote | None:
        return self._quotes.get(symbol)
