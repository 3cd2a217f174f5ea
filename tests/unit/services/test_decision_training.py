"""Training: model files with metadata, better than chance on held-out data
with a momentum component, no better than chance on pure GBM."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runtime.config import MarketDataSettings
from services.decision import models, train
from services.decision.domain import FEATURE_NAMES
from services.decision.settings import TrainingSettings
from services.features.domain import FeatureConfig

SMALL = TrainingSettings(ticks_per_symbol=4000, symbols=["BTC-USD", "AAPL", "ETH-USD"], seed=11)
FEED = MarketDataSettings()


def test_training_writes_versioned_models_that_beat_chance(tmp_path: Path) -> None:
    written = train.train(tmp_path, SMALL, FEED, now=datetime(2025, 3, 4, tzinfo=UTC))
    assert {m.model_id for m in written} == {"logreg-trend", "gbt-trend"}
    for meta in written:
        directory = tmp_path / meta.model_id / "2025-03-04.1"
        stored = json.loads((directory / models.METADATA).read_text())
        assert stored["kind"] in {"LOGISTIC_REGRESSION", "GRADIENT_BOOSTING"}
        assert stored["feature_names"] == list(FEATURE_NAMES)
        assert stored["feature_set_version"] == FeatureConfig().version
        assert stored["data"]["seed"] == 11 and stored["training_samples"] > 5000
        assert stored["artifact_sha256"] == models.sha256_file(directory / models.ARTIFACT)
        metrics = stored["metrics"]
        # Held-out accuracy and AUC clearly above a coin (and above the base rate).
        assert metrics["accuracy"] > max(0.55, metrics["base_rate"], 1 - metrics["base_rate"]), metrics
        assert metrics["roc_auc"] > 0.55, metrics

    # A second run is a new version; the loader takes the latest.
    again = train.train(tmp_path, SMALL, FEED, now=datetime(2025, 3, 4, tzinfo=UTC))
    assert {m.version for m in again} == {"2025-03-04.2"}
    loaded = models.load_latest(tmp_path)
    assert {m.meta.version for m in loaded.values()} == {"2025-03-04.2"}
    score = loaded["logreg-trend"].score([0.0, 0.001, 60.0, 0.0001, 0.0, 2.0, 0.0005])
    assert -1.0 <= score <= 1.0


def test_pure_gbm_is_not_predictable(tmp_path: Path) -> None:
    """The honest control: without the momentum regimes there is nothing to learn."""
    pure = SMALL.model_copy(update={"trend_strength": 0.0})
    data = train.make_dataset(pure, FEED)
    recipe = train.DEFAULT_RECIPES[0]
    estimator = recipe.build(1)
    estimator.fit(data.x_train, data.y_train)  # type: ignore[attr-defined]
    metrics = train._metrics(estimator, data)
    assert abs(metrics["roc_auc"] - 0.5) < 0.05, metrics


def test_a_tampered_artefact_is_refused(tmp_path: Path) -> None:
    meta = train.train(tmp_path, SMALL, FEED, recipes=train.DEFAULT_RECIPES[:1])[0]
    directory = tmp_path / meta.model_id / meta.version
    with (directory / models.ARTIFACT).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(models.ModelFileError, match="checksum"):
        models.load(directory)
