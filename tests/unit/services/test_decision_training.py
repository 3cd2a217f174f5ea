"""Training: versioned models with their walk-forward evaluation; those that
beat the baselines on the regime feed are promoted and served, those trained
where there is nothing to learn (GBM) or that learn nothing are refused and
not served."""

from __future__ import annotations

import json
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier

from runtime.config import MarketDataSettings
from services.decision import models, train
from services.decision.settings import TrainingSettings
from services.features.domain import FeatureConfig

SMALL = TrainingSettings(ticks_per_symbol=4000, symbols=["BTC-USD", "AAPL", "ETH-USD"], seed=11)
FEED = MarketDataSettings()
DAY = datetime(2025, 3, 4, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "services" / "marketdata" / "samples" / "regime-sample.csv"


@pytest.fixture(scope="module")
def regime_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[models.ModelMetadata]]:
    model_dir = tmp_path_factory.mktemp("models")
    return model_dir, train.train(model_dir, SMALL, FEED, now=DAY)


def test_good_models_on_the_regime_feed_are_promoted_and_served(
    regime_models: tuple[Path, list[models.ModelMetadata]],
) -> None:
    model_dir, written = regime_models
    assert {m.model_id for m in written} == {"logreg-trend", "gbt-trend", "analog-knn"}
    for meta in written:
        directory = model_dir / meta.model_id / "2025-03-04.1"
        stored = json.loads((directory / models.METADATA).read_text())
        assert stored["feature_names"] == list(train.MODEL_FEATURES)
        # What live drift is measured against: each input's training deciles and shares.
        assert set(stored["feature_profile"]) == set(train.MODEL_FEATURES)
        assert all(abs(sum(p["shares"]) - 1) < 1e-9 for p in stored["feature_profile"].values())
        assert stored["feature_set_version"] == FeatureConfig().version
        assert stored["data"]["source"] == "regime" and stored["data"]["seed"] == 11
        assert stored["artifact_sha256"] == models.sha256_file(directory / models.ARTIFACT)
        evaluation = models.read_evaluation(model_dir, meta.model_id, meta.version)
        assert evaluation is not None and evaluation.promoted, evaluation
        assert len(evaluation.folds) == SMALL.walk_forward_folds
        # Beats the better baseline by the margin, as the metrics summarise.
        assert evaluation.edge >= SMALL.promotion_margin
        assert stored["metrics"]["edge"] == pytest.approx(evaluation.edge)
        assert stored["metrics"]["promoted"] == 1.0 and stored["metrics"]["accuracy"] > 0.55
        assert models.promoted_version(model_dir, meta.model_id) == "2025-03-04.1"
    served = models.load_promoted(model_dir)
    assert {m.meta.version for m in served.values()} == {"2025-03-04.1"}
    row = [0.0, 0.001, 60.0, 0.0001, 0.0005]  # MODEL_FEATURES
    assert -1.0 <= served["logreg-trend"].score(row) <= 1.0


def test_a_model_trained_without_edge_is_refused_and_the_live_version_stays(
    regime_models: tuple[Path, list[models.ModelMetadata]], tmp_path: Path
) -> None:
    """GBM returns are independent: nothing to learn, so nothing promoted."""
    gbm = SMALL.model_copy(update={"source": "gbm"})
    fresh = train.train(tmp_path, gbm, FEED, now=DAY)
    for meta in fresh:
        evaluation = models.read_evaluation(tmp_path, meta.model_id, meta.version)
        assert evaluation is not None and not evaluation.promoted, evaluation.reason if evaluation else None
        assert evaluation.reason.startswith("refused:")
        assert abs(evaluation.model_score - 0.5) < 0.03
    assert models.load_promoted(tmp_path) == {}  # kept, not served
    assert all(models.versions(tmp_path, m.model_id) for m in fresh)
    # Trained into a registry with a promoted version: the new, refused one is
    # version .2 on disk, and the service keeps serving .1.
    model_dir, _ = regime_models
    again = train.train(model_dir, gbm, FEED, now=DAY)
    assert {m.version for m in again} == {"2025-03-04.2"}
    assert {m.meta.version for m in models.load_promoted(model_dir).values()} == {"2025-03-04.1"}


