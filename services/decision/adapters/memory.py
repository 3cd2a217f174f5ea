"""In-memory adapters of decision's ports (services/decision/ports.py): the
same observable behaviour as the PostgreSQL and Redis ones (tenant isolation,
unique vector keys, versions, the intent guards, ordering and paging, the
same exceptions), in process memory. Servicer and engine tests run on them;
tests/suites/decision_ports.py holds both to one contract.

Asyncio-safe: no method awaits while it reads or changes the state, so each
call is atomic on the event loop, as a transaction is. What PostgreSQL would
write to decision's outbox in the change's transaction is appended to
``outbox`` instead (in order, only with the change).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from asyncpg import CheckViolationError, DataError

from runtime.outbox import OutboxRow
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

# decision.strategies' CHECK constraints (services/decision/migrations/0001_strategies.sql).
_STRATEGY_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# numeric(38, 12): what the column keeps of a quantity.
_SCALE = Decimal("1e-12")
_ORDER_ERROR_LIMIT = 1000


def _numeric(value: Decimal) -> Decimal:
    """A quantity as numeric(38, 12) keeps it."""
    return value.quantize(_SCALE)


def _uuid(text: str) -> str:
    """A signal id as PostgreSQL's uuid column gives it back (canonical lower
    case, whose text order is the uuid order); a malformed one is refused
    with the error asyncpg raises."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise DataError(f"invalid input for query argument: {text!r} (invalid UUID)") from None


def _check_ids(signals: Sequence[NewSignal]) -> None:
    """All of a batch's ids first: a malformed one changes nothing, as the
    transaction it fails in would."""
    for s in signals:
        _uuid(s.signal_id)


def _check(row: StrategyRow) -> None:
    """What the table's checks refuse, refused with the error PostgreSQL raises."""
    if not _STRATEGY_ID.fullmatch(row.strategy_id):
        raise CheckViolationError(f"strategy id {row.strategy_id!r} violates strategies_strategy_id_check")
    if not row.max_position > 0 or not row.fixed_quantity > 0:
        raise CheckViolationError("max_position and fixed_quantity must be positive")
    if not 0 < row.signal_threshold <= 1:
        raise CheckViolationError("signal_threshold must be in (0, 1]")
    if row.cooldown_ms < 0:
        raise CheckViolationError("cooldown_ms must not be negative")


class MemoryStrategyStore:
    """:class:`services.decision.ports.StrategyStore` in memory. With
    `announce`, every change that makes a new version appends its events to
    ``outbox``."""

    def __init__(self, announce: AnnounceStrategy | None = None) -> None:
        self._announce = announce
        self._rows: dict[tuple[str, str], StrategyRow] = {}
        self._tenants: set[str] = set()
        self.outbox: list[OutboxRow] = []

    def _announced(self, stored: StrategyRow, previous_version: int) -> None:
        if self._announce is not None:
            self.outbox.extend(self._announce(stored, previous_version))

    async def get(self, tenant_id: str, strategy_id: str) -> StrategyRow | None:
        return self._rows.get((tenant_id, strategy_id))

    async def list_page(
        self, tenant_id: str, *, after: str, limit: int, symbol: str = "", enabled_only: bool = False
    ) -> list[StrategyRow]:
        rows = sorted(
            (
                r
                for (tenant, strategy_id), r in self._rows.items()
                if tenant == tenant_id
                and strategy_id > after
                and (not symbol or symbol in r.symbols)
                and (not enabled_only or r.enabled)
            ),
            key=lambda r: r.strategy_id,
        )
        return rows[:limit]

    async def enabled(self, tenant_id: str) -> list[StrategyRow]:
        return await self.list_page(tenant_id, after="", limit=1_000_000, enabled_only=True)

    async def tenants(self) -> list[str]:
        return sorted(self._tenants)

    async def upsert(self, new: StrategyRow, expected_version: int) -> tuple[StrategyRow, StrategyRow | None]:
        key = (new.tenant_id, new.strategy_id)
        previous = self._rows.get(key)
        stored_version = previous.version if previous is not None else 0
        if expected_version and expected_version != stored_version:
            raise VersionMismatchError(stored_version)
        if previous is not None and previous.same_config(new):
            return previous, previous
        _check(new)
        stored = replace(
            new,
            max_position=_numeric(new.max_position).normalize(),
            fixed_quantity=_numeric(new.fixed_quantity).normalize(),
            version=stored_version + 1,
            created_at=previous.created_at if previous is not None else new.updated_at,
        )
        self._tenants.add(new.tenant_id)
        self._rows[key] = stored
        self._announced(stored, stored_version)
        return stored, previous

    async def set_enabled(
        self, tenant_id: str, strategy_id: str, enabled: bool, expected_version: int, at: datetime, by: str
    ) -> tuple[StrategyRow, StrategyRow] | None:
        previous = self._rows.get((tenant_id, strategy_id))
        if previous is None:
            return None
        if expected_version and expected_version != previous.version:
            raise VersionMismatchError(previous.version)
        if previous.enabled == enabled:
            return previous, previous
        stored = replace(
            previous, enabled=enabled, version=previous.version + 1, updated_at=at, updated_by=by
        )
        self._rows[(tenant_id, strategy_id)] = stored
        self._announced(stored, previous.version)
        return stored, previous


