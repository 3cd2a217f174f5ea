"""What decision's servicer, engine and background tasks depend on: the
storage of strategies and of signals (with the strategies' positions), and
the instrument universe a new strategy's symbols are checked against.

Adapters: :mod:`services.decision.adapters.postgres` (PostgreSQL, one
tenant transaction per call under row-level security, events written to
decision's outbox in the same transaction), :mod:`services.decision.adapters.redis`
(the universe marketdata publishes) and :mod:`services.decision.adapters.memory`
(the same behaviour in process memory, for servicer tests). The market
memory's vector storage has its port in :mod:`runtime.vectors`
(:class:`runtime.vectors.VectorStore`, adapters pgvector and Weaviate).

The records the ports take and give are defined here too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from runtime.outbox import OutboxRow
from services.decision.domain import IntentStatus, StrategyConfig

# ---------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class StrategyRow:
    """A stored strategy."""

    tenant_id: str
    strategy_id: str
    name: str
    description: str
    symbols: tuple[str, ...]
    enabled: bool
    max_position: Decimal
    fixed_quantity: Decimal
    model_ids: tuple[str, ...]
    signal_threshold: float
    cooldown_ms: int
    version: int
    created_at: datetime
    updated_at: datetime
    updated_by: str

    def same_config(self, other: StrategyRow) -> bool:
        """True when the client-set configuration is equal (bookkeeping ignored)."""
        return (
            self.name,
            self.description,
            self.symbols,
            self.enabled,
            self.max_position,
            self.fixed_quantity,
            self.model_ids,
            self.signal_threshold,
            self.cooldown_ms,
        ) == (
            other.name,
            other.description,
            other.symbols,
            other.enabled,
            other.max_position,
            other.fixed_quantity,
            other.model_ids,
            other.signal_threshold,
            other.cooldown_ms,
        )

    def config(self) -> StrategyConfig:
        return StrategyConfig(
            tenant_id=self.tenant_id,
            strategy_id=self.strategy_id,
            symbols=frozenset(self.symbols),
            enabled=self.enabled,
            max_position=self.max_position,
            fixed_quantity=self.fixed_quantity,
            model_ids=self.model_ids,
            signal_threshold=self.signal_threshold,
            cooldown=timedelta(milliseconds=self.cooldown_ms),
            version=self.version,
        )


class VersionMismatchError(Exception):
    """The stored version is not the expected one."""

    def __init__(self, stored: int) -> None:
        super().__init__(f"stored version is {stored}")
        self.stored = stored


# The outbox rows announcing a strategy change: (stored, previous version) -> rows.
AnnounceStrategy = Callable[[StrategyRow, int], Sequence[OutboxRow]]


@dataclass(frozen=True, slots=True)
class PositionState:
    quantity: Decimal
    last_intent_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewSignal:
    """A signal to record (and, with a client order id, an order to place)."""

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
    # Its events (SignalGenerated, OrderIntentCreated), written to the outbox
    # in the transaction that inserts the signal, and only if it does.
    outbox: tuple[OutboxRow, ...] = ()


@dataclass(frozen=True, slots=True)
class PendingOrder:
    """An intent whose order is not known to be placed yet."""

    signal_id: str
    strategy_id: str
    symbol: str
    client_order_id: str
    side: int
    quantity: Decimal
    payload: bytes


@dataclass(frozen=True, slots=True)
class SignalFilter:
    symbol: str = ""
    strategy_id: str = ""
    start: datetime | None = None
    end: datetime | None = None
    direction: int = 0


@dataclass(frozen=True, slots=True)
class ExpiredIntent:
    """An intent the sweeper moved from PENDING to EXPIRED."""

    signal_id: str
    strategy_id: str
    symbol: str
    client_order_id: str
    side: int
    quantity: Decimal
    created_at: datetime
    expired_at: datetime


# The outbox rows announcing expired intents: (tenant, intents) -> rows.
AnnounceExpired = Callable[[str, Sequence[ExpiredIntent]], Sequence[OutboxRow]]

# ---------------------------------------------------------------------------- ports


class StrategyStore(Protocol):
    """Strategies per tenant, versioned.

    Tenancy: every call but :meth:`tenants` reads and writes one tenant's
    strategies only; a strategy id is unique within its tenant (two tenants
    may both have ``momentum``). A change that makes a new version writes the
    events the store's ``announce`` gives (if any) in the same transaction
    as the change, and only then. A row breaking the table's checks (a
    strategy id not matching ``^[a-z0-9][a-z0-9_-]{0,63}$``, a non-positive
    max position or fixed quantity, a threshold outside (0, 1], a negative
    cooldown) raises :class:`asyncpg.CheckViolationError` and changes nothing.
    """

    async def get(self, tenant_id: str, strategy_id: str) -> StrategyRow | None:
        """The tenant's strategy, or None."""
        ...

    async def list_page(
        self, tenant_id: str, *, after: str, limit: int, symbol: str = "", enabled_only: bool = False
    ) -> list[StrategyRow]:
        """At most `limit` of the tenant's strategies with an id above `after`,
        by id; only those trading `symbol` (if given), only enabled ones with
        `enabled_only`."""
        ...

    async def enabled(self, tenant_id: str) -> list[StrategyRow]:
        """Every enabled strategy of the tenant, by id."""
        ...

    async def tenants(self) -> list[str]:
        """Tenants that have (or had) strategies, sorted: the one cross-tenant
        read, ids only."""
        ...

    async def upsert(self, new: StrategyRow, expected_version: int) -> tuple[StrategyRow, StrategyRow | None]:
        """Create or replace `new` (its version, created_at and updated_at are
        the store's: version 1 on creation, +1 per change; created_at is
        kept by a change); returns (stored, previous). An unchanged
        configuration (:meth:`StrategyRow.same_config`) keeps the stored row
        and version and announces nothing: (previous, previous). Raises
        :class:`VersionMismatchError` when `expected_version` (non-zero)
        differs from the stored version (0 when there is none)."""
        ...

    async def set_enabled(
        self, tenant_id: str, strategy_id: str, enabled: bool, expected_version: int, at: datetime, by: str
    ) -> tuple[StrategyRow, StrategyRow] | None:
        """(stored, previous), or None when the strategy does not exist. Setting
        what is already set changes nothing: (previous, previous). Raises
        :class:`VersionMismatchError` like :meth:`upsert`."""
        ...


