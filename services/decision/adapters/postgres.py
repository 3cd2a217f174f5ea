"""PostgreSQL adapters of decision's stores (services/decision/ports.py):
strategies, positions, signals.

Every tenant table is read and written in a tenant transaction (RLS). The one
cross-tenant read is :meth:`PostgresStrategyStore.tenants`, the directory of
tenants that have strategies, which the feature-vector consumer walks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from runtime.outbox import OutboxWriter
from runtime.storage.postgres import tenant_transaction
from services.decision.domain import IntentStatus, intent_expiry_cutoff, intent_retry_cutoff, intent_status
from services.decision.ports import (
    AnnounceExpired,
    AnnounceStrategy,
    ExpiredIntent,
    NewSignal,
    PendingOrder,
    PositionState,
    SignalFilter,
    StrategyRow,
    VersionMismatchError,
)

_COLUMNS = (
    "strategy_id, name, description, symbols, enabled, max_position, fixed_quantity, model_ids,"
    " signal_threshold, cooldown_ms, version, created_at, updated_at, updated_by"
)


def _row(tenant_id: str, r: asyncpg.Record) -> StrategyRow:
    return StrategyRow(
        tenant_id=tenant_id,
        strategy_id=r["strategy_id"],
        name=r["name"],
        description=r["description"],
        symbols=tuple(r["symbols"]),
        enabled=r["enabled"],
        max_position=r["max_position"].normalize(),
        fixed_quantity=r["fixed_quantity"].normalize(),
        model_ids=tuple(r["model_ids"]),
        signal_threshold=r["signal_threshold"],
        cooldown_ms=r["cooldown_ms"],
        version=r["version"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        updated_by=r["updated_by"],
    )


# Decision's outbox (runtime/outbox.py): StrategyUpdated, SignalGenerated, OrderIntentCreated.
OUTBOX = OutboxWriter("decision")


class PostgresStrategyStore:
    """Strategies per tenant. With `announce`, every change that makes a new
    version writes its event into the outbox in the same transaction."""

    def __init__(self, pool: asyncpg.Pool, announce: AnnounceStrategy | None = None) -> None:
        self._pool = pool
        self._announce = announce

    async def _announced(self, conn: asyncpg.Connection, stored: StrategyRow, previous_version: int) -> None:
        if self._announce is not None:
            await OUTBOX.add_rows(conn, self._announce(stored, previous_version))

    async def get(self, tenant_id: str, strategy_id: str) -> StrategyRow | None:
        async with tenant_transaction(self._pool, tenant_id) as conn:
            r = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM decision.strategies WHERE strategy_id = $1", strategy_id
            )
        return None if r is None else _row(tenant_id, r)

    async def list_page(
        self, tenant_id: str, *, after: str, limit: int, symbol: str = "", enabled_only: bool = False
    ) -> list[StrategyRow]:
        async with tenant_transaction(self._pool, tenant_id) as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM decision.strategies WHERE strategy_id > $1"
                " AND ($2 = '' OR $2 = ANY(symbols)) AND (NOT $3 OR enabled)"
                " ORDER BY strategy_id LIMIT $4",
                after,
                symbol,
                enabled_only,
                limit,
            )
        return [_row(tenant_id, r) for r in rows]

    async def enabled(self, tenant_id: str) -> list[StrategyRow]:
        return await self.list_page(tenant_id, after="", limit=1_000_000, enabled_only=True)

    async def tenants(self) -> list[str]:
        """Tenants that have (or had) strategies. Not tenant data: just ids."""
        rows = await self._pool.fetch("SELECT tenant_id FROM decision.strategy_tenants ORDER BY tenant_id")
        return [r["tenant_id"] for r in rows]

    async def upsert(self, new: StrategyRow, expected_version: int) -> tuple[StrategyRow, StrategyRow | None]:
        """Create or replace; returns (stored, previous). An unchanged
        configuration keeps the stored row and version. Raises
        VersionMismatchError when `expected_version` (non-zero) differs."""
        async with tenant_transaction(self._pool, new.tenant_id) as conn:
            r = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM decision.strategies WHERE strategy_id = $1 FOR UPDATE",
                new.strategy_id,
            )
            previous = None if r is None else _row(new.tenant_id, r)
            stored_version = previous.version if previous is not None else 0
            if expected_version and expected_version != stored_version:
                raise VersionMismatchError(stored_version)
            if previous is not None and previous.same_config(new):
                return previous, previous
            if previous is None:
                # ON CONFLICT: a concurrent creator won; then this is an update below.
                await conn.execute(
                    "INSERT INTO decision.strategy_tenants (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING",
                    new.tenant_id,
                )
            r = await conn.fetchrow(
                "INSERT INTO decision.strategies (tenant_id, strategy_id, name, description, symbols,"
                " enabled,"
                " max_position, fixed_quantity, model_ids, signal_threshold, cooldown_ms, version,"
                " created_at, updated_at, updated_by)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, $12, $12, $13)"
                " ON CONFLICT (tenant_id, strategy_id) DO UPDATE SET name = EXCLUDED.name,"
                " description = EXCLUDED.description, symbols = EXCLUDED.symbols, enabled = EXCLUDED.enabled,"
                " max_position = EXCLUDED.max_position, fixed_quantity = EXCLUDED.fixed_quantity,"
                " model_ids = EXCLUDED.model_ids, signal_threshold = EXCLUDED.signal_threshold,"
                " cooldown_ms = EXCLUDED.cooldown_ms, version = decision.strategies.version + 1,"
                " updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by"
                f" RETURNING {_COLUMNS}",
                new.tenant_id,
                new.strategy_id,
                new.name,
                new.description,
                list(new.symbols),
                new.enabled,
                new.max_position,
                new.fixed_quantity,
                list(new.model_ids),
                new.signal_threshold,
                new.cooldown_ms,
                new.updated_at,
                new.updated_by,
            )
            assert r is not None
            stored = _row(new.tenant_id, r)
            await self._announced(conn, stored, stored_version)
            return stored, previous

    async def set_enabled(
        self, tenant_id: str, strategy_id: str, enabled: bool, expected_version: int, at: datetime, by: str
    ) -> tuple[StrategyRow, StrategyRow] | None:
        """(stored, previous), or None when the strategy does not exist."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            r = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM decision.strategies WHERE strategy_id = $1 FOR UPDATE", strategy_id
            )
            if r is None:
                return None
            previous = _row(tenant_id, r)
            if expected_version and expected_version != previous.version:
                raise VersionMismatchError(previous.version)
            if previous.enabled == enabled:
                return previous, previous
            r = await conn.fetchrow(
                "UPDATE decision.strategies SET enabled = $2, version = version + 1, updated_at = $3,"
                f" updated_by = $4 WHERE strategy_id = $1 RETURNING {_COLUMNS}",
                strategy_id,
                enabled,
                at,
                by,
            )
            assert r is not None
            stored = _row(tenant_id, r)
            await self._announced(conn, stored, previous.version)
            return stored, previous


