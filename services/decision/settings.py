"""Settings of the decision service: the ``decision`` section of the settings
tree (runtime.config.sections), env ``TRADING_DECISION__<FIELD>``, e.g.
``TRADING_DECISION__MODEL_DIR=/srv/models`` or
``TRADING_DECISION__INFERENCE_BUDGET_MS=10``; and ``decision.train``, how the
models are trained (``TRADING_DECISION__TRAIN__<FIELD>``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings

from runtime.config import section_config


class TrainingSettings(BaseSettings):
    """How `python -m services.decision.train` makes its data, evaluates its
    models and decides which are promoted (served)."""

    model_config = section_config("decision.train")

    source: Literal["regime", "gbm", "replay"] = "regime"
    """Where the ticks come from: "regime" (marketdata's regime-switching generator, the market of
    TRADING_MARKETDATA__FEED=regime), "gbm" (the plain synthetic feed: nothing to learn, the control)
    or "replay" (a CSV/Parquet tick file in ReplayFeed's format, `replay_file`)."""
    replay_file: Path | None = None
    """The CSV or Parquet tick file of source "replay" (ReplayFeed's format)."""
    ticks_per_symbol: int = Field(default=6000, ge=500)
    """Synthetic ticks per symbol (regime, gbm)."""
    symbols: list[str] = Field(default_factory=lambda: ["BTC-USD", "ETH-USD", "SOL-USD", "AAPL"])
    """Symbols to generate ticks for (regime, gbm) or to take from the replay file."""
    seed: int = 7
    """The regime generator's seed (the live feed with TRADING_MARKETDATA__FEED_SEED set to the same
    value quotes the same paths; its default, 42, is another)."""
    horizon_ticks: int = Field(default=20, ge=1)
    """The label: sign of the mid's move over this many ticks of the symbol."""
    holdout_fraction: float = Field(default=0.5, gt=0, lt=1)
    """Walk-forward evaluation (services/decision/domain/evaluation.py): the last this much of the samples,
    by time, is held out."""
    walk_forward_folds: int = Field(default=5, ge=1, le=50)
    """Blocks the held-out samples are cut into, each evaluated after training on all before it."""
    promotion_margin: float = Field(default=0.03, ge=-1, le=1)
    """The gate: promoted only when the mean walk-forward balanced accuracy beats the better baseline
    (majority, last-return sign) by at least this much, on more than half of the folds. 0.03 = three
    points of balanced accuracy: 24 models trained on GBM data (no edge to find; 12 seeds, the
    default size) scored edges from -0.019 to +0.008 (sd 0.007), the regime-trained defaults +0.09
    and +0.13 (docs/model-report.md)."""
    promote_without_gate: bool = False
    """Promote every version whatever its evaluation (still recorded, its reason saying so). Only for
    test fixtures whose few hundred ticks are too little to judge a model and that need models to
    exist, not to be good."""


class DecisionSettings(BaseSettings):
    """Model files, inference budget and signal retention."""

    model_config = section_config("decision")

    model_dir: Path | None = None
    """Where versioned model files live; unset: <var_dir>/models."""
    train_if_missing: bool = True
    """Train the default model set at start-up when the directory holds no promoted model (a fresh
    machine, or only versions the gate refused)."""
    inference_budget_ms: float = Field(default=25.0, gt=0)
    """Time budget of one model's inference; a slower model is skipped (TIMEOUT)."""
    strategy_refresh_s: float = Field(default=1.0, gt=0)
    """How often the strategy cache is reloaded from PostgreSQL (other replicas' changes)."""
    replica_beat_s: float = Field(default=0.25, gt=0)
    """Replicas share the symbols (runtime.membership): each heartbeats this often."""
    replica_ttl_s: float = Field(default=1.0, gt=0)
    """A replica not heard from for this long is taken for dead and its symbols move (the failover time
    after a replica is killed)."""
    signal_retention_hours: float = Field(default=72.0, gt=0)
    """Signals older than this are deleted (GetSignals reads PostgreSQL)."""
    place_order_timeout_s: float = Field(default=2.0, gt=0)
    """Deadline of the PlaceOrder call to execution."""
    intent_ttl_s: float = Field(default=600.0, gt=0)
    """How long an order intent may stay pending (no answer from execution) before it expires for good
    (IntentStatus EXPIRED, OrderIntentExpired). Ten minutes: far beyond any PlaceOrder deadline and
    retry, short enough that a strategy is not held up by an intent nobody will answer."""
    intent_sweep_s: float = Field(default=5.0, gt=0)
    """How often the sweeper looks for due intents."""
    signal_batch_size: int = Field(default=500, ge=1)
    """Signals without an intent are inserted in batches of at most this many."""
    signal_flush_ms: float = Field(default=50.0, gt=0)
    """A batch of signals is inserted at most this long after its first was decided."""
    recent_vector_keys: int = Field(default=100_000, ge=1)
    """Vector keys remembered to skip duplicates without a round trip (the unique key in PostgreSQL
    catches the ones forgotten)."""
    drift_window_vectors: int = Field(default=5_000, ge=10)
    """Feature drift (services/decision/domain/drift.py): the live vectors a model's input distribution is
    measured over."""

    memory_enabled: bool = True
    """Keep the market memory (services/decision/memory.py; the vector store is the `vectors` section) and
    serve the analog model from it."""
    memory_horizon_ticks: int = Field(default=20, ge=1)
    """A market state is written once its outcome is known this many ticks later (the training label's
    horizon)."""
    memory_batch_size: int = Field(default=500, ge=1)
    """Market states are written in batches of at most this many."""
    memory_flush_ms: float = Field(default=500.0, gt=0)
    """A batch of market states is written at most this long after its first was ready."""
    memory_retention_days: float = Field(default=30.0, gt=0)
    """Market states older than this are deleted."""
    memory_max_lookups: int = Field(default=8, ge=1)
    """Searches of the memory in flight at most; beyond, the analog model answers TIMEOUT at once."""

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
