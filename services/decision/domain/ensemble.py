"""The ensemble: feature vectors to model inputs, and the models' answers
combined into a signal (pure logic, no I/O).

Conventions, stated once:

- A model's score is ``2 * P(up) - 1``: -1 is a sure fall, 1 a sure rise.
- The ensemble strength is the weighted mean of the scores of the models that
  answered (outcome OK); models that failed, timed out or were skipped are
  left out and the signal is flagged ``fallback``. With no model left the
  signal is flat (HOLD, strength 0).
- Confidence is the models' agreement on the direction: ``|sum(w * sign(s))| /
  sum(w)`` over the answering models (1: unanimous, 0: evenly split).
- Direction: BUY when ``strength >= threshold``, SELL when ``<= -threshold``,
  HOLD otherwise.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

# Dimensionless FeatureVector fields the models read, in input order. Price
# levels (mid, EMAs, VWAP) are left out: they do not carry over between
# instruments or price regimes.
FEATURE_NAMES: Final[tuple[str, ...]] = (
    "log_return",
    "window_return",
    "rsi",
    "volatility",
    "order_book_imbalance",
    "spread_bps",
    "ema_crossover",
)


def feature_row(vector: Any, names: Sequence[str] = FEATURE_NAMES) -> list[float]:
    """The model input of a feature vector (the contract's message or the
    features domain's NamedTuple: both have these attributes)."""
    row = [float(getattr(vector, name)) for name in names]
    if not all(math.isfinite(x) for x in row):
        raise ValueError("feature vector holds a NaN or infinite value")
    return row


class Outcome(enum.IntEnum):
    """trading.decision.v1.ModelOutcome (same numbers)."""

    OK = 1
    ERROR = 2
    TIMEOUT = 3
    SKIPPED = 4


class Direction(enum.IntEnum):
    """trading.decision.v1.SignalDirection (same numbers)."""

    BUY = 1
    SELL = 2
    HOLD = 3


@dataclass(frozen=True, slots=True)
class ModelResult:
    """One model's answer within an ensemble evaluation."""

    model_id: str
    version: str
    outcome: Outcome
    score: float = 0.0
    weight: float = 1.0
    latency_s: float = 0.0
    error: str = ""
    # The analog model's: ids of the past market states it voted with.
    analogs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Combined:
    """A strategy's ensemble verdict on one vector."""

    direction: Direction
    strength: float
    confidence: float
    fallback: bool
    fallback_reason: str
    results: tuple[ModelResult, ...]


def combine(results: Sequence[ModelResult], threshold: float) -> Combined:
    """Combine model results into a signal (see the module docstring)."""
    ok = [r for r in results if r.outcome is Outcome.OK and r.weight > 0]
    failed = [r for r in results if r.outcome is not Outcome.OK]
    reason = ""
    if failed:
        parts = [
            f"{r.model_id} {r.outcome.name.lower()}" + (f": {r.error}" if r.error else "") for r in failed
        ]
        reason = "; ".join(parts) + ("; no model left: flat" if not ok else "; used the remaining models")
    if not ok:
        return Combined(Direction.HOLD, 0.0, 0.0, bool(results), reason or "no models", tuple(results))
    total = math.fsum(r.weight for r in ok)
    strength = max(-1.0, min(1.0, math.fsum(r.weight * r.score for r in ok) / total))
    votes = math.fsum(r.weight * (1.0 if r.score > 0 else -1.0 if r.score < 0 else 0.0) for r in ok)
    confidence = abs(votes) / total
    if strength >= threshold:
        direction = Direction.BUY
    elif strength <= -threshold:
        direction = Direction.SELL
    else:
        direction = Direction.HOLD
    return Combined(direction, strength, confidence, bool(failed), reason, tuple(results))
