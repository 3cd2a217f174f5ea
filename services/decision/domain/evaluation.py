"""Walk-forward evaluation of a model and the gate it must pass to be served.

**Walk-forward.** The samples are ordered by time (the feature vector's tick
time; every symbol's series shares the clock). The last ``holdout_fraction``
of them is cut into ``n_folds`` consecutive blocks of equal size. Fold *k*
fits a fresh model on every sample whose label was known before block *k*
starts (its label window, vector time to the tick ``horizon`` ticks later,
ends before the block's first vector: no look-ahead through overlapping
labels) and tests it on block *k*. Each fold trains on more of the past (an
expanding window), as a model retrained on schedule would.

**Metric: balanced accuracy** (the mean of the recall of "up" and of "down")
of the direction predicted on each fold's block, averaged over the folds.
Balanced, because trending data makes the classes unequal and plain
accuracy would reward always answering the majority; accuracy-like rather
than log-loss, because both baselines answer a direction without a
probability (log-loss would need them calibrated first) and the service
trades on the direction of the score.

**Baselines**, on the same blocks: *majority* (the training part's more
frequent label, always; balanced accuracy 0.5 by construction) and
*last return* (the sign of the vector's latest tick return; a flat tick
answers the majority). **Gate:** the model is promoted when its mean
balanced accuracy beats the better baseline's by at least ``margin``
(TrainingSettings.promotion_margin) **and** it beats that baseline on more
than half of the folds (one lucky block cannot carry it). Anything else is
refused, with the numbers in the reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Protocol

import numpy as np
from sklearn.metrics import balanced_accuracy_score, log_loss, roc_auc_score

METRIC: Final = "balanced_accuracy"
BASELINES: Final = ("majority", "last_return")


class Fittable(Protocol):
    def fit(self, x: Any, y: Any) -> Any: ...

    def predict_proba(self, x: Any) -> Any: ...


@dataclass(frozen=True)
class Fold:
    """One walk-forward step: sample indices to train on and to test on."""

    index: int
    train: np.ndarray
    test: np.ndarray
    test_start_ns: int
    test_end_ns: int  # exclusive, except for the last fold (its last vector included)


@dataclass(frozen=True)
class FoldResult:
    index: int
    train_samples: int
    test_samples: int
    test_start_ns: int
    test_end_ns: int
    # The last label-window end among the training samples (< test_start_ns).
    train_label_end_ns: int
    base_rate: float  # share of "up" in the test block
    model: dict[str, float]  # balanced_accuracy, accuracy, roc_auc, log_loss
    baselines: dict[str, dict[str, float]]  # name -> balanced_accuracy, accuracy


@dataclass(frozen=True)
class Evaluation:
    """What training decided about one model version, stored beside it."""

    metric: str
    margin: float
    folds: list[FoldResult]
    model_score: float  # mean of the folds' metric
    baseline_scores: dict[str, float]
    best_baseline: str
    edge: float  # model_score - baseline_scores[best_baseline]
    folds_won: int
    promoted: bool
    reason: str
    # How the folds were made (n_folds, holdout_fraction, horizon, ...).
    protocol: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Evaluation:
        folds = [FoldResult(**f) for f in raw.get("folds", [])]
        return cls(**{**raw, "folds": folds})


def walk_forward_folds(
    times_ns: np.ndarray, label_ends_ns: np.ndarray, *, n_folds: int, holdout_fraction: float
) -> list[Fold]:
    """The folds over samples with vector times `times_ns` whose labels are
    known at `label_ends_ns` (both per sample, any order)."""
    if n_folds < 1 or not 0 < holdout_fraction < 1:
        raise ValueError("need n_folds >= 1 and 0 < holdout_fraction < 1")
    if times_ns.shape != label_ends_ns.shape or np.any(label_ends_ns < times_ns):
        raise ValueError("each sample needs a label end at or after its time")
    order = np.argsort(times_ns, kind="stable")
    n = len(order)
    first_test = int(n * (1 - holdout_fraction))
    bounds = [first_test + (n - first_test) * k // n_folds for k in range(n_folds + 1)]
    folds: list[Fold] = []
    for k in range(n_folds):
        block = order[bounds[k] : bounds[k + 1]]
        if len(block) == 0:
            continue
        start = int(times_ns[block[0]])
        last = k == n_folds - 1
        end = int(times_ns[order[-1]]) + 1 if last else int(times_ns[order[bounds[k + 1]]])
        # The block by time (samples sharing the boundary time go to the later block).
        test = np.flatnonzero((times_ns >= start) & (times_ns < end))
        train = np.flatnonzero(label_ends_ns < start)
        folds.append(Fold(k, train, test, start, end))
    return folds


def _balanced(y: np.ndarray, predicted: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return float("nan")  # one class only: not defined, the fold says so
    return float(balanced_accuracy_score(y, predicted))


def baseline_predictions(y_train: np.ndarray, last_return: np.ndarray) -> dict[str, np.ndarray]:
    """Each baseline's predicted labels for test rows with these last returns."""
    majority = int(np.mean(y_train) >= 0.5) if len(y_train) else 1
    sign = np.where(last_return > 0, 1, np.where(last_return < 0, 0, majority))
    return {"majority": np.full(len(last_return), majority), "last_return": sign.astype(np.int64)}


