"""PostgreSQL adapter of the execution service (schema `execution`): the
:class:`services.execution.ports.OrderStore` of production.

Every change of an order is one transaction that writes the order row, its
new executions and the outbox rows of the events it emits, so the database
never holds a change without its events, nor an event without its change.
API paths run in :func:`tenant_transaction` (row-level security by tenant),
but for a placement, which is one call of a function that scopes itself
(one round trip instead of four: migration 0004);
the matcher's cross-tenant scans run as the schema owner (see the migration).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

import asyncpg

from runtime.outbox import OutboxRow, insert_outbox_sql, outbox_columns
from runtime.storage.postgres import tenant_transaction
from services.execution.domain import (
    CancelReason,
    Order,
    OrderEvent,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    apply_all,
)
from services.execution.metrics import count_committed
from services.execution.ports import Cursor, Decide, OrderFilter, StoredOrder, ToOutbox

_COLUMNS = """o.tenant_id, o.order_id::text AS order_id, o.client_order_id, o.request_hash, o.symbol,
    o.side, o.type, o.time_in_force, o.quantity, o.limit_price, o.status, o.filled_quantity,
    o.filled_notional, o.reject_reason, o.cancel_reason, o.status_message, o.strategy_id, o.venue,
    o.venue_order_id, o.expires_at, o.created_at, o.updated_at, o.version"""

# The placement in one round trip: migration 0004's function scopes its own
# autocommit transaction to the tenant (and the tenant role, so RLS applies
# as in tenant_transaction) and inserts the order, its executions and outbox
# rows in one statement; a conflict on the client order id inserts nothing.
_PLACE_ORDER = "SELECT execution.place_order(" + ", ".join(f"${i}" for i in range(1, 39)) + ")"

_UPDATE_ORDER = """
UPDATE execution.orders SET status = $3, filled_quantity = $4, filled_notional = $5, reject_reason = $6,
    cancel_reason = $7, status_message = $8, venue = $9, venue_order_id = $10, updated_at = $11,
    version = $12
WHERE tenant_id = $1 AND order_id = $2::uuid AND version = $13"""

_INSERT_EXECUTION = """
INSERT INTO execution.executions (tenant_id, execution_id, order_id, price, quantity, liquidity, fee,
    fee_currency, venue_execution_id, executed_at)