@dataclass(slots=True)
class _Signal:
    """A stored signal: what decision.signals holds of it."""

    signal_id: str
    vector_key: str
    strategy_id: str
    symbol: str
    direction: int
    generated_at: datetime
    client_order_id: str
    side: int
    quantity: Decimal | None
    payload: bytes
    order_id: str | None = None
    order_error: str | None = None
    intent_expired_at: datetime | None = None

    @property
    def pending(self) -> bool:
        """The SQL adapter's "still pending" guard."""
        return (
            self.client_order_id != ""
            and self.order_id is None
            and self.order_error is None
            and self.intent_expired_at is None
        )

    def order(self) -> PendingOrder:
        assert self.quantity is not None
        return PendingOrder(
            self.signal_id,
            self.strategy_id,
            self.symbol,
            self.client_order_id,
            self.side,
            self.quantity,
            self.payload,
        )


@dataclass(slots=True)
class _Position:
    quantity: Decimal = Decimal(0)
    last_intent_at: datetime | None = None


class MemorySignalStore:
    """:class:`services.decision.ports.SignalStore` in memory; `intent_ttl`
    and `answer_within` as the PostgreSQL adapter's."""

    def __init__(
        self,
        *,
        intent_ttl: timedelta = timedelta(minutes=10),
        answer_within: timedelta = timedelta(seconds=2),
    ) -> None:
        self._intent_ttl = intent_ttl
        self._answer_within = answer_within
        # Per tenant: signals by vector key (unique), and by id.
        self._by_key: dict[str, dict[str, _Signal]] = {}
        self._by_id: dict[str, dict[str, _Signal]] = {}
        self._positions: dict[tuple[str, str, str], _Position] = {}
        self.outbox: list[OutboxRow] = []

    def _retry_cutoff(self) -> datetime:
        return intent_retry_cutoff(datetime.now(UTC), self._intent_ttl, self._answer_within)

    def _signals(self, tenant_id: str) -> dict[str, _Signal]:
        return self._by_key.setdefault(tenant_id, {})

    def _insert(self, tenant_id: str, s: NewSignal, *, with_intent: bool) -> _Signal | None:
        """The signal stored, or None when its vector key was recorded before."""
        by_key = self._signals(tenant_id)
        if s.vector_key in by_key:
            return None
        signal_id = _uuid(s.signal_id)
        stored = _Signal(
            signal_id,
            s.vector_key,
            s.strategy_id,
            s.symbol,
            s.direction,
            s.generated_at,
            s.client_order_id if with_intent else "",
            s.side if with_intent else 0,
            _numeric(s.quantity) if with_intent and s.quantity is not None else None,
            s.payload,
        )
        by_key[s.vector_key] = stored
        self._by_id.setdefault(tenant_id, {})[signal_id] = stored
        return stored

    def _positions_of(
        self, tenant_id: str, strategy_ids: Collection[str], symbol: str
    ) -> dict[str, PositionState]:
        return {
            strategy_id: PositionState(p.quantity, p.last_intent_at)
            for (tenant, strategy_id, sym), p in self._positions.items()
            if tenant == tenant_id and sym == symbol and strategy_id in strategy_ids
        }

    async def positions(
        self, tenant_id: str, strategy_ids: Sequence[str], symbol: str
    ) -> dict[str, PositionState]:
        return self._positions_of(tenant_id, set(strategy_ids), symbol)

    async def book(
        self,
        tenant_id: str,
        strategy_ids: Sequence[str],
        symbol: str,
        pending_within: timedelta = timedelta(minutes=10),
        pending_limit: int = 1000,
    ) -> tuple[dict[str, PositionState], dict[str, PendingOrder]]:
        positions = self._positions_of(tenant_id, set(strategy_ids), symbol)
        since = max(datetime.now(UTC) - pending_within, self._retry_cutoff())
        waiting = sorted(
            (
                s
                for s in self._signals(tenant_id).values()
                if s.pending and s.symbol == symbol and s.quantity is not None and s.generated_at > since
            ),
            key=lambda s: s.generated_at,
            reverse=True,
        )[:pending_limit]
        return positions, {s.vector_key: s.order() for s in waiting}

    async def record_batch(self, tenant_id: str, signals: Sequence[NewSignal]) -> set[str]:
        _check_ids(signals)
        inserted: set[str] = set()
        for s in signals:
            if self._insert(tenant_id, s, with_intent=False) is not None:
                inserted.add(s.vector_key)
                self.outbox.extend(s.outbox)
        return inserted

    async def record(
        self, tenant_id: str, signals: Sequence[NewSignal]
    ) -> tuple[list[NewSignal], list[PendingOrder]]:
        fresh: list[NewSignal] = []
        pending: list[PendingOrder] = []
        retry_cutoff = self._retry_cutoff()
        _check_ids(signals)
        for s in signals:
            stored = self._insert(tenant_id, s, with_intent=True)
            if stored is not None:
                self.outbox.extend(s.outbox)
                fresh.append(s)
                if stored.client_order_id and stored.quantity is not None:
                    position = self._positions.setdefault((tenant_id, s.strategy_id, s.symbol), _Position())
                    position.last_intent_at = s.generated_at
                    assert s.quantity is not None
                    pending.append(
                        PendingOrder(
                            s.signal_id,
                            s.strategy_id,
                            s.symbol,
                            s.client_order_id,
                            s.side,
                            s.quantity,
                            s.payload,
                        )
                    )
                continue
            seen = self._signals(tenant_id)[s.vector_key]
            if seen.pending and seen.generated_at > retry_cutoff and seen.quantity is not None:
                pending.append(seen.order())
        return fresh, pending

    def _pending_by_id(self, tenant_id: str, signal_id: str) -> _Signal | None:
        stored = self._by_id.get(tenant_id, {}).get(_uuid(signal_id))
        return stored if stored is not None and stored.pending else None

    async def order_placed(
        self, tenant_id: str, order: PendingOrder, order_id: str, signed_fill: Decimal
    ) -> bool:
        stored = self._pending_by_id(tenant_id, order.signal_id)
        if stored is None:
            return False
        stored.order_id = order_id
        if signed_fill != 0:
            position = self._positions.setdefault((tenant_id, order.strategy_id, order.symbol), _Position())
            position.quantity = _numeric(position.quantity + signed_fill)
        return True

    async def order_failed(self, tenant_id: str, order: PendingOrder, error: str) -> None:
        stored = self._pending_by_id(tenant_id, order.signal_id)
        if stored is not None:
            stored.order_error = error[:_ORDER_ERROR_LIMIT]

    async def orders_answered(
        self,
        tenant_id: str,
        placed: Sequence[tuple[PendingOrder, str, Decimal]],
        refused: Sequence[tuple[PendingOrder, str]],
    ) -> set[str]:
        recorded = set()
        for order, order_id, signed_fill in placed:
            if await self.order_placed(tenant_id, order, order_id, signed_fill):
                recorded.add(order.signal_id)
        for order, error in refused:
            await self.order_failed(tenant_id, order, error)
        return recorded

    async def expire_due(
        self,
        tenant_id: str,
        now: datetime,
        announce: AnnounceExpired = lambda t, i: (),
        limit: int = 500,
    ) -> list[ExpiredIntent]:
        cutoff = intent_expiry_cutoff(now, self._intent_ttl)
        due = sorted(
            (
                s
                for s in self._signals(tenant_id).values()
                if s.pending and s.quantity is not None and s.generated_at <= cutoff
            ),
            key=lambda s: s.generated_at,
        )[:limit]
        expired: list[ExpiredIntent] = []
        for s in due:
            assert s.quantity is not None
            s.intent_expired_at = now
            expired.append(
                ExpiredIntent(
                    s.signal_id,
                    s.strategy_id,
                    s.symbol,
                    s.client_order_id,
                    s.side,
                    s.quantity,
                    s.generated_at,
                    now,
                )
            )
        if expired:
            self.outbox.extend(announce(tenant_id, expired))
        return expired

    async def page(
        self, tenant_id: str, *, where: SignalFilter, before: tuple[datetime, str] | None, limit: int
    ) -> list[tuple[datetime, str, bytes, IntentStatus | None]]:
        cursor = None if before is None else (before[0], _uuid(before[1]))
        rows = sorted(
            (
                s
                for s in self._signals(tenant_id).values()
                if (not where.symbol or s.symbol == where.symbol)
                and (not where.strategy_id or s.strategy_id == where.strategy_id)
                and (where.start is None or s.generated_at >= where.start)
                and (where.end is None or s.generated_at < where.end)
                and (not where.direction or s.direction == where.direction)
                and (cursor is None or (s.generated_at, s.signal_id) < cursor)
            ),
            key=lambda s: (s.generated_at, s.signal_id),
            reverse=True,
        )[:limit]
        return [
            (
                s.generated_at,
                s.signal_id,
                s.payload,
                intent_status(
                    order_id=s.order_id, order_error=s.order_error, expired=s.intent_expired_at is not None
                )
                if s.client_order_id
                else None,
            )
            for s in rows
        ]

    async def prune(self, tenant_id: str, older_than: datetime) -> int:
        by_key = self._signals(tenant_id)
        by_id = self._by_id.get(tenant_id, {})
        old = [s for s in by_key.values() if s.generated_at < older_than]
        for s in old:
            del by_key[s.vector_key]
            del by_id[s.signal_id]
        return len(old)


class MemoryInstrumentDirectory:
    """:class:`services.decision.ports.InstrumentDirectory` in memory: None
    (never published) until :meth:`publish` is called."""

    def __init__(self, symbols: Collection[str] | None = None) -> None:
        self._symbols: frozenset[str] | None = None if symbols is None else frozenset(symbols)

    def publish(self, symbols: Collection[str]) -> None:
        """What marketdata does: the universe is now `symbols`."""
        self._symbols = frozenset(symbols)

    async def listed(self, symbols: Sequence[str]) -> list[bool] | None:
        if self._symbols is None:
            return None
        return [s in self._symbols for s in symbols]
