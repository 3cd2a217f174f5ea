"""Train, evaluate and promote the decision models: ``python -m services.decision.train``.

Data (TrainingSettings.source):

- ``regime`` (default): marketdata's :class:`RegimeGenerator`, the very
  generator of the live ``TRADING_MARKETDATA__FEED=regime`` feed (trending,
  mean-reverting and volatility-clustered regimes, services/marketdata/regimes.py),
  one symbol at a time with the training seed (the per-symbol paths do not
  depend on which other symbols are quoted);
- ``gbm``: the plain GBM synthetic feed (``feed=synthetic``), returns
  independent by construction: the control, where no model can have an edge;
- ``replay``: a tick file in ReplayFeed's format (CSV or Parquet), e.g.
  services/marketdata/samples/.

The ticks run through the real FeatureEngine of the features service; each
warmed-up vector is labelled 1 when the symbol's mid is higher
``horizon_ticks`` ticks later, 0 when lower (ties dropped).

Each model is evaluated walk-forward against two baselines and promoted
only if it beats the better one by ``promotion_margin`` (evaluation.py says
how and why). Then it is fitted on all the data and saved as a new version
with its evaluation; a version that passed is promoted (served), one that
did not is kept for inspection but not served (models.py). ``--shadow``
names the new versions as shadows instead: scored live beside the promoted
versions, never traded, promoted later by hand
(``python -m services.decision.models promote``).

Models: logistic regression (standardised inputs) and histogram gradient
boosting, scikit-learn, on MODEL_FEATURES (the vector without the book's
spread and imbalance); and the analog model (analog.py), a k-nearest-neighbour
vote over the market states (embedding.py) of the samples before each
fold, exact offline, the service's market memory live. The training CLI logs one progress line per symbol
and per model, with the time taken, under a progress bar (tqdm, on a terminal).

    python -m services.decision.train [--model-dir DIR] [--source regime|gbm|replay]
        [--replay-file F] [--ticks N] [--seed S] [--horizon H] [--margin M] [--shadow]
"""

from __future__ import annotations

import argparse
import logging
import math
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Never, cast

import numpy as np
import sklearn
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from runtime.config import MarketDataSettings, get_settings
from services.decision import models
from services.decision.domain import FEATURE_NAMES, analog, embedding, evaluation, feature_row
from services.decision.domain.analog import AnalogClassifier
from services.decision.domain.drift import training_profile
from services.decision.settings import DecisionSettings, TrainingSettings
from services.features.domain import FeatureEngine, Tick
from services.marketdata.domain import RawTick
from services.marketdata.feeds import GbmGenerator, RegimeGenerator, replay_ticks, seeded_spec
from services.marketdata.regimes import RegimeParams

log = logging.getLogger(__name__)

# Synthetic ticks are stamped from here on, one per symbol tick interval.
_CLOCK_START_NS = 1_700_000_000 * 10**9
_LAST_RETURN = FEATURE_NAMES.index("log_return")


@dataclass(frozen=True)
class Dataset:
    """Labelled vectors of every symbol, with the times the evaluation needs."""

    x: np.ndarray
    y: np.ndarray
    times_ns: np.ndarray  # the vector's tick time
    label_ends_ns: np.ndarray  # the time of the tick its label looks at
    feature_set_version: str
    description: dict[str, object]
    # The market state at each sample (embedding.py): the analog model's input.
    embeddings: np.ndarray = field(default_factory=lambda: np.empty((0, embedding.DIMENSION)))

    @property
    def last_return(self) -> np.ndarray:
        return self.x[:, _LAST_RETURN]


@dataclass(frozen=True)
class Series:
    """One symbol's vectors in time order: feature rows ([] until warmed up), mids, times."""

    rows: list[list[float]]
    mids: list[float]
    times_ns: list[int]
    feature_set_version: str


def to_tick(raw: RawTick) -> Tick | None:
    """The features service's Tick of a feed's raw tick (None: one marketdata would reject)."""
    if raw.error or raw.bid_price is None or raw.ask_price is None:
        return None
    return Tick(
        symbol=raw.symbol,
        bid=raw.bid_price,
        ask=raw.ask_price,
        bid_size=raw.bid_size or Decimal(0),
        ask_size=raw.ask_size or Decimal(0),
        last=raw.last_price or Decimal(0),
        last_size=raw.last_size or Decimal(0),
        ts=datetime.fromtimestamp(raw.exchange_time_ns / 1e9, UTC),
        sequence=raw.sequence,
    )