def test_a_useless_classifier_is_refused(tmp_path: Path) -> None:
    useless = train.ModelRecipe(
        "coin", "RULE_BASED", "answers the base rate", lambda seed: DummyClassifier(strategy="prior")
    )
    (meta,) = train.train(tmp_path, SMALL.model_copy(update={"ticks_per_symbol": 1500}), FEED, [useless])
    assert meta.metrics["promoted"] == 0.0 and meta.metrics["edge"] < SMALL.promotion_margin
    assert models.load_promoted(tmp_path) == {}


def test_without_the_gate_every_model_is_promoted_and_says_so(tmp_path: Path) -> None:
    tiny = TrainingSettings(ticks_per_symbol=500, symbols=["BTC-USD"], promote_without_gate=True)
    written = train.train(tmp_path, tiny, FEED)
    assert set(models.load_promoted(tmp_path)) == {"logreg-trend", "gbt-trend", "analog-knn"}
    for meta in written:
        evaluation = models.read_evaluation(tmp_path, meta.model_id, meta.version)
        assert evaluation is not None and evaluation.reason.startswith("promoted without the gate")
        assert evaluation.protocol["gate"].startswith("off")


def test_shadow_training_names_shadows_and_promotes_nothing(tmp_path: Path) -> None:
    cfg = SMALL.model_copy(update={"ticks_per_symbol": 1500})
    written = train.train(tmp_path, cfg, FEED, shadow=True)
    for meta in written:
        assert models.shadow_version(tmp_path, meta.model_id) == meta.version
        assert models.promoted_version(tmp_path, meta.model_id) is None


def test_training_from_a_replay_file(tmp_path: Path) -> None:
    cfg = TrainingSettings(source="replay", replay_file=SAMPLE, symbols=["BTC-USD", "AAPL", "XYZ"])
    data = train.make_dataset(cfg, FEED)
    # The file's symbols that were asked for (XYZ is not in it), their real timestamps.
    assert data.description["symbols"] == ["AAPL", "BTC-USD"]
    assert data.description["replay_file"] == str(SAMPLE)
    assert len(data.y) > 1500 and np.all(data.label_ends_ns > data.times_ns)
    assert data.times_ns.min() >= 1_767_623_400 * 10**9  # 2026-01-05T14:30:00Z
    (meta,) = train.train(tmp_path, cfg, FEED, train.DEFAULT_RECIPES[:1])
    assert models.read_evaluation(tmp_path, meta.model_id, meta.version) is not None


def test_the_platform_fixtures_training_serves_every_default_model(tmp_path: Path) -> None:
    """tests/contract/conftest.py trains exactly this before starting the platform,
    whose strategies name the models: they must pass the gate."""
    train.train(tmp_path, TrainingSettings(ticks_per_symbol=2500, seed=5), FEED)
    assert set(models.load_promoted(tmp_path)) == {"logreg-trend", "gbt-trend", "analog-knn"}


def test_training_logs_progress_per_model(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="services.decision.train")
    cfg = TrainingSettings(ticks_per_symbol=800, symbols=["BTC-USD"], promote_without_gate=True)
    train.train(tmp_path, cfg, FEED)
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("[1/3] logreg-trend") and "s so far" in line for line in lines)
    assert any(line.startswith("[2/3] gbt-trend") for line in lines)
    assert any(line.startswith("[3/3] analog-knn") for line in lines)


def test_a_tampered_artefact_is_refused(
    regime_models: tuple[Path, list[models.ModelMetadata]], tmp_path: Path
) -> None:
    model_dir, written = regime_models
    directory = tmp_path / "copy"
    shutil.copytree(model_dir / written[0].model_id / written[0].version, directory)
    with (directory / models.ARTIFACT).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(models.ModelFileError, match="checksum"):
        models.load(directory)
