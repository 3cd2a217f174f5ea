"""Settings of the decision service (env prefix ``TRADING_DECISION_``).

Kept here rather than in ``runtime.config`` until the lead moves them there,
e.g. ``TRADING_DECISION_MODEL_DIR=/srv/models`` or
``TRADING_DECISION_INFERENCE_BUDGET_MS=10``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainingSettings(BaseSettings):
    """How `python -m services.decision.train` makes its data and models."""

    model_config = SettingsConfigDict(env_prefix="TRADING_DECISION_TRAIN_", extra="ignore")

    # Synthetic ticks per symbol; ~1/6 of the vectors are held out.
    ticks_per_symbol: int = Field(default=6000, ge=500)
    symbols: list[str] = Field(default_factory=lambda: ["BTC-USD", "ETH-USD", "SOL-USD", "AAPL"])
    seed: int = 7
    # The label: sign of the mid's move over this many ticks of the symbol.
    horizon_ticks: int = Field(default=20, ge=1)
    # GBM returns are unpredictable by construction, so the training feed
    # switches between up- and down-trending regimes: each regime's drift per
    # tick is `trend_strength` times the tick volatility; regimes last
    # `regime_mean_ticks` on average (geometric). See services/decision/train.py.
    trend_strength: float = Field(default=0.15, ge=0)
    regime_mean_ticks: int = Field(default=300, ge=10)
    # Share of each symbol's series (its end) held out for the metrics.
    holdout_fraction: float = Field(default=0.25, gt=0, lt=1)


class DecisionSettings(BaseSettings):
    """Model files, inference budget and signal retention."""

    model_config = SettingsConfigDict(env_prefix="TRADING_DECISION_", extra="ignore")

    # Where versioned model files live; None means <Settings.var_dir>/models.
    model_dir: Path | None = None
    # Train the default model set at start-up when the directory holds none.
    train_if_missing: bool = True
    # Time budget of one model's inference; a slower model is skipped (TIMEOUT).
    inference_budget_ms: float = Field(default=25.0, gt=0)
    # Threads running model inference (a hung model occupies one).
    inference_threads: int = Field(default=4, ge=1)
    # How often the strategy cache is reloaded from PostgreSQL (other replicas' changes).
    strategy_refresh_s: float = Field(default=1.0, gt=0)
    # Signals older than this are deleted (GetSignals reads PostgreSQL).
    signal_retention_hours: float = Field(default=72.0, gt=0)
    # Deadline of the PlaceOrder call to execution.
    place_order_timeout_s: float = Field(default=2.0, gt=0)
    # How long an order intent may stay pending (no answer from execution)
    # before it expires for good (IntentStatus EXPIRED, OrderIntentExpired).
    # Ten minutes: far beyond any PlaceOrder deadline and retry, short enough
    # that a strategy is not held up by an intent nobody will answer.
    intent_ttl_s: float = Field(default=600.0, gt=0)
    # How often the sweeper looks for due intents.
    intent_sweep_s: float = Field(default=5.0, gt=0)
    # Signals without an intent are inserted in batches of at most this many,
    # at most signal_flush_ms after the first of a batch was decided.
    signal_batch_size: int = Field(default=500, ge=1)
    signal_flush_ms: float = Field(default=50.0, gt=0)
    # Vector keys remembered to skip duplicates without a round trip (the
    # unique key in PostgreSQL catches the ones forgotten).
    recent_vector_keys: int = Field(default=100_000, ge=1)

    @model_validator(mode="after")
    def _ttl_outlives_a_placement(self) -> DecisionSettings:
        # An intent is retried only while its answer could still come before
        # it expires (domain.intent_may_retry): a TTL within the deadline
        # would expire intents that could never have been answered.
        if self.intent_ttl_s <= self.place_order_timeout_s:
            raise ValueError("intent_ttl_s must be longer than place_order_timeout_s")
        return self

    def resolved_model_dir(self, var_dir: Path) -> Path:
        return self.model_dir if self.model_dir is not None else var_dir / "models"