def featurize(ticks: Iterable[RawTick]) -> Series:
    """Run one symbol's raw ticks through the features service's engine."""
    engine = FeatureEngine()
    rows: list[list[float]] = []
    mids: list[float] = []
    times: list[int] = []
    for raw in ticks:
        tick = to_tick(raw)
        if tick is None:
            continue
        vector = engine.update(tick)
        if vector is None:
            continue
        mids.append(float(vector.mid_price))
        rows.append(feature_row(vector) if vector.warmed_up else [])
        times.append(raw.exchange_time_ns)
    return Series(rows, mids, times, engine.config.version)


def synthetic_ticks(
    symbol: str,
    source: str,
    *,
    ticks: int,
    seed: int,
    feed: MarketDataSettings,
    n_symbols: int,
    params: RegimeParams | None = None,
) -> list[RawTick]:
    """`ticks` ticks of one symbol from the regime or the GBM generator,
    stamped at the symbol's share of the feed rate."""
    per_symbol_rate = (feed.feed_rate if feed.feed_rate > 0 else 1000.0) / max(n_symbols, 1)
    spec = seeded_spec(symbol)
    generator: RegimeGenerator | GbmGenerator
    if source == "regime":
        generator = RegimeGenerator([spec], seed=seed, spread_bps=feed.feed_spread_bps, params=params)
    elif source == "gbm":
        generator = GbmGenerator(
            [spec],
            seed=seed,
            rate=per_symbol_rate,
            volatility=feed.feed_volatility,
            drift=0.0,
            spread_bps=feed.feed_spread_bps,
        )
    else:
        raise ValueError(f"not a synthetic source: {source!r}")
    out = generator.next_batch(ticks, _CLOCK_START_NS)
    step_ns = int(1e9 / per_symbol_rate)
    return [replace(t, exchange_time_ns=_CLOCK_START_NS + i * step_ns) for i, t in enumerate(out)]


def labelled(series: Series, horizon: int) -> list[int]:
    """Positions of one symbol's warmed-up vectors whose label is defined
    (the mid `horizon` vectors later differs)."""
    mids = series.mids
    return [t for t in range(len(mids) - horizon) if series.rows[t] and mids[t + horizon] != mids[t]]


def label(series: Series, horizon: int) -> tuple[list[list[float]], list[int], list[int], list[int]]:
    """Rows, labels, times and label-end times of one symbol's warmed-up vectors."""
    x: list[list[float]] = []
    y: list[int] = []
    times: list[int] = []
    ends: list[int] = []
    mids = series.mids
    for t in labelled(series, horizon):
        x.append(series.rows[t])
        y.append(1 if mids[t + horizon] > mids[t] else 0)
        times.append(series.times_ns[t])
        ends.append(series.times_ns[t + horizon])
    return x, y, times, ends


def _quiet(step: str) -> None:
    pass


def series_of(
    cfg: TrainingSettings, feed: MarketDataSettings, progress: Callable[[str], None] = _quiet
) -> dict[str, Series]:
    """Every symbol's vectors from the configured source (`progress` told after each symbol)."""
    if cfg.source == "replay":
        if cfg.replay_file is None:
            raise ValueError("source 'replay' needs replay_file (TRADING_DECISION__TRAIN__REPLAY_FILE)")
        by_symbol: dict[str, list[RawTick]] = {}
        for chunk in replay_ticks(cfg.replay_file, source="training"):
            for raw in chunk:
                by_symbol.setdefault(raw.symbol, []).append(raw)
        wanted = set(cfg.symbols)
        # The file's symbols; the configured ones only if the file has them.
        chosen = [s for s in sorted(by_symbol) if s in wanted] or sorted(by_symbol)
        series: dict[str, Series] = {}
        for s in chosen:
            series[s] = featurize(sorted(by_symbol[s], key=lambda r: r.exchange_time_ns))
            progress(f"data {s}")
        return series
    out: dict[str, Series] = {}
    for i, symbol in enumerate(cfg.symbols):
        # Regime: the training seed as is (the live feed with that seed has the
        # same paths); GBM: one stream per symbol as before.
        seed = cfg.seed if cfg.source == "regime" else cfg.seed * 1000 + i
        ticks = synthetic_ticks(
            symbol, cfg.source, ticks=cfg.ticks_per_symbol, seed=seed, feed=feed, n_symbols=len(cfg.symbols)
        )
        out[symbol] = featurize(ticks)
        progress(f"data {symbol}")
    return out


