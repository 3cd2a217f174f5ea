"""Settings of the analytics service (env prefix ``TRADING_ANALYTICS_``), e.g.
``TRADING_ANALYTICS_BATCH_MAX_ROWS=20000`` or ``TRADING_ANALYTICS_QUERY_TIMEOUT_S=1``.

Where ClickHouse is (chdb or a server URL) is ``runtime.config.ClickHouseSettings``.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AnalyticsSettings(BaseSettings):
    """The Kafka sink's batching and the ClickHouse time budgets."""

    model_config = SettingsConfigDict(env_prefix="TRADING_ANALYTICS_", extra="ignore")

    consumer_group: str = "analytics.sink"
    # A batch is written when it holds this many rows, or when its first row
    # waited this long, whichever comes first.
    batch_max_rows: int = Field(default=5000, ge=1)
    batch_max_interval_s: float = Field(default=0.5, gt=0)
    # Budget of one RPC's ClickHouse work (shorter when the call's deadline is):
    # a slow or unreachable ClickHouse fails the RPC with UNAVAILABLE in time.
    query_timeout_s: float = Field(default=2.0, gt=0)
    # Opening a connection to a ClickHouse server (not used for chdb).
    connect_timeout_s: float = Field(default=2.0, gt=0)
    # Consecutive ClickHouse failures before RPCs are refused without trying,
    # and for how long.
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_reset_timeout_s: float = Field(default=2.0, gt=0)

    # Model and strategy performance (performance.py has the definitions).
    # A signal's reference tick is looked for at most this long before the
    # range, its N-th later tick at most this long after it (later: unresolved).
    outcome_lookback_s: float = Field(default=60.0, gt=0)
    outcome_lookahead_s: float = Field(default=900.0, gt=0)
    # How far back the price a strategy's open position is marked to is looked for.
    mark_lookback_s: float = Field(default=86_400.0, gt=0)
    # Fills GetStrategyPerformance replays at most; a range holding more is
    # refused (narrow it), never answered from part of it.
    performance_max_fills: int = Field(default=100_000, ge=1)
    # The evaluator behind the trading_model_* gauges: every interval (0: off)
    # it scores every tenant's signals of the last window, at this horizon,
    # and keeps gauges for at most this many model versions (the most scored).
    evaluation_interval_s: float = Field(default=60.0, ge=0)
    # At most the 7 days an RPC may ask for: the query's cost grows with it.
    evaluation_window_s: float = Field(default=3600.0, gt=0, le=7 * 86_400)
    evaluation_horizon_ticks: int = Field(default=20, ge=1, le=1000)
    evaluation_max_models: int = Field(default=20, ge=1)
