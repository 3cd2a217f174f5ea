"""Settings of the audit service: the ``audit`` section of the settings tree
(runtime.config.sections), env ``TRADING_AUDIT__<FIELD>``, e.g.
``TRADING_AUDIT__CONSUMER_GROUP=audit.events`` or
``TRADING_AUDIT__EXCLUDE_TOPICS='["trading.marketdata.ticks"]'``."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from runtime.config import section_config


class AuditSettings(BaseSettings):
    """The event store's and the lineage graph's consumers, chain reads and replays."""

    model_config = section_config("audit")

    consumer_group: str = "audit.events"
    """Kafka consumer group of the store's consumer (one per deployment)."""
    exclude_topics: list[str] = Field(default_factory=list)
    """Topics of the event registry not to store (default: none, every topic is audited). Meant for
    deployments whose market data volume would outgrow one chain; the requirement is to keep
    everything."""
    batch_max_events: int = Field(default=1000, ge=1)
    """The consumer appends a batch when it holds this many events, or when its first event has waited
    `batch_max_interval_s`; each tenant's part of a batch is one transaction (one chain lock, one
    INSERT)."""
    batch_max_interval_s: float = Field(default=0.1, gt=0)
    """The longest a batch's first event waits before the batch is appended (also the lineage consumer's)."""
    read_batch: int = Field(default=2000, ge=10)
    """Records read per round trip by VerifyChain and ReplayTenant."""
    transient_retry_s: float = Field(default=60.0, gt=0)
    """Seconds an append (a batch, then each of its events) is retried while PostgreSQL is unavailable,
    before the per-event attempts (and then the dead-letter topic) take over."""
    live_call_timeout_s: float = Field(default=10.0, gt=0)
    """Deadline of each call to execution and portfolio during a replay."""
    lineage_group: str = "audit.lineage"
    """Kafka consumer group of the lineage graph's consumer (lineage.py)."""
    lineage_batch_max_events: int = Field(default=2000, ge=1)
    """The lineage consumer writes a batch at this many events, or after `batch_max_interval_s`."""
    lineage_max_nodes: int = Field(default=10_000, ge=100)
    """GetLineage: entities one page may reach (beyond: `truncated`)."""