def make_dataset(
    cfg: TrainingSettings, feed: MarketDataSettings, progress: Callable[[str], None] = _quiet
) -> Dataset:
    """Labelled vectors of every training symbol."""
    started = time.perf_counter()
    xs: list[list[float]] = []
    ys: list[int] = []
    times: list[int] = []
    ends: list[int] = []
    states: list[list[float]] = []
    version = ""
    all_series = series_of(cfg, feed, progress)
    for symbol, series in all_series.items():
        x, y, t, e = label(series, cfg.horizon_ticks)
        # The market state at each labelled vector, from the symbol's vectors up to it.
        by_position = embedding.series_embeddings(
            [embedding.rows_of([r])[0] if r else None for r in series.rows]
        )
        for p in labelled(series, cfg.horizon_ticks):
            state = by_position[p]
            assert state is not None  # a labelled vector is warmed up, so it has a state
            states.append(state)
        xs += x
        ys += y
        times += t
        ends += e
        version = series.feature_set_version
        log.info(
            "data: %s %d vectors, %d labelled (%.1fs)",
            symbol,
            len(series.mids),
            len(y),
            time.perf_counter() - started,
        )
    description: dict[str, object] = {
        "source": cfg.source,
        "seed": cfg.seed,
        "symbols": list(all_series),
        "ticks_per_symbol": cfg.ticks_per_symbol,
        "horizon_ticks": cfg.horizon_ticks,
        "feed_spread_bps": feed.feed_spread_bps,
    }
    if cfg.source == "regime":
        description["generator"] = "services.marketdata.feeds.RegimeGenerator -> FeatureEngine"
        description["regime_params"] = RegimeParams().describe()
    elif cfg.source == "gbm":
        description["generator"] = "services.marketdata.feeds.GbmGenerator -> FeatureEngine"
        description["feed_volatility"] = feed.feed_volatility
        description["feed_rate"] = feed.feed_rate
    else:
        description["replay_file"] = str(cfg.replay_file)
    return Dataset(
        x=np.asarray(xs, dtype=np.float64).reshape(-1, len(FEATURE_NAMES)),
        y=np.asarray(ys, dtype=np.int64),
        times_ns=np.asarray(times, dtype=np.int64),
        label_ends_ns=np.asarray(ends, dtype=np.int64),
        feature_set_version=version,
        description=description,
        embeddings=np.asarray(states, dtype=np.float64).reshape(-1, embedding.DIMENSION),
    )


# What the default models read. Not the book's spread and imbalance: in the
# synthetic markets they say nothing of the direction (the imbalance is
# independent noise; the spread is constant up to tick rounding, which only
# tells the symbols apart), and a model that reads them learns which symbol
# trended in its training stretch, which does not carry to the future.
MODEL_FEATURES: tuple[str, ...] = tuple(
    n for n in FEATURE_NAMES if n not in ("order_book_imbalance", "spread_bps")
)


@dataclass(frozen=True)
class ModelRecipe:
    model_id: str
    kind: str
    description: str
    build: Callable[[int], models.Classifier]
    features: tuple[str, ...] = MODEL_FEATURES
    # Reads the market state (embedding.py) of each sample instead of its row.
    uses_states: bool = False

    def rows(self, data: Dataset) -> np.ndarray:
        """The recipe's features among the dataset's columns (FEATURE_NAMES)."""
        return data.x[:, [FEATURE_NAMES.index(n) for n in self.features]]

    def columns(self, data: Dataset) -> np.ndarray:
        """The recipe's inputs: its feature rows, or the market states."""
        return data.embeddings if self.uses_states else self.rows(data)


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


def _analog(seed: int) -> models.Classifier:
    # Exact search over the training states offline; live, the market memory (analog.py).
    return AnalogClassifier(k=analog.DEFAULT_K)


