"""The market state embedding: a normalised window of a symbol's recent
feature vectors as one unit vector (pure logic, no I/O).

A *market state* is what the last ``span`` feature vectors of one symbol say
about its market: :data:`WINDOW` vectors taken every :data:`STRIDE` vectors
back from the newest (the newest, 4 vectors before it, 8, ..., 28: 29
vectors, about the label horizon of 20 ticks and a half again). Each vector
contributes :data:`COMPONENTS` numbers, every one of them scale-free, so the
states of a 30,000 USD coin and of a 100 USD share are comparable and a
stored state keeps its meaning across model versions (nothing here is
fitted to data):

- ``log_return / volatility``: the last tick's move in units of the rolling
  per-tick volatility;
- ``window_return / (volatility * sqrt(20))``: the move over the volatility
  window (20 ticks) in units of its expected size;
- ``(rsi - 50) / 15``;
- ``ema_crossover / (1.5 * volatility)``;
- ``4 * ln(volatility / volatility of the newest vector)``: whether
  volatility has been rising or falling over the window (0 for the newest).

The constants bring each component to about unit spread on the training
market (measured: 1.0, 1.2, 0.9, 1.0, 0.9). Components are clipped to
[-5, 5], weighted by ``DECAY ** age`` (the newest counts most), flattened
oldest first and scaled to unit length: similarity is the cosine.

Before a symbol has ``span`` warmed-up vectors, the missing older positions
repeat the oldest vector it has (training and the live service do the same).

Z-scored variants (each input standardised by training statistics, keeping
the absolute volatility level) scored up to 0.644 balanced accuracy
walk-forward, 0.636 with this window, against about 0.625 for this one
(docs/model-report.md); this one was kept because it needs no fitted
statistics: a state stored today is still comparable after a retrain, and
across instruments of any price scale.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from typing import Any, Final

from services.decision.domain.ensemble import FEATURE_NAMES

# The FeatureVector fields the embedding reads, in this order.
EMBEDDING_FEATURES: Final[tuple[str, ...]] = (
    "log_return",
    "window_return",
    "rsi",
    "volatility",
    "ema_crossover",
)
WINDOW: Final = 8
STRIDE: Final = 4
DECAY: Final = 0.85
COMPONENTS: Final = 5
DIMENSION: Final = WINDOW * COMPONENTS
# Vectors one state looks back over (the newest included).
SPAN: Final = (WINDOW - 1) * STRIDE + 1
# Stored with every state; a change of anything above is a new version (and a new collection).
EMBEDDING_VERSION: Final = f"w{WINDOW}s{STRIDE}d{round(DECAY * 100)}-v1"
# The volatility window of the feature set (FeatureConfig.volatility_window).
_VOL_WINDOW_SQRT: Final = math.sqrt(20)
_CLIP: Final = 5.0
_WEIGHTS: Final = tuple(DECAY ** (WINDOW - 1 - i) for i in range(WINDOW))  # oldest first
_TINY: Final = 1e-12
_STATE_NAMESPACE: Final = uuid.UUID("6f1d2f5e-7a4b-5c0d-9e8f-3a2b1c0d4e5f")


def components(row: Sequence[float]) -> tuple[float, float, float, float]:
    """The per-vector numbers of a row of EMBEDDING_FEATURES, all but the
    volatility trend (which needs the window's newest vector): r1, rw, rsi, ema."""
    log_return, window_return, rsi, volatility, ema = row
    v = max(volatility, _TINY)
    return (
        log_return / v,
        window_return / (v * _VOL_WINDOW_SQRT),
        (rsi - 50.0) / 15.0,
        ema / (1.5 * v),
    )


def embed(rows: Sequence[Sequence[float]]) -> list[float]:
    """The unit embedding of a window: `rows` are EMBEDDING_FEATURES rows of
    one symbol, oldest first, the newest last; only the last SPAN are read
    (fewer: the oldest repeats)."""
    if not rows:
        raise ValueError("a market state needs at least one feature row")
    n = len(rows)
    newest = rows[-1]
    v_now = max(newest[3], _TINY)
    out: list[float] = []
    for i in range(WINDOW):  # oldest position first
        back = (WINDOW - 1 - i) * STRIDE
        row = rows[max(n - 1 - back, 0)]
        weight = _WEIGHTS[i]
        r1, rw, rsi, ema = components(row)
        trend = 4.0 * math.log(max(row[3], _TINY) / v_now)
        for x in (r1, rw, rsi, ema, trend):
            out.append(weight * min(max(x, -_CLIP), _CLIP))
    norm = math.sqrt(math.fsum(x * x for x in out))
    if not math.isfinite(norm):
        raise ValueError("market state holds a NaN or infinite value")
    if norm < _TINY:
        return out  # an all-zero state (a flat, silent market): similar to nothing
    return [x / norm for x in out]


def series_embeddings(rows: Sequence[Sequence[float] | None]) -> list[list[float] | None]:
    """The embedding at every position of one symbol's vectors (None where
    the vector is not warmed up); each reads the warmed-up rows up to it."""
    out: list[list[float] | None] = []
    window: list[Sequence[float]] = []
    for row in rows:
        if row is None:
            out.append(None)
            continue
        window.append(row)
        if len(window) > SPAN:
            del window[0]
        out.append(embed(window))
    return out


def embedding_row(vector: Any) -> list[float]:
    """EMBEDDING_FEATURES of a feature vector (the contract's message or the
    features domain's NamedTuple), checked finite."""
    row = [float(getattr(vector, name)) for name in EMBEDDING_FEATURES]
    if not all(math.isfinite(x) for x in row):
        raise ValueError("feature vector holds a NaN or infinite value")
    return row


def rows_of(feature_rows: Sequence[Sequence[float]]) -> list[list[float]]:
    """EMBEDDING_FEATURES columns of FEATURE_NAMES rows (training data)."""
    index = [FEATURE_NAMES.index(n) for n in EMBEDDING_FEATURES]
    return [[r[i] for i in index] for r in feature_rows]


def state_id(symbol: str, feature_set_version: str, tick_sequence: int, as_of_ns: int) -> str:
    """The id of the market state at one feature vector: the same vector
    (redelivered, seen by another replica) always names the same state."""
    key = "\x1f".join((EMBEDDING_VERSION, symbol, feature_set_version, str(tick_sequence), str(as_of_ns)))
    return str(uuid.uuid5(_STATE_NAMESPACE, key))
