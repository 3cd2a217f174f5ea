"""Train the decision models: ``python -m services.decision.train``.

Data: the marketdata synthetic feed's generator (GbmGenerator, the same code
and the same volatility, spread and rate settings as the live feed) runs
through the real FeatureEngine of the features service; each warmed-up
vector is labelled 1 when the symbol's mid is higher ``horizon_ticks`` ticks
later, 0 when lower (ties dropped).

GBM returns are independent by construction, so no model can beat a coin on
pure GBM data. The training feed therefore switches each symbol between
regimes of opposite drift (momentum): the generator is re-created at each
regime change from the last mid, with drift +-``trend_strength`` tick
volatilities per tick. The models learn to read the regime from the window
return and the EMA crossover. On the live feed (pure GBM, no regimes) their
signals carry no edge: this trains and exercises the pipeline honestly, it
does not promise profits.

Models: logistic regression (standardised inputs) and histogram gradient
boosting, scikit-learn. Metrics on a chronological hold-out (the last part of
each symbol's series, so overlapping label windows do not leak).

    python -m services.decision.train [--model-dir DIR] [--ticks N] [--seed S]
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
import sklearn
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from runtime.config import MarketDataSettings, get_settings
from services.decision import models
from services.decision.domain import FEATURE_NAMES, feature_row
from services.decision.settings import DecisionSettings, TrainingSettings
from services.features.domain import FeatureEngine, Tick
from services.marketdata.feeds import (
    DEFAULT_PRICE,
    INITIAL_PRICES,
    SECONDS_PER_YEAR,
    GbmGenerator,
    SymbolSpec,
)

log = logging.getLogger(__name__)

# Tick and lot sizes of the training symbols (as seeded in marketdata's instruments).
_TICK_SIZE = {"EUR-USD": Decimal("0.00001"), "SOL-USD": Decimal("0.001")}
_LOT_SIZE = {"BTC-USD": Decimal("0.00001"), "ETH-USD": Decimal("0.0001"), "SOL-USD": Decimal("0.001")}


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    feature_set_version: str
    description: dict[str, object]


def _spec(symbol: str, price: Decimal) -> SymbolSpec:
    return SymbolSpec(
        symbol, price, _TICK_SIZE.get(symbol, Decimal("0.01")), _LOT_SIZE.get(symbol, Decimal(1))
    )


def symbol_series(
    symbol: str, feed: MarketDataSettings, cfg: TrainingSettings, seed: int, n_symbols: int
) -> tuple[list[list[float]], list[float], str]:
    """Feature rows (warmed-up vectors only) and mids of every tick of one symbol."""
    rng = np.random.default_rng(seed)
    # The live feed splits its rate over its symbols; train at the same per-symbol rate.
    per_symbol_rate = (feed.feed_rate if feed.feed_rate > 0 else 1000.0) / max(n_symbols, 1)
    dt = 1.0 / per_symbol_rate / SECONDS_PER_YEAR
    tick_vol = feed.feed_volatility * np.sqrt(dt)
    # Annualised drift whose per-tick move is trend_strength tick volatilities.
    trend = cfg.trend_strength * tick_vol / dt if dt > 0 else 0.0
    engine = FeatureEngine()
    price = INITIAL_PRICES.get(symbol, DEFAULT_PRICE)
    rows: list[list[float]] = []
    mids: list[float] = []
    sequence = 0
    clock_ns = 1_700_000_000 * 10**9
    step_ns = int(1e9 / per_symbol_rate)
    version = engine.config.version
    while sequence < cfg.ticks_per_symbol:
        length = min(int(rng.geometric(1.0 / cfg.regime_mean_ticks)), cfg.ticks_per_symbol - sequence)
        drift = trend if rng.random() < 0.5 else -trend
        gen = GbmGenerator(
            [_spec(symbol, price)],
            seed=int(rng.integers(2**31)),
            rate=per_symbol_rate,
            volatility=feed.feed_volatility,
            drift=drift,
            spread_bps=feed.feed_spread_bps,
            sequence_start=sequence,
        )
        for raw in gen.next_batch(length, clock_ns):
            assert raw.bid_price is not None and raw.ask_price is not None
            clock_ns += step_ns
            tick = Tick(
                symbol=symbol,
                bid=raw.bid_price,
                ask=raw.ask_price,
                bid_size=raw.bid_size or Decimal(0),
                ask_size=raw.ask_size or Decimal(0),
                last=raw.last_price or Decimal(0),
                last_size=raw.last_size or Decimal(0),
                ts=datetime.fromtimestamp(clock_ns / 1e9, UTC),
                sequence=raw.sequence,
            )
            vector = engine.update(tick)
            if vector is None:
                continue
            mids.append(float(vector.mid_price))
            rows.append(feature_row(vector) if vector.warmed_up else [])
            price = (raw.bid_price + raw.ask_price) / 2
        sequence += length
    return rows, mids, version


def make_dataset(cfg: TrainingSettings, feed: MarketDataSettings) -> Dataset:
    """Labelled vectors of every training symbol, split chronologically per symbol."""
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    version = ""
    for i, symbol in enumerate(cfg.symbols):
        rows, mids, version = symbol_series(symbol, feed, cfg, cfg.seed * 1000 + i, len(cfg.symbols))
        x: list[list[float]] = []
        y: list[int] = []
        h = cfg.horizon_ticks
        for t in range(len(mids) - h):
            if not rows[t] or mids[t + h] == mids[t]:
                continue
            x.append(rows[t])
            y.append(1 if mids[t + h] > mids[t] else 0)
        cut = int(len(x) * (1 - cfg.holdout_fraction))
        # Drop `h` samples at the cut: their labels look into the hold-out.
        xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)
        parts.append((xa[: max(cut - h, 0)], ya[: max(cut - h, 0)], xa[cut:], ya[cut:]))
    return Dataset(
        x_train=np.concatenate([p[0] for p in parts]),
        y_train=np.concatenate([p[1] for p in parts]),
        x_test=np.concatenate([p[2] for p in parts]),
        y_test=np.concatenate([p[3] for p in parts]),
        feature_set_version=version,
        description={
            "generator": "GbmGenerator with momentum regimes -> FeatureEngine",
            "seed": cfg.seed,
            "symbols": list(cfg.symbols),
            "ticks_per_symbol": cfg.ticks_per_symbol,
            "horizon_ticks": cfg.horizon_ticks,
            "trend_strength": cfg.trend_strength,
            "regime_mean_ticks": cfg.regime_mean_ticks,
            "holdout_fraction": cfg.holdout_fraction,
            "feed_volatility": feed.feed_volatility,
            "feed_rate": feed.feed_rate,
            "feed_spread_bps": feed.feed_spread_bps,
        },
    )


@dataclass(frozen=True)
class ModelRecipe:
    model_id: str
    kind: str
    description: str
    build: Callable[[int], models.Classifier]


def _logistic(seed: int) -> models.Classifier:
    pipeline: models.Classifier = make_pipeline(
        StandardScaler(), LogisticRegression(C=1.0, max_iter=500, random_state=seed)
    )
    return pipeline


def _boosting(seed: int) -> models.Classifier:
    # Small and shallow: a few hundred kB, predicts one row in well under a millisecond.
    boosting: models.Classifier = HistGradientBoostingClassifier(
        max_iter=100, max_depth=3, learning_rate=0.1, l2_regularization=1.0, random_state=seed
    )
    return boosting


DEFAULT_RECIPES: tuple[ModelRecipe, ...] = (
    ModelRecipe(
        "logreg-trend", "LOGISTIC_REGRESSION", "Logistic regression on standardised features", _logistic
    ),
    ModelRecipe(
        "gbt-trend", "GRADIENT_BOOSTING", "Histogram gradient boosting, depth 3, 100 trees", _boosting
    ),
)


def _metrics(estimator: models.Classifier, data: Dataset) -> dict[str, float]:
    proba = np.asarray(estimator.predict_proba(data.x_test))[:, 1]
    return {
        "accuracy": float(accuracy_score(data.y_test, proba >= 0.5)),
        "roc_auc": float(roc_auc_score(data.y_test, proba)),
        "log_loss": float(log_loss(data.y_test, proba, labels=[0, 1])),
        "base_rate": float(np.mean(data.y_test)),
        "holdout_samples": float(len(data.y_test)),
    }


def train(
    model_dir: Path,
    cfg: TrainingSettings | None = None,
    feed: MarketDataSettings | None = None,
    recipes: Sequence[ModelRecipe] = DEFAULT_RECIPES,
    now: datetime | None = None,
) -> list[models.ModelMetadata]:
    """Make the data, fit every recipe, write a new version of each. Returns their metadata."""
    cfg = cfg or TrainingSettings()
    feed = feed or get_settings().marketdata
    started = time.perf_counter()
    data = make_dataset(cfg, feed)
    log.info(
        "training data: %d train / %d hold-out vectors in %.1fs",
        len(data.y_train),
        len(data.y_test),
        time.perf_counter() - started,
    )
    written: list[models.ModelMetadata] = []
    for recipe in recipes:
        t0 = time.perf_counter()
        estimator = recipe.build(cfg.seed)
        estimator.fit(data.x_train, data.y_train)  # type: ignore[attr-defined]
        at = now or datetime.now(UTC)
        meta = models.ModelMetadata(
            model_id=recipe.model_id,
            kind=recipe.kind,
            version=models.next_version(model_dir, recipe.model_id, at),
            trained_at=at.isoformat(),
            feature_names=list(FEATURE_NAMES),
            feature_set_version=data.feature_set_version,
            training_samples=len(data.y_train),
            metrics=_metrics(estimator, data),
            artifact_sha256="",
            description=recipe.description,
            data=data.description,
            library={
                "scikit-learn": sklearn.__version__,
                "numpy": np.__version__,
                "python": platform.python_version(),
            },
        )
        path = models.save(model_dir, meta, estimator)
        written.append(meta)
        log.info(
            "trained %s %s in %.1fs: %s -> %s",
            meta.model_id,
            meta.version,
            time.perf_counter() - t0,
            meta.metrics,
            path,
        )
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.decision.train", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--model-dir", type=Path, help="default: TRADING_DECISION_MODEL_DIR or <var_dir>/models"
    )
    parser.add_argument("--ticks", type=int, help="synthetic ticks per symbol")
    parser.add_argument("--seed", type=int, help="data seed")
    parser.add_argument("--horizon", type=int, help="label horizon in ticks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    updates = {
        k: v
        for k, v in (("ticks_per_symbol", args.ticks), ("seed", args.seed), ("horizon_ticks", args.horizon))
        if v is not None
    }
    cfg = TrainingSettings().model_copy(update=updates)
    model_dir = args.model_dir or DecisionSettings().resolved_model_dir(get_settings().var_dir)
    for meta in train(model_dir, cfg):
        print(
            f"{meta.model_id} {meta.version}: accuracy {meta.metrics['accuracy']:.3f}, "
            f"roc_auc {meta.metrics['roc_auc']:.3f}"
            f" on {int(meta.metrics['holdout_samples'])} hold-out vectors"
        )
    print(f"models written under {model_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
