"""Walk-forward evaluation and the promotion gate (services/decision/domain/evaluation.py), pure."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression

from services.decision.domain import evaluation
from services.decision.domain.evaluation import baseline_predictions, decide, walk_forward_folds

HORIZON_NS = 20


def _times(rng: np.random.Generator, n_symbols: int = 3, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Several symbols' vector times, ticking at their own irregular pace, and label ends."""
    times = np.concatenate([np.cumsum(rng.integers(1, 5, size=n)) for _ in range(n_symbols)])
    return times, times + HORIZON_NS


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_folds", [1, 3, 5])
def test_folds_never_train_on_the_future(seed: int, n_folds: int) -> None:
    rng = np.random.default_rng(seed)
    times, ends = _times(rng)
    folds = walk_forward_folds(times, ends, n_folds=n_folds, holdout_fraction=0.5)
    assert len(folds) == n_folds
    previous_end = -1
    for fold in folds:
        test_times = times[fold.test]
        # Every training label was known before the first test vector.
        assert ends[fold.train].max() < test_times.min() == fold.test_start_ns
        assert not set(fold.train) & set(fold.test)
        # Blocks are consecutive in time and disjoint.
        assert test_times.min() >= previous_end and test_times.max() < fold.test_end_ns
        previous_end = fold.test_end_ns
    # The blocks cover the hold-out (the last half by time) exactly once, and
    # each fold trains on at least what the one before did (expanding window).
    tested = np.concatenate([f.test for f in folds])
    assert len(tested) == len(set(tested.tolist()))
    assert len(tested) >= len(times) // 2 - 5
    sizes = [len(f.train) for f in folds]
    assert sizes == sorted(sizes)


class _Spy:
    """Remembers what it was fitted on; checks at prediction time that no row it
    learned from had its label window reach into the rows it is asked about."""

    fits: list[tuple[float, float]] = []

    def fit(self, x: np.ndarray, y: np.ndarray) -> _Spy:
        self.label_end = float(x[:, 1].max())
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        first_test = float(x[:, 0].min())
        assert self.label_end < first_test, "trained on a label from the test block's future"
        _Spy.fits.append((self.label_end, first_test))
        return np.tile([0.5, 0.5], (len(x), 1))


def test_the_evaluation_fits_each_fold_on_the_past_only() -> None:
    rng = np.random.default_rng(1)
    times, ends = _times(rng)
    x = np.column_stack([times, ends]).astype(np.float64)
    y = rng.integers(0, 2, size=len(times))
    _Spy.fits = []
    result = evaluation.evaluate(
        _Spy, x, y, times, ends, np.zeros(len(y)), n_folds=4, holdout_fraction=0.4, margin=0.0
    )
    assert len(_Spy.fits) == 4 == len(result.folds)
    for fold in result.folds:
        assert fold.train_label_end_ns < fold.test_start_ns


def test_baselines() -> None:
    up_heavy = np.array([1, 1, 0])
    predicted = baseline_predictions(up_heavy, np.array([0.1, -0.2, 0.0]))
    assert predicted["majority"].tolist() == [1, 1, 1]
    # The sign of the last return; a flat tick answers the majority.
    assert predicted["last_return"].tolist() == [1, 0, 1]
    down_heavy = baseline_predictions(np.array([0, 0, 1]), np.array([0.0]))
    assert down_heavy["last_return"].tolist() == [0]


def _momentum_data(n: int, seed: int) -> tuple[np.ndarray, ...]:
    """One feature that gives the label's sign three times in four; times in order."""
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal(n)
    y = ((signal + rng.standard_normal(n)) > 0).astype(np.int64)
    times = np.arange(n, dtype=np.int64)
    return signal.reshape(-1, 1), y, times, times + 1, rng.standard_normal(n)


def _evaluate(build: Any, data: tuple[np.ndarray, ...], margin: float, enforce: bool = True) -> Any:
    x, y, times, ends, last = data
    return evaluation.evaluate(
        build, x, y, times, ends, last, n_folds=5, holdout_fraction=0.5, margin=margin, enforce=enforce
    )


def test_a_model_with_an_edge_is_promoted_and_one_without_is_refused() -> None:
    data = _momentum_data(4000, seed=3)
    good = _evaluate(LogisticRegression, data, margin=0.03)
    assert good.promoted and good.edge > 0.1 and good.folds_won == 5
    assert good.reason.startswith("promoted:") and "margin +0.0300" in good.reason
    # The same numbers under a margin they do not reach: refused.
    strict = _evaluate(LogisticRegression, data, margin=0.9)
    assert not strict.promoted and strict.reason.startswith("refused:")
    assert strict.model_score == pytest.approx(good.model_score)


@pytest.mark.parametrize(
    "useless",
    [
        lambda: DummyClassifier(strategy="prior"),  # always the base rate: the majority baseline
        lambda: DummyClassifier(strategy="uniform", random_state=0),  # a coin
    ],
)
def test_a_useless_classifier_is_refused(useless: Any) -> None:
    data = _momentum_data(4000, seed=4)
    result = _evaluate(useless, data, margin=0.03)
    assert not result.promoted
    assert result.edge < 0.03 and "refused" in result.reason
    assert set(result.baseline_scores) == {"majority", "last_return"}


def test_a_lucky_mean_is_not_enough_without_most_folds() -> None:
    fold = evaluation.FoldResult(
        index=0, train_samples=10, test_samples=10, test_start_ns=0, test_end_ns=1, train_label_end_ns=-1,
        base_rate=0.5, model={"balanced_accuracy": 0.9}, baselines={
            "majority": {"balanced_accuracy": 0.5}, "last_return": {"balanced_accuracy": 0.5}},
    )  # fmt: skip
    worse = evaluation.FoldResult(**{**fold.__dict__, "index": 1, "model": {"balanced_accuracy": 0.45}})
    result = decide([fold, worse, worse], margin=0.03, protocol={})
    assert result.edge > 0.03 and result.folds_won == 1 and not result.promoted
    assert "needs more than half" in result.reason


def test_the_gate_can_be_switched_off_and_says_so() -> None:
    data = _momentum_data(2000, seed=5)
    result = _evaluate(lambda: DummyClassifier(strategy="prior"), data, margin=0.03, enforce=False)
    assert result.promoted
    assert result.reason.startswith("promoted without the gate (it would have been refused)")


def test_too_little_data_is_refused() -> None:
    x = np.zeros((4, 1))
    y = np.array([1, 1, 1, 1])
    times = np.arange(4)
    result = evaluation.evaluate(
        LogisticRegression, x, y, times, times + 1, np.zeros(4), n_folds=2, holdout_fraction=0.5, margin=0.0
    )
    assert not result.promoted and "no fold could be evaluated" in result.reason


def test_an_evaluation_round_trips_through_json() -> None:
    result = _evaluate(LogisticRegression, _momentum_data(2000, seed=6), margin=0.03)
    again = evaluation.Evaluation.from_json(json.loads(json.dumps(result.to_json())))
    assert again == result
