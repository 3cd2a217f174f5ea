"""The ClickHouse adapter of analytics' store (services/analytics/ports.py):
schema, idempotent batch writes and the queries behind the RPCs.

One code path and one schema for both backends: chdb in process (the
default, `ClickHouseSettings.url` empty) or a ClickHouse server over HTTP.

Tables (all partitioned by day of their event time, except hourly bars by month):

- `analytics_ticks`: every tick, ordered by (symbol, exchange_time, event_id);
  market-wide, no tenant.
- `analytics_bars_1s|1m|1h`: OHLCV per symbol and bucket, AggregatingMergeTree
  fed by materialized views on `analytics_ticks` (trades only: last_size > 0).
  5 and 15 minute bars are re-aggregated from minute bars, days from hours.
- `analytics_fills`, `analytics_position_changes`, `analytics_portfolio_snapshots`:
  per tenant, ordered by (tenant_id, ..., time, id). Fills carry their
  order's strategy id (empty for fills stored before it was kept).
- `analytics_signals`: decision's signals per tenant, one row per signal with
  its models' scores as parallel arrays, ordered by (tenant_id, feature time,
  event id); evaluated against the ticks by the performance queries below
  (definitions: domain/performance.py).

Redelivery never double-counts, by three layers:

1. a batch writes only rows whose id (event id; execution id for fills and
   position changes) is not stored yet (one indexed lookup per table and batch),
   so a batch redelivered after it was written, in any composition, adds nothing
   (and the bar views see nothing twice);
2. each insert carries `insert_deduplication_token` = hash of its ids, with
   `deduplicate_blocks_in_dependent_materialized_views`, so two consumers
   racing with the same block write it once, views included;
3. raw tables are ReplacingMergeTree keyed by the id, and their queries read
   FINAL, so a duplicate that slipped past both is never counted.

Every RPC query runs under a time budget; a slow, failing or unreachable
ClickHouse raises StoreUnavailableError (the API answers UNAVAILABLE), and a
circuit breaker refuses further queries for a moment after repeated failures.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from domain.positions import Side
from runtime.circuit_breaker import CircuitBreaker
from runtime.config import ClickHouseSettings
from runtime.storage.clickhouse import ConnectClickHouse, QueryRows, create_clickhouse
from services.analytics import domain
from services.analytics.domain import (
    BarRow,
    FillRow,
    PnlSample,
    PositionChangeRow,
    Row,
    SignalRow,
    SnapshotRow,
    TickRow,
)
from services.analytics.domain.performance import MODEL_OUTCOME_OK, Call, Cell, Outcome, StrategyFill
from services.analytics.ports import (
    DATETIME_MAX_S,
    FILLS,
    POSITION_CHANGES,
    SIGNALS,
    SNAPSHOTS,
    TICKS,
    StoreUnavailableError,
    TradeAggregates,
)
from services.analytics.settings import AnalyticsSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

BAR_TABLES: Final = {"1s": "analytics_bars_1s", "1m": "analytics_bars_1m", "1h": "analytics_bars_1h"}

_DEC: Final = "Decimal(38, 12)"
_TIME: Final = "DateTime64(9, 'UTC')"
# How many recent insert blocks each table remembers for token deduplication.
_DEDUP: Final = "SETTINGS non_replicated_deduplication_window = 1000"
# ClickHouse error codes that mean "busy or slow", not "bad SQL".
_TRANSIENT_CODES: Final = ("TIMEOUT_EXCEEDED", "TOO_MANY_SIMULTANEOUS_QUERIES", "MEMORY_LIMIT_EXCEEDED")


def _bar_table(name: str, bucket: str, partition: str) -> list[str]:
    table = BAR_TABLES[name]
    order = f"Tuple({_TIME}, UInt64)"
    return [
        f"""CREATE TABLE IF NOT EXISTS {table} (
    symbol LowCardinality(String),
    bucket DateTime('UTC'),
    open AggregateFunction(argMin, {_DEC}, {order}),
    high SimpleAggregateFunction(max, {_DEC}),
    low SimpleAggregateFunction(min, {_DEC}),
    close AggregateFunction(argMax, {_DEC}, {order}),
    volume SimpleAggregateFunction(sum, {_DEC}),
    notional SimpleAggregateFunction(sum, Decimal(76, 24)),
    tick_count SimpleAggregateFunction(sum, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY {partition}
ORDER BY (symbol, bucket)
{_DEDUP}""",
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {table}_mv TO {table} AS
SELECT symbol, {bucket} AS bucket,
       argMinState(last_price, (exchange_time, sequence)) AS open,
       max(last_price) AS high, min(last_price) AS low,
       argMaxState(last_price, (exchange_time, sequence)) AS close,
       sum(last_size) AS volume,
       sum(toDecimal256(last_price, 12) * toDecimal256(last_size, 12)) AS notional,
       count() AS tick_count
FROM {TICKS}
WHERE last_size > 0
GROUP BY symbol, bucket""",
    ]


SCHEMA: Final[tuple[str, ...]] = (
    f"""CREATE TABLE IF NOT EXISTS {TICKS} (
    event_id String,
    symbol LowCardinality(String),
    source LowCardinality(String),
    sequence UInt64,
    exchange_time {_TIME},
    receive_time {_TIME},
    bid_price {_DEC},
    bid_size {_DEC},
    ask_price {_DEC},
    ask_size {_DEC},
    last_price {_DEC},
    last_size {_DEC},
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toDate(exchange_time)
ORDER BY (symbol, exchange_time, event_id)
{_DEDUP}""",
    *_bar_table("1s", "toDateTime(toStartOfSecond(exchange_time), 'UTC')", "toDate(bucket)"),
    *_bar_table("1m", "toStartOfMinute(exchange_time)", "toDate(bucket)"),
    *_bar_table("1h", "toStartOfHour(exchange_time)", "toYYYYMM(bucket)"),
    f"""CREATE TABLE IF NOT EXISTS {FILLS} (
    tenant_id LowCardinality(String),
    event_id String,
    execution_id String,
    order_id String,
    symbol LowCardinality(String),
    side Enum8('BUY' = 1, 'SELL' = 2),
    price {_DEC},
    quantity {_DEC},
    fee {_DEC},
    currency LowCardinality(String),
    executed_at {_TIME},
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3),
    strategy_id LowCardinality(String) DEFAULT ''
) ENGINE = ReplacingMergeTree
PARTITION BY toDate(executed_at)
ORDER BY (tenant_id, symbol, executed_at, execution_id)
{_DEDUP}""",
    # Tables made before fills kept their strategy get the column (empty).
    f"ALTER TABLE {FILLS} ADD COLUMN IF NOT EXISTS strategy_id LowCardinality(String) DEFAULT ''",
    f"""CREATE TABLE IF NOT EXISTS {POSITION_CHANGES} (
    tenant_id LowCardinality(String),
    event_id String,
    execution_id String,
    order_id String,
    symbol LowCardinality(String),
    previous_quantity {_DEC},
    quantity {_DEC},
    realized_pnl_change {_DEC},
    fee {_DEC},
    position_version UInt64,
    updated_at {_TIME},
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toDate(updated_at)
ORDER BY (tenant_id, symbol, execution_id)
{_DEDUP}""",
    f"""CREATE TABLE IF NOT EXISTS {SNAPSHOTS} (
    tenant_id LowCardinality(String),
    event_id String,
    as_of {_TIME},
    version UInt64,
    currency LowCardinality(String),
    cash {_DEC},
    equity {_DEC},
    market_value {_DEC},
    gross_exposure {_DEC},
    realized_pnl {_DEC},
    unrealized_pnl {_DEC},
    fees {_DEC},
    position_symbols Array(LowCardinality(String)),
    position_market_values Array({_DEC}),
    position_realized_net Array({_DEC}),
    position_unrealized Array({_DEC}),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toDate(as_of)
ORDER BY (tenant_id, as_of, event_id)
{_DEDUP}""",
    f"""CREATE TABLE IF NOT EXISTS {SIGNALS} (
    tenant_id LowCardinality(String),
    event_id String,
    signal_id String,
    strategy_id LowCardinality(String),
    symbol LowCardinality(String),
    direction Enum8('BUY' = 1, 'SELL' = 2, 'HOLD' = 3),
    strength Float64,
    confidence Float64,
    fallback Bool,
    feature_as_of {_TIME},
    feature_tick_sequence UInt64,
    generated_at {_TIME},
    model_ids Array(LowCardinality(String)),
    model_versions Array(LowCardinality(String)),
    model_outcomes Array(UInt8),
    model_scores Array(Float64),
    model_weights Array(Float64),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toDate(feature_as_of)
ORDER BY (tenant_id, feature_as_of, event_id)
{_DEDUP}""",
)


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` means ClickHouse is down, slow or busy (not a bad query)."""
    if isinstance(exc, OperationalError | OSError | TimeoutError):
        return True
    return isinstance(exc, DatabaseError) and any(code in str(exc) for code in _TRANSIENT_CODES)


def server_dsn(url: str, connect_timeout_s: float, read_timeout_s: float) -> str:
    """`url` with clickhouse-connect's socket timeouts, unless it sets them."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("connect_timeout", f"{connect_timeout_s:g}")
    query.setdefault("send_receive_timeout", f"{read_timeout_s:g}")
    return urlunsplit(parts._replace(query=urlencode(query)))


def _ids_token(table: str, keys: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for key in sorted(keys):
        digest.update(key.encode())
        digest.update(b"\0")
    return f"{table}:{digest.hexdigest()}"


def _dec(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(value)


class ClickHouseAnalyticsStore:
    """The analytics tables behind one ClickHouse client, opened lazily so the
    service starts (and answers UNAVAILABLE) while ClickHouse is down."""

    def __init__(
        self,
        clickhouse: ClickHouseSettings,
        settings: AnalyticsSettings | None = None,
        *,
        database: str | None = None,
    ) -> None:
        self._ch_settings = clickhouse
        self._settings = settings or AnalyticsSettings()
        self._database = database
        self._client: ConnectClickHouse | None = None
        self._opening: asyncio.Task[ConnectClickHouse] | None = None
        self._breaker = CircuitBreaker(
            "clickhouse",
            failure_threshold=self._settings.breaker_failure_threshold,
            reset_timeout_s=self._settings.breaker_reset_timeout_s,
        )

    # ------------------------------------------------------------------ connection

    async def _open(self) -> ConnectClickHouse:
        ch = self._ch_settings
        if ch.url:
            read_timeout = max(10.0, self._settings.query_timeout_s * 2)
            dsn = server_dsn(ch.url, self._settings.connect_timeout_s, read_timeout)
            ch = ch.model_copy(update={"url": dsn})
        client = await create_clickhouse(ch, database=self._database, service="analytics")
        try:
            for ddl in SCHEMA:
                await client.command(ddl)
        except BaseException:
            await client.close()
            raise
        return client

    async def client(self) -> ConnectClickHouse:
        """The open client; one opening attempt runs at a time, shared by callers."""
        if self._client is not None:
            return self._client
        if self._opening is None or self._opening.done():
            self._opening = asyncio.create_task(self._open())
        opening = self._opening  # another caller may clear the attribute meanwhile
        try:
            # Shielded: a caller's budget running out must not cancel the
            # attempt other callers (and the consumer) wait for.
            self._client = await asyncio.shield(opening)
        finally:
            if opening.done() and self._opening is opening:
                self._opening = None
        return self._client

    async def close(self) -> None:
        if self._opening is not None and not self._opening.done():
            self._opening.cancel()
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def ping(self) -> bool:
        try:
            return await self._guarded(lambda ch: ch.ping(), self._settings.query_timeout_s)
        except StoreUnavailableError:
            return False

    async def _guarded(self, work: Callable[[ConnectClickHouse], Awaitable[T]], budget_s: float) -> T:
        """Run `work` within `budget_s`, through the breaker; transient failures
        become StoreUnavailableError."""
        if not self._breaker.allow():
            raise StoreUnavailableError(
                "ClickHouse is unavailable (circuit open after repeated failures)",
                retry_after_s=max(self._breaker.retry_after(), 0.1),
            )
        try:
            async with asyncio.timeout(budget_s):
                result = await work(await self.client())
        except TimeoutError as exc:
            self._breaker.record_failure()
            raise StoreUnavailableError(f"ClickHouse did not answer within {budget_s:.2f}s") from exc
        except Exception as exc:
            if not is_transient(exc):
                self._breaker.record_neutral()
                raise
            self._breaker.record_failure()
            raise StoreUnavailableError(f"ClickHouse is unavailable: {exc}") from exc
        self._breaker.record_success()
        return result

    def budget(self, remaining_s: float | None) -> float:
        """The query budget of an RPC: the configured one, or less when the
        call's own deadline is nearer (keeping a little for the reply)."""
        if remaining_s is None:
            return self._settings.query_timeout_s
        return max(0.01, min(self._settings.query_timeout_s, remaining_s - 0.05))

    async def _query(self, sql: str, params: dict[str, Any], budget_s: float) -> QueryRows:
        # The server stops the query itself when the budget is gone.
        limit = max(1, int(budget_s + 0.999))
        text = f"{sql}\nSETTINGS max_execution_time = {limit}"
        return await self._guarded(lambda ch: ch.query(text, params), budget_s)

    # ------------------------------------------------------------------ writes

    async def write(self, rows: Sequence[Row]) -> dict[str, int]:
        """Store a batch idempotently; returns rows written per table (ids
        already stored are skipped). Raises on failure: nothing is partly
        counted twice when the batch is written again."""
        ch = await self.client()
        ticks: dict[str, TickRow] = {}
        fills: dict[str, FillRow] = {}
        changes: dict[str, PositionChangeRow] = {}
        snapshots: dict[str, SnapshotRow] = {}
        signals: dict[str, SignalRow] = {}
        for row in rows:
            if isinstance(row, TickRow):
                ticks.setdefault(row.event_id, row)
            elif isinstance(row, FillRow):
                fills.setdefault(f"{row.tenant_id}/{row.execution_id}", row)
            elif isinstance(row, PositionChangeRow):
                changes.setdefault(f"{row.tenant_id}/{row.execution_id}", row)
            elif isinstance(row, SignalRow):
                signals.setdefault(f"{row.tenant_id}/{row.event_id}", row)
            else:
                snapshots.setdefault(f"{row.tenant_id}/{row.event_id}", row)
        written = {
            TICKS: await self._write_ticks(ch, ticks),
            FILLS: await self._write_fills(ch, fills),
            POSITION_CHANGES: await self._write_changes(ch, changes),
            SNAPSHOTS: await self._write_snapshots(ch, snapshots),
            SIGNALS: await self._write_signals(ch, signals),
        }
        return written

    async def _insert(
        self, ch: ConnectClickHouse, table: str, keyed: dict[str, Any], columns: Sequence[str], values: Any
    ) -> int:
        if not keyed:
            return 0
        settings = {
            "insert_deduplication_token": _ids_token(table, keyed),
            "deduplicate_blocks_in_dependent_materialized_views": 1,
        }
        await ch.insert(table, [values(r) for r in keyed.values()], columns, settings=settings)
        return len(keyed)

    async def _write_ticks(self, ch: ConnectClickHouse, rows: dict[str, TickRow]) -> int:
        if rows:
            times = [r.exchange_time_ns for r in rows.values()]
            found = await ch.query(
                f"""SELECT event_id FROM {TICKS}
WHERE symbol IN {{symbols:Array(String)}}
  AND exchange_time BETWEEN fromUnixTimestamp64Nano({{lo:Int64}}, 'UTC')
                        AND fromUnixTimestamp64Nano({{hi:Int64}}, 'UTC')
  AND event_id IN {{ids:Array(String)}}""",
                {"symbols": sorted({r.symbol for r in rows.values()}), "lo": min(times), "hi": max(times),
                 "ids": list(rows)},
            )  # fmt: skip
            for (event_id,) in found.rows:
                rows.pop(event_id, None)
        return await self._insert(
            ch, TICKS, rows,
            ("event_id", "symbol", "source", "sequence", "exchange_time", "receive_time", "bid_price",
             "bid_size", "ask_price", "ask_size", "last_price", "last_size"),
            lambda r: (r.event_id, r.symbol, r.source, r.sequence, r.exchange_time_ns, r.receive_time_ns,
                       r.bid_price, r.bid_size, r.ask_price, r.ask_size, r.last_price, r.last_size),
        )  # fmt: skip

    async def _known_executions(self, ch: ConnectClickHouse, table: str, keys: Iterable[str]) -> set[str]:
        pairs = [k.split("/", 1) for k in keys]
        if not pairs:
            return set()
        found = await ch.query(
            f"""SELECT tenant_id, execution_id FROM {table}
WHERE tenant_id IN {{tenants:Array(String)}} AND execution_id IN {{ids:Array(String)}}""",
            {"tenants": sorted({t for t, _ in pairs}), "ids": sorted({e for _, e in pairs})},
        )
        return {f"{t}/{e}" for t, e in found.rows}

    async def _write_fills(self, ch: ConnectClickHouse, rows: dict[str, FillRow]) -> int:
        for key in await self._known_executions(ch, FILLS, rows):
            rows.pop(key, None)
        return await self._insert(
            ch, FILLS, rows,
            ("tenant_id", "event_id", "execution_id", "order_id", "symbol", "side", "price", "quantity",
             "fee", "currency", "executed_at", "strategy_id"),
            lambda r: (r.tenant_id, r.event_id, r.execution_id, r.order_id, r.symbol, r.side, r.price,
                       r.quantity, r.fee, r.currency, r.executed_at_ns, r.strategy_id),
        )  # fmt: skip

    async def _write_changes(self, ch: ConnectClickHouse, rows: dict[str, PositionChangeRow]) -> int:
        for key in await self._known_executions(ch, POSITION_CHANGES, rows):
            rows.pop(key, None)
        return await self._insert(
            ch, POSITION_CHANGES, rows,
            ("tenant_id", "event_id", "execution_id", "order_id", "symbol", "previous_quantity", "quantity",
             "realized_pnl_change", "fee", "position_version", "updated_at"),
            lambda r: (r.tenant_id, r.event_id, r.execution_id, r.order_id, r.symbol, r.previous_quantity,
                       r.quantity, r.realized_pnl_change, r.fee, r.position_version, r.updated_at_ns),
        )  # fmt: skip

    async def _write_snapshots(self, ch: ConnectClickHouse, rows: dict[str, SnapshotRow]) -> int:
        if rows:
            found = await ch.query(
                f"""SELECT tenant_id, event_id FROM {SNAPSHOTS}
WHERE tenant_id IN {{tenants:Array(String)}} AND event_id IN {{ids:Array(String)}}""",
                {"tenants": sorted({r.tenant_id for r in rows.values()}),
                 "ids": sorted({r.event_id for r in rows.values()})},
            )  # fmt: skip
            for tenant, event_id in found.rows:
                rows.pop(f"{tenant}/{event_id}", None)
        return await self._insert(
            ch, SNAPSHOTS, rows,
            ("tenant_id", "event_id", "as_of", "version", "currency", "cash", "equity", "market_value",
             "gross_exposure", "realized_pnl", "unrealized_pnl", "fees", "position_symbols",
             "position_market_values", "position_realized_net", "position_unrealized"),
            lambda r: (r.tenant_id, r.event_id, r.as_of_ns, r.version, r.currency, r.cash, r.equity,
                       r.market_value, r.gross_exposure, r.realized_pnl, r.unrealized_pnl, r.fees,
                       list(r.position_symbols), list(r.position_market_values),
                       list(r.position_realized_net), list(r.position_unrealized)),
        )  # fmt: skip

    async def _write_signals(self, ch: ConnectClickHouse, rows: dict[str, SignalRow]) -> int:
        if rows:
            times = [r.feature_as_of_ns for r in rows.values()]
            found = await ch.query(
                f"""SELECT tenant_id, event_id FROM {SIGNALS}
WHERE tenant_id IN {{tenants:Array(String)}}
  AND feature_as_of BETWEEN fromUnixTimestamp64Nano({{lo:Int64}}, 'UTC')
                        AND fromUnixTimestamp64Nano({{hi:Int64}}, 'UTC')
  AND event_id IN {{ids:Array(String)}}""",
                {"tenants": sorted({r.tenant_id for r in rows.values()}), "lo": min(times), "hi": max(times),
                 "ids": sorted({r.event_id for r in rows.values()})},
            )  # fmt: skip
            for tenant, event_id in found.rows:
                rows.pop(f"{tenant}/{event_id}", None)
        return await self._insert(
            ch, SIGNALS, rows,
            ("tenant_id", "event_id", "signal_id", "strategy_id", "symbol", "direction", "strength",
             "confidence", "fallback", "feature_as_of", "feature_tick_sequence", "generated_at", "model_ids",
             "model_versions", "model_outcomes", "model_scores", "model_weights"),
            lambda r: (r.tenant_id, r.event_id, r.signal_id, r.strategy_id, r.symbol, r.direction, r.strength,
                       r.confidence, r.fallback, r.feature_as_of_ns, r.feature_tick_sequence,
                       r.generated_at_ns, list(r.model_ids), list(r.model_versions), list(r.model_outcomes),
                       list(r.model_scores), list(r.model_weights)),
        )  # fmt: skip

    # ------------------------------------------------------------------ queries

    async def bars(
        self, symbol: str, plan: domain.IntervalPlan, lo_s: int, hi_s: int, limit: int, budget_s: float
    ) -> tuple[list[BarRow], bool]:
        """The most recent `limit` bars of `symbol` starting within [lo, hi)
        epoch seconds (oldest first), and whether older ones were left out.
        Buckets are DateTime (1970 to 2106): a range reaching outside is cut
        to it (before 1970 holds no bar), never passed on as a negative or
        overflowing UInt32."""
        lo_s, hi_s = max(lo_s, 0), min(hi_s, DATETIME_MAX_S)
        if hi_s <= lo_s:
            return [], False
        result = await self._query(bars_sql(plan), bars_params(symbol, plan, lo_s, hi_s, limit), budget_s)
        rows = [
            BarRow(
                int(r[0]), _dec(r[1]), _dec(r[2]), _dec(r[3]), _dec(r[4]), _dec(r[5]), _dec(r[6]), int(r[7])
            )
            for r in result.rows
        ]
        truncated = len(rows) > limit
        return list(reversed(rows[:limit])), truncated

    async def pnl_samples(
        self, tenant: str, start_ns: int, end_ns: int, step_ns: int, budget_s: float
    ) -> list[PnlSample]:
        """The snapshot carried into the range (the last at or before start),
        then the last snapshot of each step, oldest first."""
        params = {"tenant": tenant, "start": start_ns, "end": end_ns, "step": step_ns}
        columns = "toUnixTimestamp64Nano(as_of), currency, equity, realized_pnl, unrealized_pnl, fees"
        carried = await self._query(
            f"""SELECT {columns} FROM {SNAPSHOTS} FINAL
WHERE tenant_id = {{tenant:String}} AND as_of <= fromUnixTimestamp64Nano({{start:Int64}}, 'UTC')
ORDER BY as_of DESC, version DESC LIMIT 1""",
            params,
            budget_s,
        )
        steps = await self._query(
            f"""SELECT untuple(argMax(tuple({columns}), tuple(as_of, version)))
FROM {SNAPSHOTS} FINAL
WHERE tenant_id = {{tenant:String}}
  AND as_of > fromUnixTimestamp64Nano({{start:Int64}}, 'UTC')
  AND as_of < fromUnixTimestamp64Nano({{end:Int64}}, 'UTC')
GROUP BY intDiv(toUnixTimestamp64Nano(as_of) - {{start:Int64}} + {{step:Int64}} - 1, {{step:Int64}}) AS k
ORDER BY k""",
            params,
            budget_s,
        )
        return [
            PnlSample(int(r[0]), str(r[1]), _dec(r[2]), _dec(r[3]), _dec(r[4]), _dec(r[5]))
            for r in [*carried.rows, *steps.rows]
        ]

    async def trade_aggregates(
        self, tenant: str, symbol: str, start_ns: int, end_ns: int, budget_s: float
    ) -> TradeAggregates:
        params = {"tenant": tenant, "symbol": symbol, "start": start_ns, "end": end_ns}
        in_range = """tenant_id = {tenant:String}
  AND executed_at >= fromUnixTimestamp64Nano({start:Int64}, 'UTC')
  AND executed_at < fromUnixTimestamp64Nano({end:Int64}, 'UTC')
  AND ({symbol:String} = '' OR symbol = {symbol:String})"""
        fills = await self._query(
            f"""SELECT count(), sum(toDecimal256(price, 12) * toDecimal256(quantity, 12)),
       sum(fee), any(currency)
FROM {FILLS} FINAL WHERE {in_range}""",
            params,
            budget_s,
        )
        # A trade is a closing fill: the position was open and the fill moved it toward zero.
        trades = await self._query(
            f"""SELECT countIf(closing), countIf(closing AND pnl > 0), countIf(closing AND pnl < 0),
       sumIf(pnl, closing), sumIf(pnl, closing AND pnl > 0), sumIf(pnl, closing AND pnl < 0)
FROM (
    SELECT realized_pnl_change AS pnl,
           previous_quantity != 0
               AND ((quantity - previous_quantity) > 0) != (previous_quantity > 0) AS closing
    FROM {POSITION_CHANGES} FINAL
    WHERE tenant_id = {{tenant:String}}
      AND execution_id IN (SELECT execution_id FROM {FILLS} FINAL WHERE {in_range})
)""",
            params,
            budget_s,
        )
        f, t = fills.rows[0], trades.rows[0]
        return TradeAggregates(
            fill_count=int(f[0]),
            turnover=_dec(f[1]),
            fees=_dec(f[2]),
            currency=str(f[3] or ""),
            trade_count=int(t[0]),
            winning=int(t[1]),
            losing=int(t[2]),
            gross_pnl=_dec(t[3]),
            gross_profit=_dec(t[4]),
            gross_loss=_dec(t[5]),
        )

    async def snapshot_path(
        self, tenant: str, start_ns: int, end_ns: int, budget_s: float
    ) -> list[tuple[int, Decimal, Decimal, list[str], list[Decimal], list[Decimal], list[Decimal]]]:
        """The tenant's snapshots from the one carried into the range to end:
        (at, gross exposure, equity, symbols, market values, realised - fees, unrealised)."""
        result = await self._query(
            f"""SELECT toUnixTimestamp64Nano(as_of), gross_exposure, equity, position_symbols,
       position_market_values, position_realized_net, position_unrealized
FROM {SNAPSHOTS} FINAL
WHERE tenant_id = {{tenant:String}}
  AND as_of < fromUnixTimestamp64Nano({{end:Int64}}, 'UTC')
  AND as_of >= (SELECT max(as_of) FROM {SNAPSHOTS}
                WHERE tenant_id = {{tenant:String}}
                  AND as_of <= fromUnixTimestamp64Nano({{start:Int64}}, 'UTC'))
ORDER BY as_of, version""",
            {"tenant": tenant, "start": start_ns, "end": end_ns},
            budget_s,
        )
        return [
            (int(r[0]), _dec(r[1]), _dec(r[2]), list(r[3]), [_dec(v) for v in r[4]],
             [_dec(v) for v in r[5]], [_dec(v) for v in r[6]])
            for r in result.rows
        ]  # fmt: skip

    # ------------------------------------------------------------------ performance

    def _outcome_params(self, start_ns: int, end_ns: int, horizon_ticks: int) -> dict[str, Any]:
        """The signals' range and the ticks that decide their outcomes: from
        `outcome_lookback_s` before the range (the reference ticks) to
        `outcome_lookahead_s` after it (the ticks N later)."""
        lookback = int(self._settings.outcome_lookback_s * domain.NS_PER_S)
        lookahead = int(self._settings.outcome_lookahead_s * domain.NS_PER_S)
        return {
            "start": start_ns,
            "end": end_ns,
            "lo": max(start_ns - lookback, domain.QUERY_NS_MIN),
            "hi": min(end_ns + lookahead, domain.QUERY_NS_MAX),
            "horizon": horizon_ticks,
        }

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
        set) on signals in [start, end), aggregated into cells keyed by
        (model id, version). A model's score on one feature vector counts
        once, however many strategies (or, with `tenant` None, tenants) used
        it. `tenant` None means every tenant: the evaluator's platform-wide
        figures, never an RPC's answer."""
        params = {**self._outcome_params(start_ns, end_ns, horizon_ticks), "model": model_id}
        where = _signals_in_range(tenant)
        if tenant is not None:
            params["tenant"] = tenant
        result = await self._query(model_cells_sql(where), params, budget_s)
        return [
            Cell((str(r[0]), str(r[1])), int(r[2]), Call(int(r[3])), Outcome(int(r[4])), int(r[5]),
                 float(r[6]), float(r[7]))
            for r in result.rows
        ]  # fmt: skip

    async def strategy_cells(
        self, tenant: str, strategy_id: str, start_ns: int, end_ns: int, horizon_ticks: int, budget_s: float
    ) -> list[Cell[str]]:
        """The tenant's signals in [start, end) (of `strategy_id` only, when
        set) that some model answered, aggregated into cells by strategy."""
        params = {
            **self._outcome_params(start_ns, end_ns, horizon_ticks),
            "tenant": tenant,
            "strategy": strategy_id,
        }
        result = await self._query(strategy_cells_sql(_signals_in_range(tenant)), params, budget_s)
        return [
            Cell(str(r[0]), int(r[1]), Call(int(r[2])), Outcome(int(r[3])), int(r[4]), float(r[5]),
                 float(r[6]))
            for r in result.rows
        ]  # fmt: skip

    async def strategy_openings(
        self, tenant: str, strategy_id: str, start_ns: int, budget_s: float
    ) -> dict[str, dict[str, Decimal]]:
        """Quantity held per strategy and symbol before `start`: the sum of
        its earlier fills (non-zero ones only)."""
        result = await self._query(
            f"""SELECT strategy_id, symbol, sum(if(side = 'BUY', quantity, -quantity)) AS held
FROM {FILLS} FINAL
WHERE tenant_id = {{tenant:String}}
  AND executed_at < fromUnixTimestamp64Nano({{start:Int64}}, 'UTC')
  AND ({{strategy:String}} = '' OR strategy_id = {{strategy:String}})
GROUP BY strategy_id, symbol
HAVING held != 0""",
            {"tenant": tenant, "start": start_ns, "strategy": strategy_id},
            budget_s,
        )
        out: dict[str, dict[str, Decimal]] = {}
        for strategy, symbol, held in result.rows:
            out.setdefault(str(strategy), {})[str(symbol)] = _dec(held)
        return out

    async def strategy_fills(
        self, tenant: str, strategy_id: str, start_ns: int, end_ns: int, limit: int, budget_s: float
    ) -> list[tuple[str, StrategyFill]]:
        """(strategy id, fill) of the tenant's fills in [start, end) in
        execution order, at most `limit` + 1 (one more tells the range holds
        too many)."""
        result = await self._query(
            f"""SELECT strategy_id, symbol, side, price, quantity, fee, currency,
       toUnixTimestamp64Nano(executed_at)
FROM {FILLS} FINAL
WHERE tenant_id = {{tenant:String}}
  AND executed_at >= fromUnixTimestamp64Nano({{start:Int64}}, 'UTC')
  AND executed_at < fromUnixTimestamp64Nano({{end:Int64}}, 'UTC')
  AND ({{strategy:String}} = '' OR strategy_id = {{strategy:String}})
ORDER BY executed_at, execution_id
LIMIT {{fetch:UInt64}}""",
            {"tenant": tenant, "start": start_ns, "end": end_ns, "strategy": strategy_id, "fetch": limit + 1},
            budget_s,
        )
        return [
            (str(r[0]), StrategyFill(str(r[1]), Side.BUY if r[2] == "BUY" else Side.SELL, _dec(r[3]),
                                     _dec(r[4]), _dec(r[5]), str(r[6]), int(r[7])))
            for r in result.rows
        ]  # fmt: skip

    async def marks(self, symbols: Iterable[str], before_ns: int, budget_s: float) -> dict[str, Decimal]:
        """The price (mid, or last trade without a two-sided quote) of each
        symbol's last tick before `before_ns`, looking back at most
        `mark_lookback_s`; symbols without such a tick are left out."""
        wanted = sorted(set(symbols))
        if not wanted:
            return {}
        lookback = int(self._settings.mark_lookback_s * domain.NS_PER_S)
        # No FINAL: a duplicate tick has the same price, and the newest row per
        # symbol is read from the end of the sorted key.
        result = await self._query(
            f"""SELECT symbol, {_TICK_PRICE} AS price
FROM {TICKS}
WHERE symbol IN {{symbols:Array(String)}}
  AND exchange_time >= fromUnixTimestamp64Nano({{lo:Int64}}, 'UTC')
  AND exchange_time < fromUnixTimestamp64Nano({{before:Int64}}, 'UTC')
  AND price > 0
ORDER BY symbol, exchange_time DESC, sequence DESC
LIMIT 1 BY symbol""",
            {"symbols": wanted, "before": before_ns, "lo": max(before_ns - lookback, domain.QUERY_NS_MIN)},
            budget_s,
        )
        return {str(symbol): _dec(price) for symbol, price in result.rows}


# A tick's price for outcomes and marks: the mid of a two-sided quote, else
# the last trade price (0 when neither: such ticks are skipped).
_TICK_PRICE: Final = "if(bid_price > 0 AND ask_price > 0, (bid_price + ask_price) / 2, last_price)"


def _signals_in_range(tenant: str | None) -> str:
    in_range = """feature_as_of >= fromUnixTimestamp64Nano({start:Int64}, 'UTC')
  AND feature_as_of < fromUnixTimestamp64Nano({end:Int64}, 'UTC')"""
    return in_range if tenant is None else f"tenant_id = {{tenant:String}}\n  AND {in_range}"


def _outcomes_sql(where: str) -> str:
    """Per tick of the symbols signalled in the range (`where` on the signals
    table): its time and the outcome code (performance.Outcome) of a
    prediction made at it: the price `horizon` ticks later against its own.
    Ticks without a price are skipped, duplicates read once (FINAL)."""
    return f"""SELECT symbol, exchange_time,
       toUInt8(if(future = 0, {Outcome.UNRESOLVED:d}, {Outcome.TIE:d} + sign(future - price))) AS outcome
FROM (
    SELECT symbol, exchange_time, price,
           leadInFrame(price, {{horizon:UInt32}}) OVER (
               PARTITION BY symbol ORDER BY exchange_time, sequence, event_id
               ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING) AS future
    FROM (
        SELECT symbol, exchange_time, sequence, event_id, {_TICK_PRICE} AS price
        FROM {TICKS} FINAL
        WHERE symbol IN (SELECT DISTINCT symbol FROM {SIGNALS} WHERE {where})
          AND exchange_time >= fromUnixTimestamp64Nano({{lo:Int64}}, 'UTC')
          AND exchange_time < fromUnixTimestamp64Nano({{hi:Int64}}, 'UTC')
          AND price > 0
    )
)"""


def _bucket(p: str) -> str:
    """performance.bucket_of in SQL."""
    return f"toUInt8(least(greatest(floor({p} * 10), 0), 9))"


def model_cells_sql(where: str) -> str:
    """One prediction per model version and feature vector (ARRAY JOIN of the
    scores of the models that answered), its reference tick found by ASOF
    JOIN (the last at or before the vector's time; none: outcome 0,
    unresolved), aggregated into cells."""
    return f"""SELECT model_id, model_version, {_bucket("p")} AS bucket,
       if(p >= 0.5, {Call.UP:d}, {Call.DOWN:d}) AS call, px.outcome AS outcome,
       count(), sum(p), sum(p * p)
FROM (
    SELECT symbol, feature_as_of AS at, m.1 AS model_id, m.2 AS model_version, (m.4 + 1) / 2 AS p
    FROM {SIGNALS} FINAL
    ARRAY JOIN arrayZip(model_ids, model_versions, model_outcomes, model_scores) AS m
    WHERE {where}
      AND m.3 = {MODEL_OUTCOME_OK:d}
      AND ({{model:String}} = '' OR m.1 = {{model:String}})
    LIMIT 1 BY symbol, at, model_id, model_version
) AS preds
ASOF LEFT JOIN ({_outcomes_sql(where)}) AS px ON preds.symbol = px.symbol AND preds.at >= px.exchange_time
GROUP BY model_id, model_version, bucket, call, outcome
ORDER BY model_id, model_version, bucket, call, outcome"""


def strategy_cells_sql(where: str) -> str:
    """Each signal of a strategy that some model answered, p from its
    strength, its call from its direction, aggregated into cells."""
    return f"""SELECT strategy_id, {_bucket("p")} AS bucket, call, px.outcome AS outcome,
       count(), sum(p), sum(p * p)
FROM (
    SELECT symbol, feature_as_of AS at, strategy_id, (strength + 1) / 2 AS p,
           multiIf(direction = 'BUY', {Call.UP:d}, direction = 'SELL', {Call.DOWN:d}, {Call.NONE:d}) AS call
    FROM {SIGNALS} FINAL
    WHERE {where}
      AND has(model_outcomes, {MODEL_OUTCOME_OK:d})
      AND ({{strategy:String}} = '' OR strategy_id = {{strategy:String}})
) AS preds
ASOF LEFT JOIN ({_outcomes_sql(where)}) AS px ON preds.symbol = px.symbol AND preds.at >= px.exchange_time
GROUP BY strategy_id, bucket, call, outcome
ORDER BY strategy_id, bucket, call, outcome"""


def bars_sql(plan: domain.IntervalPlan) -> str:
    """GetBars' query: the base buckets of [lo, hi) re-bucketed to the step,
    newest first, one more than the limit (to tell whether some were left out)."""
    table = BAR_TABLES[plan.base]
    return f"""SELECT intDiv(toUnixTimestamp(bucket), {{step:UInt32}}) * {{step:UInt32}} AS start,
       argMinMerge(open), max(high), min(low), argMaxMerge(close), sum(volume), sum(notional),
       sum(tick_count)
FROM {table}
WHERE symbol = {{symbol:String}}
  AND bucket >= toDateTime({{lo:UInt32}}, 'UTC') AND bucket < toDateTime({{hi:UInt32}}, 'UTC')
GROUP BY start
ORDER BY start DESC
LIMIT {{fetch:UInt32}}"""


def bars_params(symbol: str, plan: domain.IntervalPlan, lo_s: int, hi_s: int, limit: int) -> dict[str, Any]:
    """GetBars' parameters; ``lo``/``hi`` are UInt32 (DateTime seconds): clamped to its range."""

    def clamp(v: int) -> int:
        return min(max(v, 0), DATETIME_MAX_S)

    return {"symbol": symbol, "step": plan.step_s, "lo": clamp(lo_s), "hi": clamp(hi_s), "fetch": limit + 1}
