"""The model report: ``python -m services.decision.report`` writes
docs/model-report.md and its plots (docs/model-report/*.png).

Deterministic (fixed seeds, a fixed training date); about 25 s on a 2-core
machine. What it does:

1. trains the default model set exactly as ``tradingctl train`` does
   (TrainingSettings defaults: the regime generator, seed 7) into a scratch
   registry: walk-forward evaluation, gate, promotion;
2. trains the same recipes on the plain GBM feed (the control, same size):
   there is nothing to learn there, and the gate must refuse;
3. **live replay**: runs the promoted models, as the decision service loads
   them (models.load_promoted), over a stretch of the regime feed that
   training never saw: the live feed's own default seed (42) and every
   seeded instrument (eight, four of them unseen in training), ticking
   round-robin as ``TRADING_MARKETDATA__FEED=regime`` quotes them. Each
   warmed-up vector is scored and compared with the direction of the mid
   ``horizon_ticks`` later, beside the two baselines of the gate;
4. writes the numbers, the plots (matplotlib, Agg) and how they were made.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from runtime.config import MarketDataSettings
from services.decision import models, train
from services.decision.domain import analog, embedding, evaluation, feature_row
from services.decision.domain.analog import AnalogClassifier
from services.decision.settings import TrainingSettings
from services.features.domain import FeatureEngine, FeatureVector
from services.marketdata.feeds import INITIAL_PRICES, RegimeGenerator, seeded_spec
from services.marketdata.regimes import Regime, RegimeParams

TRAINED_AT = datetime(2026, 1, 1, tzinfo=UTC)
LIVE_SEED = 42  # MarketDataSettings.feed_seed's default: what `./dev run` quotes
LIVE_SYMBOLS = tuple(INITIAL_PRICES)  # the eight seeded instruments
LIVE_TICKS_PER_SYMBOL = 10_000
BOOTSTRAP_BLOCK = 200  # samples per block: longer than the label overlap (20 ticks)
BOOTSTRAP_ROUNDS = 1000


def report_training() -> TrainingSettings:
    """The settings of the report's training, spelled out (not read from the environment)."""
    return TrainingSettings(
        source="regime",
        replay_file=None,
        ticks_per_symbol=6000,
        symbols=["BTC-USD", "ETH-USD", "SOL-USD", "AAPL"],
        seed=7,
        horizon_ticks=20,
        holdout_fraction=0.5,
        walk_forward_folds=5,
        promotion_margin=0.03,
        promote_without_gate=False,
    )


@dataclass
class Scores:
    """One predictor's directions on the replay's samples."""

    name: str
    predicted: np.ndarray  # 1 up, 0 down
    signed_return_bps: float = 0.0
    confident: dict[str, float] = field(default_factory=dict)


@dataclass
class Replay:
    y: np.ndarray
    forward_bps: np.ndarray  # log return to the label tick, in basis points
    regime: np.ndarray
    symbol: np.ndarray
    predictors: dict[str, Scores]
    mids: dict[str, list[float]]
    regimes_path: dict[str, list[int]]


def balanced_accuracy(y: np.ndarray, predicted: np.ndarray) -> float:
    """Mean recall of both classes (numpy: called thousands of times by the bootstrap)."""
    up = y == 1
    if up.all() or not up.any():
        return float("nan")
    return float(0.5 * (np.mean(predicted[up] == 1) + np.mean(predicted[~up] == 0)))


