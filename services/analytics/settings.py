"""Settings of the analytics service: the ``analytics`` section of the
settings tree (runtime.config.sections), env ``TRADING_ANALYTICS__<FIELD>``,
e.g. ``TRADING_ANALYTICS__BATCH_MAX_ROWS=20000`` or
``TRADING_ANALYTICS__QUERY_TIMEOUT_S=1``; and ``analytics.correlation``,
the correlation task's (``TRADING_ANALYTICS__CORRELATION__<FIELD>``).

Where ClickHouse is (chdb or a server URL) is ``runtime.config.ClickHouseSettings``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings

from runtime.config import section_config


class AnalyticsSettings(BaseSettings):
    """The Kafka sink's batching and the ClickHouse time budgets."""

    model_config = section_config("analytics")

    consumer_group: str = "analytics.sink"
    """Kafka consumer group of the ClickHouse sink (one per deployment)."""
    batch_max_rows: int = Field(default=5000, ge=1)
    """A batch is written when it holds this many rows, or when its first row has waited
    `batch_max_interval_s`."""
    batch_max_interval_s: float = Field(default=0.5, gt=0)
    """The longest a batch's first row waits before the batch is written."""
    query_timeout_s: float = Field(default=2.0, gt=0)
    """Budget of one RPC's ClickHouse work (shorter when the call's deadline is): a slow or unreachable
    ClickHouse fails the RPC with UNAVAILABLE in time."""
    connect_timeout_s: float = Field(default=2.0, gt=0)
    """Timeout of opening a connection to a ClickHouse server (not used for chdb)."""
    breaker_failure_threshold: int = Field(default=5, ge=1)
    """Consecutive ClickHouse failures before RPCs are refused without trying."""
    breaker_reset_timeout_s: float = Field(default=2.0, gt=0)
    """How long RPCs are refused after the breaker opened, before ClickHouse is tried again."""

    outcome_lookback_s: float = Field(default=60.0, gt=0)
    """Model and strategy performance (performance.py has the definitions): a signal's reference tick is
    looked for at most this long before the range."""
    outcome_lookahead_s: float = Field(default=900.0, gt=0)
    """A signal's N-th later tick is looked for at most this long after it (later: unresolved)."""
    mark_lookback_s: float = Field(default=86_400.0, gt=0)
    """How far back the price a strategy's open position is marked to is looked for."""
    performance_max_fills: int = Field(default=100_000, ge=1)
    """Fills GetStrategyPerformance replays at most; a range holding more is refused (narrow it), never
    answered from part of it."""
    evaluation_interval_s: float = Field(default=60.0, ge=0)
    """How often the evaluator behind the trading_model_* gauges scores every tenant's signals of the last
    `evaluation_window_s`; 0 turns it off."""
    evaluation_window_s: float = Field(default=3600.0, gt=0, le=7 * 86_400)
    """The evaluator's window; at most the 7 days an RPC may ask for (the query's cost grows with it)."""
    evaluation_horizon_ticks: int = Field(default=20, ge=1, le=1000)
    """The evaluator's outcome horizon, in ticks of the symbol (the training label's)."""
    evaluation_max_models: int = Field(default=20, ge=1)
    """The evaluator keeps gauges for at most this many model versions (the most scored)."""


class CorrelationSettings(BaseSettings):
    """The correlation task: the ``analytics.correlation`` section of the
    settings tree (env ``TRADING_ANALYTICS__CORRELATION__<FIELD>``)."""

    model_config = section_config("analytics.correlation")

    interval_s: float = Field(default=300.0, ge=0)
    """How often the clusters are computed and published; 0 turns the task off."""
    window_s: float = Field(default=6 * 3600.0, gt=0)
    """Bars of this window (ending now) are compared."""
    bar: Literal["1s", "1m", "1h"] = "1m"
    """The bar interval whose returns are compared."""
    threshold: float = Field(default=0.8, ge=0, le=1)
    """Two instruments are linked when their returns' correlation is at least this."""
    min_returns: int = Field(default=30, ge=3)
    """Fewer common returns than this say nothing: the pair is not linked."""
    max_symbols: int = Field(default=500, ge=2)
    """At most this many instruments (the most traded bars) are compared."""
    query_timeout_s: float = Field(default=10.0, gt=0)
    """Budget of the bar query."""