VALUES ($1, $2::uuid, $3::uuid, $4, $5, $6, $7, $8, $9, $10)"""

_INSERT_OUTBOX = insert_outbox_sql("execution")


def _by(order_id: str | None, client_order_id: str | None) -> tuple[str, str | None, str]:
    """(column, value, cast) of an order reference by either id (ValueError
    for an order id that is no UUID, as the port states, rather than the
    driver's own error)."""
    if order_id is not None:
        return "order_id", str(uuid.UUID(order_id)), "::uuid"
    return "client_order_id", client_order_id, ""


def _order(row: asyncpg.Record, execution_ids: Sequence[str] = ()) -> Order:
    return Order(
        order_id=row["order_id"],
        tenant_id=row["tenant_id"],
        client_order_id=row["client_order_id"],
        symbol=row["symbol"],
        side=Side(row["side"]),
        type=OrderType(row["type"]),
        time_in_force=TimeInForce(row["time_in_force"]),
        quantity=row["quantity"],
        limit_price=row["limit_price"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        status=OrderStatus(row["status"]),
        filled_quantity=row["filled_quantity"],
        filled_notional=row["filled_notional"],
        execution_ids=frozenset(execution_ids),
        reject_reason=row["reject_reason"],
        cancel_reason=CancelReason(row["cancel_reason"]),
        status_message=row["status_message"],
        strategy_id=row["strategy_id"],
        venue=row["venue"],
        venue_order_id=row["venue_order_id"],
        version=row["version"],
    )


def _stored(row: asyncpg.Record, execution_ids: Sequence[str] = ()) -> StoredOrder:
    return StoredOrder(_order(row, execution_ids), bytes(row["request_hash"]), row["expires_at"])


async def _write_effects(
    conn: asyncpg.Connection, tenant_id: str, events: Sequence[OrderEvent], outbox: Sequence[OutboxRow]
) -> None:
    fills = [e.fill for e in events if e.fill is not None]
    if fills:
        await conn.executemany(
            _INSERT_EXECUTION,
            [
                (
                    tenant_id,
                    f.execution_id,
                    f.order_id,
                    f.price,
                    f.quantity,
                    int(f.liquidity),
                    f.fee,
                    f.fee_currency,
                    f.venue_execution_id,
                    f.executed_at,
                )
                for f in fills
            ],
        )
    if outbox:
        await conn.execute(_INSERT_OUTBOX, *outbox_columns(outbox))


class PostgresOrderStore:
    """Orders, executions and the outbox, one transaction per change."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

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
        """Insert a placed order (already in its state after placement) with its
        executions and outbox rows. Returns None when the tenant already has an
        order with this client_order_id: the unique constraint decides, so of
        concurrent identical requests exactly one inserts."""
        o = order
        if not o.tenant_id:
            raise ValueError("tenant_id must not be empty")
        fills = [e.fill for e in events if e.fill is not None]
        async with self._pool.acquire() as conn:
            inserted = await conn.fetchval(
                _PLACE_ORDER,
                o.tenant_id,
                o.order_id,
                o.client_order_id,
                request_hash,
                o.symbol,
                int(o.side),
                int(o.type),
                int(o.time_in_force),
                o.quantity,
                o.limit_price,
                int(o.status),
                o.filled_quantity,
                o.filled_notional,
                o.reject_reason,
                int(o.cancel_reason),
                o.status_message,
                o.strategy_id,
                o.venue,
                o.venue_order_id,
                risk_check_id,
                expires_at,
                o.created_at,
                o.updated_at,
                o.version,
                [f.execution_id for f in fills],
                [f.order_id for f in fills],
                [f.price for f in fills],
                [f.quantity for f in fills],
                [int(f.liquidity) for f in fills],
                [f.fee for f in fills],
                [f.fee_currency for f in fills],
                [f.venue_execution_id for f in fills],
                [f.executed_at for f in fills],
                [r.event_id for r in outbox],
                [r.event_type for r in outbox],
                [r.destination for r in outbox],
                [r.partition_key for r in outbox],
                [r.envelope for r in outbox],
            )
        if not inserted:
            return None
        count_committed(events)
        return StoredOrder(order, request_hash, expires_at)

    async def get(
        self, tenant_id: str, *, order_id: str | None = None, client_order_id: str | None = None
    ) -> StoredOrder | None:
        """One order of the tenant by either id (RLS applies)."""
        column, value, cast = _by(order_id, client_order_id)
        async with tenant_transaction(self._pool, tenant_id) as conn:
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM execution.orders o WHERE o.tenant_id = $1 AND o.{column} = $2{cast}",
                tenant_id,
                value,
            )
        return _stored(row) if row is not None else None

    async def update(
        self,
        tenant_id: str,
        decide: Decide,
        to_outbox: ToOutbox,
        *,
        order_id: str | None = None,
        client_order_id: str | None = None,
    ) -> tuple[Order, tuple[OrderEvent, ...]] | None:
        """Lock one order, let `decide` choose the inputs, apply them and store
        the result with its executions and outbox rows, in one transaction.
        None when the tenant has no such order. Exceptions from `decide` or the
        domain roll everything back."""
        column, value, cast = _by(order_id, client_order_id)
        async with tenant_transaction(self._pool, tenant_id) as conn:
            row = await conn.fetchrow(
                f"""SELECT {_COLUMNS},
                       array(SELECT e.execution_id::text FROM execution.executions e
                             WHERE e.tenant_id = o.tenant_id AND e.order_id = o.order_id) AS execution_ids
                    FROM execution.orders o WHERE o.tenant_id = $1 AND o.{column} = $2{cast}
                    FOR UPDATE OF o""",
                tenant_id,
                value,
            )
            if row is None:
                return None
            stored = _stored(row, row["execution_ids"])
            inputs = decide(stored.order, stored.expires_at)
            if not inputs:
                return stored.order, ()
            new, events = apply_all(stored.order, inputs)
            await conn.execute(
                _UPDATE_ORDER,
                tenant_id,
                new.order_id,
                int(new.status),
                new.filled_quantity,
                new.filled_notional,
                new.reject_reason,
                int(new.cancel_reason),
                new.status_message,
                new.venue,
                new.venue_order_id,
                new.updated_at,
                new.version,
                stored.order.version,
            )
            await _write_effects(conn, tenant_id, events, to_outbox(events))
        count_committed(events)
        return new, events

    async def page(
        self, tenant_id: str, *, where: OrderFilter, after: Cursor | None, limit: int
    ) -> list[Order]:
        """Up to `limit` orders newest first (created_at, order_id descending), after `after`."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            rows = await conn.fetch(
                f"""SELECT {_COLUMNS} FROM execution.orders o
                    WHERE o.tenant_id = $1
                      AND ($2::timestamptz IS NULL OR (o.created_at, o.order_id) < ($2, $3::uuid))
                      AND (cardinality($4::smallint[]) = 0 OR o.status = ANY($4))
                      AND ($5::text IS NULL OR o.symbol = $5)
                      AND ($6::text IS NULL OR o.strategy_id = $6)
                      AND ($7::timestamptz IS NULL OR o.created_at >= $7)
                      AND ($8::timestamptz IS NULL OR o.created_at < $8)
                    ORDER BY o.created_at DESC, o.order_id DESC
                    LIMIT $9""",
                tenant_id,
                after.created_at if after else None,
                after.order_id if after else None,
                list(where.statuses),
                where.symbol,
                where.strategy_id,
                where.created_from,
                where.created_to,
                limit,
            )
        return [_order(r) for r in rows]

    async def open_orders(self, tenant_id: str, symbol: str | None) -> list[Order]:
        """The tenant's open orders (snapshots of StreamOrderUpdates), oldest first."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            rows = await conn.fetch(
                f"""SELECT {_COLUMNS} FROM execution.orders o
                    WHERE o.tenant_id = $1 AND o.status IN (1, 2, 3, 5)
                      AND ($2::text IS NULL OR o.symbol = $2)
                    ORDER BY o.created_at, o.order_id""",
                tenant_id,
                symbol,
            )
        return [_order(r) for r in rows]

    # ---- cross-tenant scans of the background workers (schema owner, not RLS-scoped)

    async def marketable(
        self, symbol: str, *, bid: Decimal | None, ask: Decimal | None, limit: int = 500
    ) -> list[tuple[str, str]]:
        """(tenant, order id) of working orders of `symbol` that this top of
        book would trade: buys at or above the ask, sells at or below the bid
        (market orders whenever that side has a price). None: no such side."""
        rows = await self._pool.fetch(
            """SELECT tenant_id, order_id::text AS order_id FROM execution.orders
               WHERE symbol = $1 AND status IN (2, 3)
                 AND ((side = 1 AND $3::numeric IS NOT NULL AND (type = 1 OR limit_price >= $3))
                   OR (side = 2 AND $2::numeric IS NOT NULL AND (type = 1 OR limit_price <= $2)))
               ORDER BY created_at, order_id
               LIMIT $4""",
            symbol,
            bid,
            ask,
            limit,
        )
        return [(r["tenant_id"], r["order_id"]) for r in rows]

    async def working_symbols(self) -> list[str]:
        """Symbols that have working orders (the sweep re-reads their quotes)."""
        rows = await self._pool.fetch("SELECT DISTINCT symbol FROM execution.orders WHERE status IN (2, 3)")
        return [r["symbol"] for r in rows]

    async def due_expiries(self, now: datetime, limit: int = 500) -> list[tuple[str, str]]:
        """(tenant, order id) of open DAY orders whose session has ended."""
        rows = await self._pool.fetch(
            """SELECT tenant_id, order_id::text AS order_id FROM execution.orders
               WHERE expires_at IS NOT NULL AND expires_at <= $1 AND status IN (2, 3, 5)
               ORDER BY expires_at LIMIT $2""",
            now,
            limit,
        )
        return [(r["tenant_id"], r["order_id"]) for r in rows]
