"""The portfolio's books in PostgreSQL (schema `portfolio`): the
:class:`services.portfolio.ports.BookStore` of production.

Every query runs in :func:`runtime.storage.postgres.tenant_transaction`, so
row-level security limits it to the tenant's rows even if a WHERE clause were
wrong.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

import asyncpg

from runtime.outbox import OutboxWriter
from runtime.storage.postgres import tenant_transaction
from services.portfolio import domain
from services.portfolio.ports import Account, Announce, AppliedFill, Books, FillRecord

_POSITION_COLUMNS = "symbol, quantity, average_price, realized_pnl, fees_paid, version, updated_at"


def _position(row: asyncpg.Record) -> domain.Position:
    return domain.Position(
        symbol=row["symbol"],
        quantity=row["quantity"],
        average_price=row["average_price"],
        realized_pnl=row["realized_pnl"],
        fees_paid=row["fees_paid"],
        version=row["version"],
    )


# Portfolio's outbox (runtime/outbox.py): PositionChanged, written with the fill it reports.
OUTBOX = OutboxWriter("portfolio")


class PostgresBookStore:
    """Positions, cash and processed fill events of every tenant (tables
    ``accounts``, ``positions``, ``processed_events``), PositionChanged rows
    in portfolio's outbox."""

    def __init__(self, pool: asyncpg.Pool, *, starting_cash: Decimal = domain.DEFAULT_STARTING_CASH) -> None:
        self._pool = pool
        self.starting_cash: Final = starting_cash

    async def apply_fill(
        self,
        tenant_id: str,
        record: FillRecord,
        fill: domain.Fill,
        *,
        now: datetime | None = None,
        announce: Announce | None = None,
    ) -> AppliedFill | None:
        """:meth:`services.portfolio.ports.BookStore.apply_fill`, in one transaction."""
        now = now or datetime.now(UTC)
        async with tenant_transaction(self._pool, tenant_id) as conn:
            fresh = await conn.fetchval(
                """INSERT INTO portfolio.processed_events
                       (tenant_id, event_id, execution_id, order_id, symbol)
                   VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true""",
                tenant_id,
                record.event_id,
                record.execution_id,
                record.order_id,
                fill.symbol,
            )
            if not fresh:
                return None
            # Locks: the account first, then the position, in every writer, so
            # concurrent replicas applying fills of one tenant never deadlock.
            await conn.execute(
                """INSERT INTO portfolio.accounts (tenant_id, currency, starting_cash, cash)
                   VALUES ($1, $2, $3, $3) ON CONFLICT (tenant_id) DO NOTHING""",
                tenant_id,
                domain.BASE_CURRENCY,
                self.starting_cash,
            )
            await conn.execute("SELECT 1 FROM portfolio.accounts WHERE tenant_id = $1 FOR UPDATE", tenant_id)
            row = await conn.fetchrow(
                f"""SELECT {_POSITION_COLUMNS} FROM portfolio.positions
                    WHERE tenant_id = $1 AND symbol = $2 FOR UPDATE""",
                tenant_id,
                fill.symbol,
            )
            position = _position(row) if row else domain.Position(fill.symbol)
            outcome = domain.apply_fill(position, fill)
            after = outcome.position
            await conn.execute(
                """INSERT INTO portfolio.positions
                       (tenant_id, symbol, quantity, average_price,
                        realized_pnl, fees_paid, version, updated_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                   ON CONFLICT (tenant_id, symbol) DO UPDATE SET
                       quantity = EXCLUDED.quantity, average_price = EXCLUDED.average_price,
                       realized_pnl = EXCLUDED.realized_pnl, fees_paid = EXCLUDED.fees_paid,
                       version = EXCLUDED.version, updated_at = EXCLUDED.updated_at""",
                tenant_id,
                after.symbol,
                after.quantity,
                after.average_price,
                after.realized_pnl,
                after.fees_paid,
                after.version,
                now,
            )
            updated = await conn.fetchrow(
                """UPDATE portfolio.accounts SET cash = cash + $2, version = version + 1, updated_at = $3
                   WHERE tenant_id = $1 RETURNING currency, cash, version""",
                tenant_id,
                outcome.cash_change,
                now,
            )
            assert updated is not None
            applied = AppliedFill(
                outcome, Account(updated["currency"], updated["cash"], updated["version"]), now
            )
            if announce is not None:
                await OUTBOX.add_rows(conn, announce(applied))
            return applied

    async def books(self, tenant_id: str, *, symbol: str | None = None) -> Books:
        """The tenant's account (the starting one before any fill) and positions,
        ordered by symbol; only `symbol`'s when given."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            account = await conn.fetchrow(
                "SELECT currency, cash, version FROM portfolio.accounts WHERE tenant_id = $1", tenant_id
            )
            rows = await conn.fetch(
                f"""SELECT {_POSITION_COLUMNS} FROM portfolio.positions
                    WHERE tenant_id = $1 AND ($2::text IS NULL OR symbol = $2) ORDER BY symbol""",
                tenant_id,
                symbol,
            )
        return Books(
            account=Account(account["currency"], account["cash"], account["version"])
            if account
            else Account(domain.BASE_CURRENCY, self.starting_cash, 0),
            positions=tuple(_position(r) for r in rows),
            updated_at={r["symbol"]: r["updated_at"] for r in rows},
        )