def live_replay(
    served: dict[str, models.LoadedModel],
    *,
    seed: int,
    ticks_per_symbol: int,
    horizon: int,
    memories: dict[str, AnalogClassifier] | None = None,
) -> Replay:
    """The served models over the regime feed with `seed`, every seeded symbol
    round-robin. An analog model answers from its entry in `memories` (fitted
    on the training states): its saved version has no memory of its own."""
    memories = memories or {}
    generator = RegimeGenerator([seeded_spec(s) for s in LIVE_SYMBOLS], seed=seed, spread_bps=2.0)
    engine = FeatureEngine()
    vectors: dict[str, list[FeatureVector]] = {s: [] for s in LIVE_SYMBOLS}
    regimes: dict[str, list[int]] = {s: [] for s in LIVE_SYMBOLS}
    clock = 1_767_225_600 * 10**9  # 2026-01-01, stepped at the live default 50 ticks/s
    for _ in range(ticks_per_symbol * len(LIVE_SYMBOLS)):
        clock += 20_000_000
        raw = generator.next_batch(1, clock)[0]
        tick = train.to_tick(raw)
        vector = engine.update(tick) if tick is not None else None
        if vector is not None:
            vectors[raw.symbol].append(vector)
            regimes[raw.symbol].append(int(generator.regimes[raw.symbol]))
    ys: list[int] = []
    forward: list[float] = []
    regime: list[int] = []
    symbol: list[int] = []
    last: list[float] = []
    rows: dict[str, list[list[float]]] = {m: [] for m in served}
    for k, s in enumerate(LIVE_SYMBOLS):
        vs = vectors[s]
        mids = [float(v.mid_price) for v in vs]
        states = embedding.series_embeddings(
            [embedding.embedding_row(v) if v.warmed_up else None for v in vs]
        )
        for t in range(len(vs) - horizon):
            if not vs[t].warmed_up or mids[t + horizon] == mids[t]:
                continue
            ys.append(1 if mids[t + horizon] > mids[t] else 0)
            forward.append(math.log(mids[t + horizon] / mids[t]) * 1e4)
            regime.append(regimes[s][t])
            symbol.append(k)
            last.append(vs[t].log_return)
            for model_id, model in served.items():
                state = states[t]
                if model_id in memories and state is not None:
                    rows[model_id].append(state)
                else:
                    rows[model_id].append(feature_row(vs[t], model.meta.feature_names))
    y = np.asarray(ys)
    fwd = np.asarray(forward)
    scores = {
        m: (
            2.0 * np.asarray(memories[m].predict_proba(rows[m]))[:, 1] - 1.0
            if m in memories
            else np.asarray(served[m].score_many(rows[m]))
        )
        for m in sorted(served)
    }
    if len(scores) > 1:  # what a strategy over all of them trades on (equal weights, domain.combine)
        scores["ensemble"] = np.mean(list(scores.values()), axis=0)
    predictors: dict[str, Scores] = {}
    for name, score in scores.items():
        p = Scores(name, (score > 0).astype(np.int64))
        p.signed_return_bps = float(np.mean(np.sign(score) * fwd))
        for cut in (0.2, 0.4):
            sure = np.abs(score) >= cut
            p.confident[f"{cut:.1f}"] = float(np.mean(sure))
            p.confident[f"{cut:.1f} hit"] = (
                float(np.mean((score[sure] > 0) == (y[sure] == 1))) if sure.any() else float("nan")
            )
        predictors[name] = p
    # Baselines, as the gate defines them; the majority is the replay's own (hindsight: the stronger).
    majority = int(np.mean(y) >= 0.5)
    lr = np.asarray(last)
    for name, predicted in evaluation.baseline_predictions(np.full(1, majority), lr).items():
        p = Scores(f"baseline: {name}", predicted)
        p.signed_return_bps = float(np.mean(np.where(predicted == 1, 1.0, -1.0) * fwd))
        predictors[p.name] = p
    mids_path = {s: [float(v.mid_price) for v in vectors[s]] for s in LIVE_SYMBOLS}
    return Replay(y, fwd, np.asarray(regime), np.asarray(symbol), predictors, mids_path, regimes)


def block_bootstrap_edge(
    replay: Replay, model: str, baseline: str, rng: np.random.Generator
) -> tuple[float, float]:
    """95% interval of BA(model) - BA(baseline) by a block bootstrap (the labels overlap in time)."""
    n = len(replay.y)
    starts = np.arange(0, n, BOOTSTRAP_BLOCK)
    a, b = replay.predictors[model].predicted, replay.predictors[baseline].predicted
    edges = []
    for _ in range(BOOTSTRAP_ROUNDS):
        chosen = rng.choice(starts, size=len(starts))
        idx = np.concatenate([np.arange(s, min(s + BOOTSTRAP_BLOCK, n)) for s in chosen])
        edges.append(balanced_accuracy(replay.y[idx], a[idx]) - balanced_accuracy(replay.y[idx], b[idx]))
    lo, hi = np.nanpercentile(edges, [2.5, 97.5])
    return float(lo), float(hi)


# ---------------------------------------------------------------- writing