DEFAULT_RECIPES: tuple[ModelRecipe, ...] = (
    ModelRecipe(
        "logreg-trend", "LOGISTIC_REGRESSION", "Logistic regression on standardised features", _logistic
    ),
    ModelRecipe(
        "gbt-trend", "GRADIENT_BOOSTING", "Histogram gradient boosting, depth 3, 100 trees", _boosting
    ),
    ModelRecipe(
        "analog-knn",
        analog.KIND,
        f"Analog: the {analog.DEFAULT_K} most similar past market states"
        f" ({embedding.EMBEDDING_VERSION}) vote with what followed them",
        _analog,
        features=embedding.EMBEDDING_FEATURES,
        uses_states=True,
    ),
)


def evaluate_recipe(
    recipe: ModelRecipe, data: Dataset, cfg: TrainingSettings, progress: Callable[[str], None] = _quiet
) -> evaluation.Evaluation:
    """The walk-forward evaluation of one recipe on `data` and the gate's decision."""

    def fresh() -> evaluation.Fittable:
        # The recipes build scikit-learn estimators, which fit as well as predict.
        return cast(evaluation.Fittable, recipe.build(cfg.seed))

    return evaluation.evaluate(
        fresh,
        recipe.columns(data),
        data.y,
        data.times_ns,
        data.label_ends_ns,
        data.last_return,
        n_folds=cfg.walk_forward_folds,
        holdout_fraction=cfg.holdout_fraction,
        margin=cfg.promotion_margin,
        enforce=not cfg.promote_without_gate,
        on_fold=lambda k: progress(f"{recipe.model_id} fold {k + 1}/{cfg.walk_forward_folds}"),
        protocol={
            "walk_forward_folds": cfg.walk_forward_folds,
            "holdout_fraction": cfg.holdout_fraction,
            "horizon_ticks": cfg.horizon_ticks,
            "window": "expanding",
            "purge": "training labels end before the test block starts",
            "gate": "off (promote_without_gate)" if cfg.promote_without_gate else "enforced",
        },
    )


def summary(ev: evaluation.Evaluation) -> dict[str, float]:
    """The evaluation in ModelMetadata.metrics (the contract's map of numbers)."""
    folds = [f for f in ev.folds if not math.isnan(f.model[evaluation.METRIC])]
    n = sum(f.test_samples for f in folds)

    def pooled(value: Callable[[evaluation.FoldResult], float]) -> float:
        return sum(value(f) * f.test_samples for f in folds) / n if n else float("nan")

    return {
        "balanced_accuracy": ev.model_score,
        "baseline_balanced_accuracy": ev.baseline_scores.get(ev.best_baseline, float("nan")),
        "edge": ev.edge,
        "promotion_margin": ev.margin,
        "promoted": 1.0 if ev.promoted else 0.0,
        "accuracy": pooled(lambda f: f.model["accuracy"]),
        "roc_auc": pooled(lambda f: f.model["roc_auc"]),
        "log_loss": pooled(lambda f: f.model["log_loss"]),
        "base_rate": pooled(lambda f: f.base_rate),
        "holdout_samples": float(n),
        "folds": float(len(folds)),
    }


def train(
    model_dir: Path,
    cfg: TrainingSettings | None = None,
    feed: MarketDataSettings | None = None,
    recipes: Sequence[ModelRecipe] = DEFAULT_RECIPES,
    now: datetime | None = None,
    *,
    shadow: bool = False,
) -> list[models.ModelMetadata]:
    """Make the data; evaluate, fit and save a new version of every recipe;
    promote those that pass the gate (or name them shadows). Returns their metadata."""
    cfg = cfg or TrainingSettings()
    feed = feed or get_settings().marketdata
    started = time.perf_counter()
    # Steps: each symbol's data, then per model its folds and the final fit.
    per_model = cfg.walk_forward_folds + 1
    bar = tqdm(
        total=len(cfg.symbols) + len(recipes) * per_model, desc="train", unit="step", file=sys.stderr,
        disable=None, dynamic_ncols=True, leave=False,
    )  # fmt: skip
    with bar:
        return _train(model_dir, cfg, feed, recipes, now, shadow, bar, started)


