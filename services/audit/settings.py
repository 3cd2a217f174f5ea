"""Settings of the audit service (env prefix ``TRADING_AUDIT_``), e.g.
``TRADING_AUDIT_CONSUMER_GROUP=audit.events`` or
``TRADING_AUDIT_EXCLUDE_TOPICS='["trading.marketdata.ticks"]'``."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AuditSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRADING_AUDIT_", extra="ignore")

    # Kafka consumer group of the store's consumer (one per deployment).
    consumer_group: str = "audit.events"
    # Topics of the event registry not to store (default: none, every topic
    # is audited). Meant for deployments whose market data volume would
    # outgrow one chain; the requirement is to keep everything.
    exclude_topics: list[str] = Field(default_factory=list)
    # The consumer appends a batch when it holds this many events, or when its
    # first event has waited this long; each tenant's part of a batch is one
    # transaction (one chain lock, one INSERT).
    batch_max_events: int = Field(default=1000, ge=1)
    batch_max_interval_s: float = Field(default=0.1, gt=0)
    # Records read per round trip by VerifyChain and ReplayTenant.
    read_batch: int = Field(default=2000, ge=10)
    # Seconds an append (a batch, then each of its events) is retried while
    # PostgreSQL is unavailable, before the per-event attempts (and then the
    # dead-letter topic) take over.
    transient_retry_s: float = Field(default=60.0, gt=0)
    # Deadline of each call to execution and portfolio during a replay.
    live_call_timeout_s: float = Field(default=10.0, gt=0)
    # Kafka consumer group of the lineage graph's consumer (lineage.py); it
    # writes a batch at this many events or after batch_max_interval_s.
    lineage_group: str = "audit.lineage"
    lineage_batch_max_events: int = Field(default=2000, ge=1)
    # GetLineage: entities one page may reach (beyond: `truncated`).
    lineage_max_nodes: int = Field(default=10_000, ge=100)
