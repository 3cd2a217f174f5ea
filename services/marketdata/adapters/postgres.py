"""PostgreSQL adapter of the marketdata service (schema `marketdata`): the
InstrumentStore port of services.marketdata.ports."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from services.marketdata.ports import InstrumentFilter, InstrumentRow

_COLUMNS = (
    "symbol, base_asset, quote_asset, asset_class, tick_size, lot_size, min_quantity, status, description"
)


class PostgresInstrumentStore:
    """The InstrumentStore port on PostgreSQL: instrument reference data, keyset-paged by symbol."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, symbol: str) -> InstrumentRow | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM marketdata.instruments WHERE symbol = $1", symbol
        )
        return InstrumentRow(**row) if row else None

    async def list(self, *, after: str, limit: int, where: InstrumentFilter) -> list[InstrumentRow]:
        """Up to `limit` instruments with symbol > `after`, ordered by symbol."""
        rows = await self._pool.fetch(
            f"""SELECT {_COLUMNS} FROM marketdata.instruments
                WHERE symbol > $1
                  AND ($2::text IS NULL OR status = $2)
                  AND ($3::text IS NULL OR asset_class = $3)
                  AND ($4::text IS NULL OR quote_asset = $4)
                ORDER BY symbol
                LIMIT $5""",
            after,
            where.status,
            where.asset_class,
            where.quote_asset,
            limit,
        )
        return [InstrumentRow(**r) for r in rows]

    async def symbols(self) -> Sequence[str]:
        """Every listed symbol, whatever its status (what normalisation accepts)."""
        rows = await self._pool.fetch("SELECT symbol FROM marketdata.instruments ORDER BY symbol")
        return [r["symbol"] for r in rows]

    async def existing(self, symbols: Sequence[str]) -> set[str]:
        """The subset of `symbols` that are instruments."""
        rows = await self._pool.fetch(
            "SELECT symbol FROM marketdata.instruments WHERE symbol = ANY($1::text[])", symbols
        )
        return {r["symbol"] for r in rows}

    async def trading(self) -> Sequence[InstrumentRow]:
        """Instruments in TRADING status (what the synthetic feed quotes by default)."""
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM marketdata.instruments WHERE status = 'TRADING' ORDER BY symbol"
        )
        return [InstrumentRow(**r) for r in rows]
