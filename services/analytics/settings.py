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