def _pending(r: asyncpg.Record) -> PendingOrder:
    return PendingOrder(
        r["signal_id"],
        r["strategy_id"],
        r["symbol"],
        r["client_order_id"],
        r["side"],
        r["quantity"],
        r["payload"],
    )


# What "the intent is still pending" means in SQL (domain.intent_status):
# every update of an intent is guarded by it, so each transition happens once
# and a terminal intent (placed, refused, expired) never moves again.
_PENDING = "client_order_id <> '' AND order_id IS NULL AND order_error IS NULL AND intent_expired_at IS NULL"


class PostgresSignalStore:
    """Signals and the strategies' positions, per tenant.

    `intent_ttl` is how long an intent may stay pending; `answer_within` how
    long a PlaceOrder may take: an intent is retried only while its answer
    would still come before it expires (domain.intent_may_retry)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        intent_ttl: timedelta = timedelta(minutes=10),
        answer_within: timedelta = timedelta(seconds=2),
    ) -> None:
        self._pool = pool
        self._intent_ttl = intent_ttl
        self._answer_within = answer_within

    def _retry_cutoff(self) -> datetime:
        """Pending intents created after this may still be placed (see domain)."""
        return intent_retry_cutoff(datetime.now(UTC), self._intent_ttl, self._answer_within)

    async def positions(
        self, tenant_id: str, strategy_ids: Sequence[str], symbol: str
    ) -> dict[str, PositionState]:
        async with tenant_transaction(self._pool, tenant_id) as conn:
            return await self._positions(conn, strategy_ids, symbol)

    @staticmethod
    async def _positions(
        conn: asyncpg.Connection, strategy_ids: Sequence[str], symbol: str
    ) -> dict[str, PositionState]:
        rows = await conn.fetch(
            "SELECT strategy_id, quantity, last_intent_at FROM decision.positions"
            " WHERE strategy_id = ANY($1) AND symbol = $2",
            list(strategy_ids),
            symbol,
        )
        return {r["strategy_id"]: PositionState(r["quantity"], r["last_intent_at"]) for r in rows}

    async def book(
        self,
        tenant_id: str,
        strategy_ids: Sequence[str],
        symbol: str,
        pending_within: timedelta = timedelta(minutes=10),
        pending_limit: int = 1000,
    ) -> tuple[dict[str, PositionState], dict[str, PendingOrder]]:
        """What the hot path keeps in memory for (tenant, symbol): the
        strategies' positions (absent: flat, no intent yet) and the recent
        intents whose placement never got an answer, by vector key (bounded:
        an older one is still found by `record` when its vector comes again
        and decides an intent)."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            positions = await self._positions(conn, strategy_ids, symbol)
            rows = await conn.fetch(
                "SELECT vector_key, signal_id::text, strategy_id, symbol, client_order_id, side, quantity,"
                " payload FROM decision.signals WHERE "
                + _PENDING
                + " AND generated_at > now() - $2::interval"
                " AND generated_at > $4 AND symbol = $1 AND quantity IS NOT NULL"
                " ORDER BY generated_at DESC LIMIT $3",
                symbol,
                pending_within,
                pending_limit,
                self._retry_cutoff(),
            )
        pending = {r["vector_key"]: _pending(r) for r in rows}
        return positions, pending

    async def record_batch(self, tenant_id: str, signals: Sequence[NewSignal]) -> set[str]:
        """Insert signals without an intent (intent fields not stored), with the
        outbox rows of those inserted, in one round trip; returns the vector
        keys inserted (a key recorded before, or twice in the batch, is
        skipped: the unique vector key decides, and the first of a batch's
        copies is the one inserted)."""
        holds = [replace(x, client_order_id="", side=0, quantity=None) for x in signals]
        rows = await self._record(tenant_id, holds)
        return {r["vector_key"] for r in rows if r["inserted"]}

    async def record(
        self, tenant_id: str, signals: Sequence[NewSignal]
    ) -> tuple[list[NewSignal], list[PendingOrder]]:
        """Insert the signals not recorded yet (by vector key), reserving the
        cooldown of those with an intent, with their outbox rows, in one round
        trip. Returns (new signals, orders to place): the new intents, plus
        intents recorded earlier whose placement never got an answer (a
        redelivered vector retries them; execution deduplicates by client
        order id)."""
        rows = await self._record(tenant_id, signals)
        by_key = {r["vector_key"]: r for r in rows}
        fresh: list[NewSignal] = []
        pending: list[PendingOrder] = []
        seen: set[str] = set()
        for s in signals:
            if s.vector_key in seen:
                continue  # a batch's second copy of a key: the first one decided
            seen.add(s.vector_key)
            r = by_key[s.vector_key]
            if r["inserted"]:
                fresh.append(s)
                if s.client_order_id and s.quantity is not None:
                    sid, coid, q = s.signal_id, s.client_order_id, s.quantity
                    pending.append(PendingOrder(sid, s.strategy_id, s.symbol, coid, s.side, q, s.payload))
            elif r["signal_id"] is not None:
                pending.append(_pending(r))
        return fresh, pending

    async def _record(self, tenant_id: str, signals: Sequence[NewSignal]) -> list[asyncpg.Record]:
        """One statement (decision.record_signals, migration 0004): the tenant
        setting, the signals, the cooldown reservations and the outbox rows."""
        if not tenant_id:  # as tenant_transaction: an empty tenant would hide bugs upstream
            raise ValueError("tenant_id must not be empty")
        if not signals:
            return []
        events = [(n, row) for n, x in enumerate(signals, 1) for row in x.outbox]
        return list(
            await self._pool.fetch(
                "SELECT * FROM decision.record_signals($1, $2::uuid[], $3::text[], $4::text[],"
                " $5::text[], $6::smallint[], $7::timestamptz[], $8::text[], $9::smallint[], $10::numeric[],"
                " $11::bytea[], $12::int[], $13::uuid[], $14::text[], $15::text[], $16::text[], $17::bytea[],"
                " $18)",
                tenant_id,
                [x.signal_id for x in signals],
                [x.vector_key for x in signals],
                [x.strategy_id for x in signals],
                [x.symbol for x in signals],
                [x.direction for x in signals],
                [x.generated_at for x in signals],
                [x.client_order_id for x in signals],
                [x.side for x in signals],
                [x.quantity for x in signals],
                [x.payload for x in signals],
                [n for n, _ in events],
                [r.event_id for _, r in events],
                [r.event_type for _, r in events],
                [r.destination for _, r in events],
                [r.partition_key for _, r in events],
                [r.envelope for _, r in events],
                self._retry_cutoff(),
            )
        )

    async def order_placed(
        self, tenant_id: str, order: PendingOrder, order_id: str, signed_fill: Decimal
    ) -> bool:
        """Record the order of an intent and add its fill to the strategy's
        position, once: False (nothing changed) when it was recorded before."""
        placed = await self.orders_answered(tenant_id, [(order, order_id, signed_fill)], [])
        return order.signal_id in placed

    async def order_failed(self, tenant_id: str, order: PendingOrder, error: str) -> None:
        """Record a definitive refusal (e.g. a risk denial): never retried."""
        await self.orders_answered(tenant_id, [], [(order, error)])

    async def orders_answered(
        self,
        tenant_id: str,
        placed: Sequence[tuple[PendingOrder, str, Decimal]],
        refused: Sequence[tuple[PendingOrder, str]],
    ) -> set[str]:
        """Placements' answers in one round trip (decision.record_answers,
        migration 0004); returns the signal ids whose order this recorded."""
        if not tenant_id:  # as tenant_transaction: an empty tenant would hide bugs upstream
            raise ValueError("tenant_id must not be empty")
        answers = [(o, order_id, None, fill) for o, order_id, fill in placed] + [
            (o, None, error[:1000], Decimal(0)) for o, error in refused
        ]
        if not answers:
            return set()
        rows = await self._pool.fetch(
            "SELECT * FROM decision.record_answers($1, $2::uuid[], $3::text[], $4::text[], $5::text[],"
            " $6::text[], $7::numeric[])",
            tenant_id,
            [o.signal_id for o, *_ in answers],
            [order_id for _, order_id, _, _ in answers],
            [error for _, _, error, _ in answers],
            [o.strategy_id for o, *_ in answers],
            [o.symbol for o, *_ in answers],
            [fill for *_, fill in answers],
        )
        return {r[0] for r in rows}

    async def expire_due(
        self,
        tenant_id: str,
        now: datetime,
        announce: AnnounceExpired = lambda t, i: (),
        limit: int = 500,
    ) -> list[ExpiredIntent]:
        """Move the tenant's pending intents older than the time-to-live to
        EXPIRED (oldest first, at most `limit`) and return them; `announce`
        gives their events, written to the outbox in the same transaction.

        Safe with replicas: FOR UPDATE SKIP LOCKED lets two sweepers take
        disjoint rows, and the pending guard, re-checked under the row lock,
        makes a second run (or a concurrent answer that won) change nothing;
        each intent expires, and is returned, exactly once."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            # The due rows are taken once (MATERIALIZED): as an IN (subquery)
            # the planner may rescan the subquery, which then skips the rows
            # this statement already updated and locks the next ones, past
            # `limit` (the port suite caught 3 rows expired for a limit of 2).
            rows = await conn.fetch(
                "WITH due AS MATERIALIZED (SELECT tenant_id, signal_id FROM decision.signals WHERE "
                + _PENDING
                + " AND quantity IS NOT NULL AND generated_at <= $2"
                " ORDER BY generated_at LIMIT $3 FOR UPDATE SKIP LOCKED)"
                " UPDATE decision.signals AS s SET intent_expired_at = $1 FROM due"
                " WHERE (s.tenant_id, s.signal_id) = (due.tenant_id, due.signal_id) AND "
                + _PENDING
                + " RETURNING s.signal_id::text, strategy_id, symbol, client_order_id,"
                " side, quantity, generated_at, intent_expired_at",
                now,
                intent_expiry_cutoff(now, self._intent_ttl),
                limit,
            )
            expired = [
                ExpiredIntent(
                    r["signal_id"],
                    r["strategy_id"],
                    r["symbol"],
                    r["client_order_id"],
                    r["side"],
                    r["quantity"],
                    r["generated_at"],
                    r["intent_expired_at"],
                )
                for r in rows
            ]
            if expired:
                await OUTBOX.add_rows(conn, announce(tenant_id, expired))
        return expired

    async def page(
        self, tenant_id: str, *, where: SignalFilter, before: tuple[datetime, str] | None, limit: int
    ) -> list[tuple[datetime, str, bytes, IntentStatus | None]]:
        """(generated_at, signal_id, Signal bytes, intent status or None
        without an intent), newest first, keyset-paged."""
        args: list[Any] = [where.symbol, where.strategy_id, where.start, where.end, where.direction, limit]
        cursor = ""
        if before is not None:
            args += [before[0], before[1]]
            cursor = " AND (generated_at, signal_id) < ($7, $8::uuid)"
        async with tenant_transaction(self._pool, tenant_id) as conn:
            rows = await conn.fetch(
                "SELECT generated_at, signal_id::text AS id, payload, client_order_id, order_id, order_error,"
                " intent_expired_at FROM decision.signals"
                " WHERE ($1 = '' OR symbol = $1) AND ($2 = '' OR strategy_id = $2)"
                " AND ($3::timestamptz IS NULL OR generated_at >= $3)"
                " AND ($4::timestamptz IS NULL OR generated_at < $4)"
                " AND ($5 = 0 OR direction = $5)"
                + cursor
                + " ORDER BY generated_at DESC, signal_id DESC LIMIT $6",
                *args,
            )
        return [
            (
                r["generated_at"],
                r["id"],
                bytes(r["payload"]),
                intent_status(
                    order_id=r["order_id"],
                    order_error=r["order_error"],
                    expired=r["intent_expired_at"] is not None,
                )
                if r["client_order_id"]
                else None,
            )
            for r in rows
        ]

    async def prune(self, tenant_id: str, older_than: datetime) -> int:
        """Delete the tenant's signals older than the retention."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            result: str = await conn.execute(
                "DELETE FROM decision.signals WHERE generated_at < $1", older_than
            )
        return int(result.split()[-1])