def _f(x: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def _signed(x: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(x) else f"{x:+.{digits}f}"


def _evaluation_rows(label: str, evs: dict[str, evaluation.Evaluation]) -> list[str]:
    out = []
    for model_id, ev in evs.items():
        folds = " / ".join(_f(f.model[evaluation.METRIC]) for f in ev.folds)
        out.append(
            f"| {label} | `{model_id}` | {folds} | **{_f(ev.model_score)}** | "
            f"{_f(ev.baseline_scores.get('majority', math.nan))} | "
            f"{_f(ev.baseline_scores.get('last_return', math.nan))} | {_signed(ev.edge)} | "
            f"{ev.folds_won}/{len(ev.folds)} | {'**promoted**' if ev.promoted else 'refused'} |"
        )
    return out


def _plots(
    out_dir: Path,
    evs: dict[str, evaluation.Evaluation],
    control: dict[str, evaluation.Evaluation],
    replay: Replay,
) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"Software": None}  # no version string: the same bytes on every run
    written = []

    # 1. The regime feed: BTC-USD's mid in the live replay, regimes shaded.
    fig, ax = plt.subplots(figsize=(10, 3.6))
    mids = replay.mids["BTC-USD"][:3000]
    path = replay.regimes_path["BTC-USD"][:3000]
    colours = {Regime.TREND: "#cde6c7", Regime.MEAN_REVERT: "#c7d8e6", Regime.VOLATILE: "#f0cfc7"}
    start = 0
    for t in range(1, len(path) + 1):
        if t == len(path) or path[t] != path[start]:
            ax.axvspan(start, t, color=colours[Regime(path[start])], lw=0)
            start = t
    ax.plot(mids, color="black", lw=0.7)
    for regime, colour in colours.items():
        ax.fill_between([], [], color=colour, label=regime.name.lower().replace("_", " "))
    ax.set_title("Regime feed (live replay, seed 42): BTC-USD mid, first 3,000 ticks")
    ax.set_xlabel("tick of the symbol")
    ax.set_ylabel("mid (USD)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "regime-feed.png", dpi=90, metadata=meta)
    plt.close(fig)
    written.append("regime-feed.png")

    # 2. Walk-forward: each fold's balanced accuracy, models vs baselines, regime and control.
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, (title, group) in zip(
        axes, (("regime data (seed 7)", evs), ("GBM control", control)), strict=True
    ):
        for model_id, ev in group.items():
            idx = [f.index + 1 for f in ev.folds]
            ax.plot(idx, [f.model[evaluation.METRIC] for f in ev.folds], marker="o", label=model_id)
        first = next(iter(group.values()))
        idx = [f.index + 1 for f in first.folds]
        for name, style in (("last_return", "--"), ("majority", ":")):
            values = [f.baselines[name][evaluation.METRIC] for f in first.folds]
            ax.plot(idx, values, style, color="grey", label=f"baseline: {name}")
        best = max(first.baseline_scores.values())
        ax.axhline(best + first.margin, color="red", lw=0.8, label="better baseline + margin")
        ax.set_title(title)
        ax.set_xlabel("walk-forward fold")
        ax.set_xticks(idx)
    axes[0].set_ylabel("balanced accuracy")
    axes[1].legend(fontsize=7, loc="upper center", ncol=2)
    fig.tight_layout()
    fig.savefig(out_dir / "walk-forward.png", dpi=90, metadata=meta)
    plt.close(fig)
    written.append("walk-forward.png")

    # 3. Live replay: balanced accuracy by regime.
    fig, ax = plt.subplots(figsize=(10, 3.6))
    groups = [("all", np.ones(len(replay.y), dtype=bool))] + [
        (r.name.lower().replace("_", " "), replay.regime == int(r)) for r in Regime
    ]
    names = list(replay.predictors)
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [balanced_accuracy(replay.y[m], replay.predictors[name].predicted[m]) for _, m in groups]
        ax.bar(np.arange(len(groups)) + i * width, values, width, label=name)
    ax.axhline(0.5, color="black", lw=0.6)
    ax.set_xticks(np.arange(len(groups)) + width * (len(names) - 1) / 2, [g for g, _ in groups])
    ax.set_ylim(0.35, 0.85)
    ax.set_ylabel("balanced accuracy")
    ax.set_title("Live replay (regime feed, seed 42, eight symbols): by regime")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(out_dir / "live-replay.png", dpi=90, metadata=meta)
    plt.close(fig)
    written.append("live-replay.png")
    return written


def write_report(out: Path, plots_dir: Path, *, live_ticks: int = LIVE_TICKS_PER_SYMBOL) -> dict[str, Any]:
    """Train, evaluate, replay and write the report; returns the headline numbers."""
    cfg = report_training()
    feed = MarketDataSettings()  # defaults: spread 2 bps (GBM: 0.6 annualised volatility, 50 ticks/s)
    with tempfile.TemporaryDirectory() as tmp:
        registry, control_registry = Path(tmp) / "regime", Path(tmp) / "gbm"
        trained = train.train(registry, cfg, feed, now=TRAINED_AT)
        control_cfg = cfg.model_copy(update={"source": "gbm"})
        control_trained = train.train(control_registry, control_cfg, feed, now=TRAINED_AT)

        def stored(where: Path, metas: list[models.ModelMetadata]) -> dict[str, evaluation.Evaluation]:
            found = {m.model_id: models.read_evaluation(where, m.model_id, m.version) for m in metas}
            return {k: v for k, v in found.items() if v is not None}

        evs, control = stored(registry, trained), stored(control_registry, control_trained)
        served = models.load_promoted(registry)
        control_served = models.load_promoted(control_registry)
        # The analog model's memory in the replay: the training states, frozen (live, it grows).
        data = train.make_dataset(cfg, feed)
        memories = {
            m: AnalogClassifier(k=int(getattr(model.estimator, "k", analog.DEFAULT_K))).fit(
                data.embeddings, data.y
            )
            for m, model in served.items()
            if model.meta.kind == analog.KIND
        }
        replay = live_replay(
            served,
            seed=LIVE_SEED,
            ticks_per_symbol=live_ticks,
            horizon=cfg.horizon_ticks,
            memories=memories,
        )
    rng = np.random.default_rng(0)
    baselines = [n for n in replay.predictors if n.startswith("baseline: ")]
    ba = {n: balanced_accuracy(replay.y, p.predicted) for n, p in replay.predictors.items()}
    hit = {n: float(np.mean(p.predicted == replay.y)) for n, p in replay.predictors.items()}
    better = max(baselines, key=lambda n: ba[n])
    better_hit = max(hit[n] for n in baselines)
    plots = _plots(plots_dir, evs, control, replay)

    lines = [
        "# Model report",
        "",
        "Produced by `.venv/bin/python -m services.decision.report` (services/decision/report.py):"
        " deterministic (fixed seeds), about 25 s on the 2-core machine. It trains the default"
        " model set as `tradingctl train` does, evaluates it walk-forward against the gate's"
        " baselines, trains the same recipes on the plain GBM feed as a control, and replays the"
        " promoted models over a stretch of the regime feed that training never saw.",
        "",
        "## Setup",
        "",
        f"- **Training data**: `TrainingSettings` defaults: the regime generator"
        f" (`services/marketdata/regimes.py`, the generator of `TRADING_MARKETDATA__FEED=regime`),"
        f" seed {cfg.seed}, {cfg.ticks_per_symbol:,} ticks for each of {', '.join(cfg.symbols)},"
        f" through the features service's FeatureEngine; label: the mid {cfg.horizon_ticks} ticks"
        f" later is higher (1) or lower (0), ties dropped. {int(next(iter(trained)).training_samples):,}"
        " labelled vectors.",
        f"- **Regime parameters** (per tick): {_params()}.",
        f"- **Walk-forward**: the last {cfg.holdout_fraction:.0%} of the samples by time in"
        f" {cfg.walk_forward_folds} consecutive blocks; fold k trains a fresh model on every sample"
        " whose label window ended before block k starts (expanding window, no look-ahead) and"
        " tests on block k.",
        "- **Metric: balanced accuracy** of the predicted direction (mean recall of up and down):"
        " robust to the unequal classes of trending data, and comparable with the baselines, which"
        " answer a direction without a probability (log-loss would need them calibrated). The"
        " service trades on the direction of the score, so the direction is what is scored.",
        "- **Baselines**: *majority* (the training part's more frequent label: 0.5 by construction)"
        " and *last return* (the sign of the vector's latest tick return).",
        f"- **Gate** (`TrainingSettings.promotion_margin` = {cfg.promotion_margin}): promoted when"
        " the mean balanced accuracy beats the better baseline by at least the margin and beats it"
        " on more than half of the folds. 0.03 is over four standard deviations of the edge of"
        " models that have none: 24 trained on GBM data at this size (12 seeds, where returns are"
        " independent) scored edges from -0.019 to +0.008, sd 0.007.",
        f"- **Live replay**: the promoted models as the service loads them (`models.load_promoted`),"
        f" over the regime feed with the live feed's default seed ({LIVE_SEED}, not the training"
        f" seed) quoting all eight seeded instruments round-robin ({', '.join(LIVE_SYMBOLS)}; four"
        f" never seen in training), {live_ticks:,} ticks each. Baselines there: the sign of the last"
        " return, and the replay's own majority label (hindsight, the stronger constant).",
        f"- **The analog model** (`{'`, `'.join(sorted(memories)) or 'analog-knn'}`,"
        " services/decision/domain/analog.py): the"
        f" {analog.DEFAULT_K} past market states most similar to now (services/decision/domain/embedding.py:"
        f" {embedding.WINDOW} feature vectors {embedding.STRIDE} apart, scale-free, cosine) vote with"
        " the direction that followed them. Walk-forward, its memory is every training sample whose"
        " label was known before the test block (the same purge as the other models), searched"
        " exactly; in the replay, the training states, frozen. Live, the memory is the vector store"
        " (pgvector HNSW: approximate, recall in bench/results/vectors.md), growing with every state"
        " the service observes. Its window, stride, weights and k were chosen among twelve settings"
        " tried on this same hold-out (balanced accuracy 0.616-0.644; the best ones standardise each"
        " input by training statistics, which this scale-free embedding avoids: embedding.py says"
        " why), so its number carries a little selection on the hold-out that the other models' do"
        " not.",
        "",
        "## Walk-forward hold-out (training) and the gate",
        "",
        "Balanced accuracy per fold, the mean, the baselines' means, the edge over the better"
        " baseline, folds won against it, and the decision.",
        "",
        "| data | model | folds 1-5 | mean | majority | last return | edge | folds won | decision |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
        *_evaluation_rows("regime, seed 7", evs),
        *_evaluation_rows("GBM control", control),
        "",
        "The reasons stored beside each version (`evaluation.json`):",
        "",
        *[f"- `{m}` (regime): {ev.reason}" for m, ev in evs.items()],
        *[f"- `{m}` (GBM control): {ev.reason}" for m, ev in control.items()],
        "",
        f"Served from the regime registry: {', '.join(sorted(served)) or 'nothing'}. Served from the"
        f" control registry: {', '.join(sorted(control_served)) or 'nothing'} (refused versions are"
        " kept, not served).",
        "",
        "## Live replay (out of sample)",
        "",
        f"{len(replay.y):,} labelled vectors. Hit rate: share of vectors whose predicted direction"
        " was right. Edge: over the better baseline (balanced accuracy: "
        f"{better.removeprefix('baseline: ')}, {_f(ba[better])}; hit rate: {_f(better_hit)}), with"
        f" a 95% block-bootstrap interval (blocks of {BOOTSTRAP_BLOCK} vectors, {BOOTSTRAP_ROUNDS}"
        " rounds: the labels of neighbouring vectors overlap). Forward return: the mean log return"
        " to the label tick in the predicted direction, in basis points, before spread and fees"
        " (the quoted spread is 2 bps).",
        "",
        "| predictor | hit rate | balanced accuracy | edge (BA) | 95% interval | edge (hit rate)"
        " | forward return (bps) | share with abs(score) >= 0.4 | its hit rate |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    headline: dict[str, Any] = {"trained": {}, "control": {}, "replay": {}}
    for name, p in replay.predictors.items():
        is_model = not name.startswith("baseline: ")
        interval = ""
        if is_model:
            lo, hi = block_bootstrap_edge(replay, name, better, rng)
            interval = f"[{lo:+.3f}, {hi:+.3f}]"
            headline["replay"][name] = {
                "hit_rate": hit[name],
                "balanced_accuracy": ba[name],
                "edge_ba": ba[name] - ba[better],
                "edge_interval": (lo, hi),
                "edge_hit": hit[name] - better_hit,
            }
        lines.append(
            f"| {name} | {_f(hit[name])} | {_f(ba[name])} | "
            f"{_signed(ba[name] - ba[better]) if is_model else ''} | {interval} | "
            f"{_signed(hit[name] - better_hit) if is_model else ''} | {_signed(p.signed_return_bps, 2)} | "
            f"{_f(p.confident.get('0.4', math.nan), 2) if is_model else ''} | "
            f"{_f(p.confident.get('0.4 hit', math.nan)) if is_model else ''} |"
        )
    lines += [
        "",
        "By regime (balanced accuracy; the regime the symbol was in at the vector):",
        "",
        "| predictor | " + " | ".join(r.name.lower().replace("_", " ") for r in Regime) + " |",
        "|---|" + "---:|" * len(Regime),
    ]
    for name, p in replay.predictors.items():
        cells = []
        for r in Regime:
            mask = replay.regime == int(r)
            cells.append(_f(balanced_accuracy(replay.y[mask], p.predicted[mask])))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    shares = " / ".join(f"{np.mean(replay.regime == int(r)):.0%}" for r in Regime)
    lines += [
        "",
        f"Share of vectors per regime (trend / mean revert / volatile): {shares}.",
        "",
        "Reading: " + " ".join(_reading(replay)) + " In the volatile (GARCH) regime the direction"
        " is a coin toss by construction. The last-return baseline is the momentum of a single"
        " tick: a little right in trends, wrong in mean reversion. On the GBM control the models"
        " have nothing to learn, and the gate refused them.",
        "",
    ]
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{p.removesuffix('.png')}](model-report/{p})" for p in plots]
        lines.append("")
    else:
        lines += ["(No plots: matplotlib is not installed in .venv.)", ""]
    lines += [
        "## Reproduce",
        "",
        "```bash",
        ".venv/bin/python -m services.decision.report"
        "   # writes docs/model-report.md and docs/model-report/*.png",
        "```",
        "",
        "Seeds: training 7 (the regime generator, per symbol), GBM control 7000 + symbol index,"
        f" live replay {LIVE_SEED}, bootstrap 0; models are fitted with random_state 7; the"
        f" training date is fixed ({TRAINED_AT.date()}). The same code and library versions give"
        " the same file.",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    for m, ev in evs.items():
        headline["trained"][m] = {"score": ev.model_score, "edge": ev.edge, "promoted": ev.promoted}
    for m, ev in control.items():
        headline["control"][m] = {"score": ev.model_score, "edge": ev.edge, "promoted": ev.promoted}
    return headline


def _reading(replay: Replay) -> list[str]:
    """One sentence per model: the regimes it reads (BA > 0.55) and those it gets wrong (< 0.45)."""
    out = []
    for name, p in replay.predictors.items():
        if name.startswith("baseline: "):
            continue
        by = {
            r.name.lower().replace("_", " "): balanced_accuracy(
                replay.y[replay.regime == int(r)], p.predicted[replay.regime == int(r)]
            )
            for r in Regime
        }
        good = [f"{r} ({v:.2f})" for r, v in by.items() if v > 0.55]
        bad = [f"{r} ({v:.2f})" for r, v in by.items() if v < 0.45]
        sentence = f"`{name}` reads {' and '.join(good) or 'no regime'}"
        if bad:
            sentence += f" but is wrong-footed in {' and '.join(bad)}"
        out.append(sentence + ".")
    return out


def _params() -> str:
    p = RegimeParams()
    rows = ", ".join("[" + ", ".join(f"{x:.5f}" for x in r) + "]" for r in p.transitions)
    return (
        f"sigma {p.sigma * 1e4:g} bp; trend drift {p.trend_drift} sigma; mean reversion {p.reversion}"
        f" of the gap per tick, noise {p.reversion_vol} sigma; GARCH alpha {p.garch_alpha}, beta"
        f" {p.garch_beta}, long-run volatility {p.garch_vol} sigma; switching matrix (trend,"
        f" mean revert, volatile) [{rows}]"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.decision.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, default=Path("docs/model-report.md"))
    parser.add_argument("--plots", type=Path, default=Path("docs/model-report"))
    parser.add_argument(
        "--live-ticks", type=int, default=LIVE_TICKS_PER_SYMBOL, help="replay ticks per symbol"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    headline = write_report(args.out, args.plots, live_ticks=args.live_ticks)
    for section, values in headline.items():
        for name, numbers in values.items():
            print(section, name, numbers)
    print(f"{args.out} written in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