def evaluate(
    build: Callable[[], Fittable],
    x: np.ndarray,
    y: np.ndarray,
    times_ns: np.ndarray,
    label_ends_ns: np.ndarray,
    last_return: np.ndarray,
    *,
    n_folds: int,
    holdout_fraction: float,
    margin: float,
    protocol: dict[str, Any] | None = None,
    enforce: bool = True,
    on_fold: Callable[[int], None] = lambda index: None,
) -> Evaluation:
    """Walk-forward evaluation of the model `build` makes, and the gate's decision
    (`on_fold` is told each fold's index once it is scored: progress)."""
    results: list[FoldResult] = []
    for fold in walk_forward_folds(
        times_ns, label_ends_ns, n_folds=n_folds, holdout_fraction=holdout_fraction
    ):
        y_train, y_test = y[fold.train], y[fold.test]
        if len(np.unique(y_train)) < 2 or len(y_test) == 0:
            continue  # nothing to fit (the first fold of a tiny set)
        model = build()
        model.fit(x[fold.train], y_train)
        proba = np.asarray(model.predict_proba(x[fold.test]))[:, 1]
        predicted = (proba >= 0.5).astype(np.int64)
        two = len(np.unique(y_test)) == 2
        scores = {
            "balanced_accuracy": _balanced(y_test, predicted),
            "accuracy": float(np.mean(predicted == y_test)),
            "roc_auc": float(roc_auc_score(y_test, proba)) if two else float("nan"),
            "log_loss": float(log_loss(y_test, proba, labels=[0, 1])),
        }
        baselines = {
            name: {
                "balanced_accuracy": _balanced(y_test, p),
                "accuracy": float(np.mean(p == y_test)),
            }
            for name, p in baseline_predictions(y_train, last_return[fold.test]).items()
        }
        results.append(
            FoldResult(
                index=fold.index,
                train_samples=len(fold.train),
                test_samples=len(fold.test),
                test_start_ns=fold.test_start_ns,
                test_end_ns=fold.test_end_ns,
                train_label_end_ns=int(label_ends_ns[fold.train].max()),
                base_rate=float(np.mean(y_test)),
                model=scores,
                baselines=baselines,
            )
        )
        on_fold(fold.index)
    return decide(results, margin=margin, protocol=protocol or {}, enforce=enforce)


def decide(
    folds: list[FoldResult], *, margin: float, protocol: dict[str, Any], enforce: bool = True
) -> Evaluation:
    """The gate over the folds' results (folds whose metric is undefined are
    left out). ``enforce=False`` promotes whatever the numbers (test fixtures)."""
    usable = [f for f in folds if not math.isnan(f.model[METRIC])]
    if not usable:
        why = "no fold could be evaluated (too little data)"
        return Evaluation(
            METRIC,
            margin,
            folds,
            float("nan"),
            {},
            "",
            float("nan"),
            0,
            not enforce,
            f"refused: {why}" if enforce else f"promoted without the gate: {why}",
            protocol,
        )
    model_score = float(np.mean([f.model[METRIC] for f in usable]))
    baseline_scores = {
        name: float(np.mean([f.baselines[name][METRIC] for f in usable])) for name in BASELINES
    }
    best = max(BASELINES, key=lambda name: baseline_scores[name])
    edge = model_score - baseline_scores[best]
    won = sum(f.model[METRIC] > f.baselines[best][METRIC] for f in usable)
    majority_of_folds = won * 2 > len(usable)
    passed = edge >= margin and majority_of_folds
    promoted = passed or not enforce
    verdict = "promoted" if passed else "refused"
    if not enforce:
        verdict = f"promoted without the gate (it would have been {verdict})"
    why = (
        f"{verdict}: {METRIC} {model_score:.4f} vs {baseline_scores[best]:.4f} of the better baseline "
        f"({best}) over {len(usable)} walk-forward folds: edge {edge:+.4f} "
        f"{'>=' if edge >= margin else '<'} margin {margin:+.4f}; "
        f"beat it on {won} of {len(usable)} folds" + ("" if majority_of_folds else " (needs more than half)")
    )
    return Evaluation(
        metric=METRIC,
        margin=margin,
        folds=folds,
        model_score=model_score,
        baseline_scores=baseline_scores,
        best_baseline=best,
        edge=edge,
        folds_won=won,
        promoted=promoted,
        reason=why,
        protocol=protocol,
    )