class SignalStore(Protocol):
    """Signals and the strategies' positions, per tenant.

    Tenancy: every call reads and writes one tenant's signals and positions.
    Idempotency: a signal is unique by its vector key within its tenant; a
    key recorded before is never recorded again, and its events are written
    only with the signal that inserted it. An intent (a signal with a client
    order id and a quantity) is PENDING until it is placed, refused or
    expired, each once: every update is guarded by "still pending", so a
    terminal intent never moves again. A pending intent is handed back for
    (re)placement only while its answer could still come before it expires
    (domain.intent_may_retry, with the store's ``intent_ttl`` and
    ``answer_within``)."""

    async def positions(
        self, tenant_id: str, strategy_ids: Sequence[str], symbol: str
    ) -> dict[str, PositionState]:
        """The strategies' positions in `symbol`, by strategy id; a strategy
        with none yet (flat, no intent) is absent."""
        ...

    async def book(
        self,
        tenant_id: str,
        strategy_ids: Sequence[str],
        symbol: str,
        pending_within: timedelta = timedelta(minutes=10),
        pending_limit: int = 1000,
    ) -> tuple[dict[str, PositionState], dict[str, PendingOrder]]:
        """The positions (as :meth:`positions`) and the pending intents in
        `symbol` generated within `pending_within` that may still be placed,
        by vector key: the newest `pending_limit` of them."""
        ...

    async def record_batch(self, tenant_id: str, signals: Sequence[NewSignal]) -> set[str]:
        """Record signals without an intent (their client order id, side and
        quantity are not stored) with the outbox rows of those inserted;
        returns the vector keys inserted (a key recorded before, or twice in
        the batch, is skipped: the first of a batch's copies is inserted)."""
        ...

    async def record(
        self, tenant_id: str, signals: Sequence[NewSignal]
    ) -> tuple[list[NewSignal], list[PendingOrder]]:
        """Record the signals not recorded yet, in order, with their outbox
        rows, reserving the cooldown of those with an intent (the position's
        last intent time becomes the signal's time). Returns (new signals,
        orders to place): the new intents, plus the pending intents recorded
        earlier under a vector key seen again that may still be placed."""
        ...

    async def order_placed(
        self, tenant_id: str, order: PendingOrder, order_id: str, signed_fill: Decimal
    ) -> bool:
        """Record the order of a pending intent and add `signed_fill` to the
        strategy's position, once: False (nothing changed) when the intent is
        no longer pending (placed before, refused, expired) or unknown."""
        ...

    async def order_failed(self, tenant_id: str, order: PendingOrder, error: str) -> None:
        """Record a definitive refusal of a pending intent (its first 1000
        characters): never retried; nothing changes when it is not pending."""
        ...

    async def orders_answered(
        self,
        tenant_id: str,
        placed: Sequence[tuple[PendingOrder, str, Decimal]],
        refused: Sequence[tuple[PendingOrder, str]],
    ) -> set[str]:
        """The answers of several placements at once (one round trip where the
        store has them): each (order, order id, signed fill) of `placed` as
        :meth:`order_placed`, each (order, error) of `refused` as
        :meth:`order_failed`; returns the signal ids of the placed orders
        this call recorded (those for which :meth:`order_placed` would have
        answered True)."""
        ...

    async def expire_due(
        self,
        tenant_id: str,
        now: datetime,
        announce: AnnounceExpired = lambda t, i: (),
        limit: int = 500,
    ) -> list[ExpiredIntent]:
        """Move the tenant's pending intents created at or before ``now -
        intent_ttl`` to EXPIRED (the oldest first, at most `limit`) and return
        them, each exactly once, also under concurrent sweepers (in no
        particular order); `announce` gives their events, written with the
        change."""
        ...

    async def page(
        self, tenant_id: str, *, where: SignalFilter, before: tuple[datetime, str] | None, limit: int
    ) -> list[tuple[datetime, str, bytes, IntentStatus | None]]:
        """(generated_at, signal_id, Signal bytes, intent status or None
        without an intent), newest first (ties by signal id, descending),
        keyset-paged: only signals strictly before `before` (generated_at,
        signal_id); `where` filters by symbol, strategy, direction (empty or
        0: any) and the time range [start, end)."""
        ...

    async def prune(self, tenant_id: str, older_than: datetime) -> int:
        """Delete the tenant's signals generated before `older_than`; returns how many."""
        ...


class InstrumentDirectory(Protocol):
    """The instrument universe marketdata publishes (the same for every tenant)."""

    async def listed(self, symbols: Sequence[str]) -> list[bool] | None:
        """Per symbol, in order, whether it is a listed instrument; None while
        no universe was ever published (before marketdata first ran), when
        nothing can be said to be unknown."""
        ...