def _train(
    model_dir: Path,
    cfg: TrainingSettings,
    feed: MarketDataSettings,
    recipes: Sequence[ModelRecipe],
    now: datetime | None,
    shadow: bool,
    bar: tqdm[Never],
    started: float,
) -> list[models.ModelMetadata]:
    def step(what: str) -> None:
        bar.set_postfix_str(what, refresh=False)
        bar.update()

    data = make_dataset(cfg, feed, step)
    bar.total = bar.n + len(recipes) * (cfg.walk_forward_folds + 1)  # a replay file's symbols
    bar.refresh()
    log.info("training data: %d labelled vectors in %.1fs", len(data.y), time.perf_counter() - started)
    written: list[models.ModelMetadata] = []
    for n, recipe in enumerate(recipes, 1):
        t0 = time.perf_counter()
        ev = evaluate_recipe(recipe, data, cfg, step)
        estimator = recipe.build(cfg.seed)
        estimator.fit(recipe.columns(data), data.y)  # type: ignore[attr-defined]
        step(f"{recipe.model_id} final fit")
        at = now or datetime.now(UTC)
        meta = models.ModelMetadata(
            model_id=recipe.model_id,
            kind=recipe.kind,
            version=models.next_version(model_dir, recipe.model_id, at),
            trained_at=at.isoformat(),
            feature_names=list(recipe.features),
            feature_set_version=data.feature_set_version,
            training_samples=len(data.y),
            metrics=summary(ev),
            artifact_sha256="",
            description=recipe.description,
            data=(
                {**data.description, "embedding": embedding.EMBEDDING_VERSION, "k": analog.DEFAULT_K}
                if recipe.uses_states
                else data.description
            ),
            library={
                "scikit-learn": sklearn.__version__,
                "numpy": np.__version__,
                "python": platform.python_version(),
            },
            feature_profile=training_profile(recipe.rows(data), recipe.features),
        )
        path = models.save(model_dir, meta, estimator, ev)
        if shadow:
            models.set_shadow(model_dir, meta.model_id, meta.version)
        elif ev.promoted:
            models.promote(model_dir, meta.model_id, meta.version)
        written.append(meta)
        log.info(
            "[%d/%d] %s %s in %.1fs (%.1fs so far): %s -> %s",
            n,
            len(recipes),
            meta.model_id,
            meta.version,
            time.perf_counter() - t0,
            time.perf_counter() - started,
            ev.reason,
            path,
        )
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.decision.train", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--model-dir", type=Path, help="default: TRADING_DECISION__MODEL_DIR or <var_dir>/models"
    )
    parser.add_argument("--source", choices=("regime", "gbm", "replay"), help="where the ticks come from")
    parser.add_argument("--replay-file", type=Path, help="tick file (CSV/Parquet) for --source replay")
    parser.add_argument("--ticks", type=int, help="synthetic ticks per symbol")
    parser.add_argument("--seed", type=int, help="data seed")
    parser.add_argument("--horizon", type=int, help="label horizon in ticks")
    parser.add_argument("--margin", type=float, help="promotion margin in balanced accuracy")
    parser.add_argument(
        "--shadow", action="store_true", help="name the new versions as shadows instead of promoting them"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    updates = {
        k: v
        for k, v in (
            ("source", args.source),
            ("replay_file", args.replay_file),
            ("ticks_per_symbol", args.ticks),
            ("seed", args.seed),
            ("horizon_ticks", args.horizon),
            ("promotion_margin", args.margin),
        )
        if v is not None
    }
    if args.replay_file is not None and args.source is None:
        updates["source"] = "replay"
    cfg = TrainingSettings.model_validate({**TrainingSettings().model_dump(), **updates})
    model_dir = args.model_dir or DecisionSettings().resolved_model_dir(get_settings().var_dir)
    # A bar on stderr when it is a terminal (tqdm turns itself off otherwise);
    # the log lines go above it.
    with logging_redirect_tqdm():
        written = train(model_dir, cfg, shadow=args.shadow)
    for meta in written:
        m = meta.metrics
        state = "shadow" if args.shadow else "PROMOTED" if m["promoted"] else "refused (kept, not served)"
        print(
            f"{meta.model_id} {meta.version}: {state}; balanced accuracy {m['balanced_accuracy']:.3f} vs "
            f"baseline {m['baseline_balanced_accuracy']:.3f} (edge {m['edge']:+.3f}, margin "
            f"{m['promotion_margin']:+.3f}) over {int(m['folds'])} walk-forward folds, "
            f"{int(m['holdout_samples'])} hold-out vectors"
        )
    print(f"models written under {model_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
