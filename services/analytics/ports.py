"""What analytics' servicer, sink and evaluator depend on: the analytics
store (ticks and their bars, per tenant fills, position changes, portfolio
snapshots and signals), and the records it gives.

Adapters: :mod:`services.analytics.adapters.clickhouse` (chdb in process or
a ClickHouse server; the correlation task reads its bar tables directly) and
:mod:`services.analytics.adapters.memory` (the same answers in process
memory, for servicer tests).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Protocol

from services.analytics.domain import BarRow, IntervalPlan, PnlSample, Row
from services.analytics.domain.performance import Cell, StrategyFill

# What :meth:`AnalyticsStore.write` counts rows by (the ClickHouse tables' names).
TICKS: Final = "analytics_ticks"
FILLS: Final = "analytics_fills"
POSITION_CHANGES: Final = "analytics_position_changes"
SNAPSHOTS: Final = "analytics_portfolio_snapshots"
SIGNALS: Final = "analytics_signals"


# The last second a bar can start at: bars are bucketed in ClickHouse
# DateTime (UInt32 seconds), 1970-01-01 to 2106-02-07T06:28:15Z.
DATETIME_MAX_S: Final = 2**32 - 1


class StoreUnavailableError(Exception):
    """The store did not answer within the budget, or failed in a way that
    says "try again later"."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class TradeAggregates:
    """What the store sums for GetTradeStats (exact); the path figures come from snapshots."""

    fill_count: int
    turnover: Decimal
    fees: Decimal
    currency: str
    trade_count: int
    winning: int
    losing: int
    gross_pnl: Decimal
    gross_profit: Decimal
    gross_loss: Decimal


# One snapshot on a tenant's path: (at, gross exposure, equity, symbols,
# market values, realised - fees, unrealised).
SnapshotPoint = tuple[int, Decimal, Decimal, list[str], list[Decimal], list[Decimal], list[Decimal]]


class AnalyticsStore(Protocol):
    """The analytics tables.

    Tenancy: ticks and bars are market-wide; every other read names its
    tenant and sees that tenant's rows only (``model_cells`` with tenant
    None: every tenant's, for the evaluator, never an RPC's answer).
    Idempotency: :meth:`write` stores each row once by its id (a tick and a
    snapshot or signal by event id, a fill and a position change by execution
    id, per tenant), however often and in whatever batches it comes again;
    the first copy stored is the one kept. Times are nanoseconds since the
    epoch (bars: seconds). Every read runs within `budget_s` and raises
    :class:`StoreUnavailableError` when the store cannot answer in time or is
    down; a failing write raises (the sink retries it)."""

    def budget(self, remaining_s: float | None) -> float:
        """The query budget of an RPC whose deadline is `remaining_s` away (None: none)."""
        ...

    async def ping(self) -> bool:
        """Whether the store answers."""
        ...

    async def close(self) -> None: ...

    async def write(self, rows: Sequence[Row]) -> dict[str, int]:
        """Store a batch; returns the rows written per table (:data:`TICKS`
        ...: every table, 0 for none; ids stored before, or twice in the
        batch, count once)."""
        ...

    async def bars(
        self, symbol: str, plan: IntervalPlan, lo_s: int, hi_s: int, limit: int, budget_s: float
    ) -> tuple[list[BarRow], bool]:
        """The most recent `limit` bars of `symbol` (trades only: ticks with
        a size) starting within [lo, hi) epoch seconds, aligned to
        ``plan.step_s``, oldest first, and whether older ones were left out.
        Open and close are the first and last trade by (exchange time,
        sequence); volume, notional and tick count are sums. A range reaching
        outside 1970 to 2106 is cut to it."""
        ...

    async def pnl_samples(
        self, tenant: str, start_ns: int, end_ns: int, step_ns: int, budget_s: float
    ) -> list[PnlSample]:
        """The snapshot carried into the range (the last at or before start),
        then the last snapshot of each step of (start, end), oldest first (the
        latest by (as_of, version))."""
        ...

    async def trade_aggregates(
        self, tenant: str, symbol: str, start_ns: int, end_ns: int, budget_s: float
    ) -> TradeAggregates:
        """Sums over the tenant's fills executed in [start, end) (of `symbol`
        only, when set): count, turnover (price x quantity), fees, a currency;
        and over their position changes that closed (part of) a position:
        count, winners, losers, their realised PnL, profit and loss."""
        ...

    async def snapshot_path(
        self, tenant: str, start_ns: int, end_ns: int, budget_s: float
    ) -> list[SnapshotPoint]:
        """The tenant's snapshots before end, from the one carried into the
        range (the last at or before start; without one, from the first),
        by (as_of, version)."""
        ...

    async def model_cells(
        self,
        tenant: str | None,
        model_id: str,
        start_ns: int,
        end_ns: int,
        horizon_ticks: int,
        budget_s: float,
    ) -> list[Cell[tuple[str, str]]]:
        """The predictions of every model version (of `model_id` only, when
        set) that answered on signals whose feature time is in [start, end),
        one per (symbol, feature time, model, version), with their outcome
        over `horizon_ticks` (domain/performance.py), aggregated into cells
        keyed by (model id, version), ordered by key, bucket, call, outcome."""
        ...

    async def strategy_cells(
        self, tenant: str, strategy_id: str, start_ns: int, end_ns: int, horizon_ticks: int, budget_s: float
    ) -> list[Cell[str]]:
        """The tenant's signals in [start, end) (of `strategy_id` only, when
        set) that some model answered, aggregated into cells by strategy."""
        ...

    async def strategy_openings(
        self, tenant: str, strategy_id: str, start_ns: int, budget_s: float
    ) -> dict[str, dict[str, Decimal]]:
        """Quantity held per strategy and symbol before `start`: the signed
        sum of its earlier fills (non-zero ones only)."""
        ...

    async def strategy_fills(
        self, tenant: str, strategy_id: str, start_ns: int, end_ns: int, limit: int, budget_s: float
    ) -> list[tuple[str, StrategyFill]]:
        """(strategy id, fill) of the tenant's fills in [start, end) by
        (execution time, execution id), at most `limit` + 1 (one more tells
        the range holds too many)."""
        ...

    async def marks(self, symbols: Iterable[str], before_ns: int, budget_s: float) -> dict[str, Decimal]:
        """The price (mid, or last trade without a two-sided quote) of each
        symbol's last priced tick before `before_ns` (by exchange time, then
        sequence), looking back at most the configured ``mark_lookback_s``;
        symbols without one are left out."""
        ...
