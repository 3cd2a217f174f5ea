"""The model registry (services/decision/models.py): evaluations stored beside
each version, the promotion and shadow pointers, and what is served."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier

from services.decision import models
from services.decision.domain import FEATURE_NAMES
from services.decision.domain.evaluation import Evaluation, FoldResult

DAY = datetime(2026, 2, 3, tzinfo=UTC)


def _evaluation(promoted: bool) -> Evaluation:
    fold = FoldResult(
        index=0,
        train_samples=100,
        test_samples=50,
        test_start_ns=1_000,
        test_end_ns=2_000,
        train_label_end_ns=999,
        base_rate=0.52,
        model={"balanced_accuracy": 0.61 if promoted else 0.49, "accuracy": 0.6, "roc_auc": 0.64,
               "log_loss": 0.67},
        baselines={"majority": {"balanced_accuracy": 0.5, "accuracy": 0.52},
                   "last_return": {"balanced_accuracy": 0.503, "accuracy": 0.5}},
    )  # fmt: skip
    score = fold.model["balanced_accuracy"]
    return Evaluation(
        metric="balanced_accuracy",
        margin=0.03,
        folds=[fold],
        model_score=score,
        baseline_scores={"majority": 0.5, "last_return": 0.503},
        best_baseline="last_return",
        edge=score - 0.503,
        folds_won=int(promoted),
        promoted=promoted,
        reason="promoted: test" if promoted else "refused: test",
        protocol={"walk_forward_folds": 1},
    )


def _save(model_dir: Path, model_id: str, evaluation: Evaluation | None, p_up: float = 0.7) -> str:
    estimator = DummyClassifier(strategy="prior").fit(
        np.zeros((10, 1)), [1] * int(p_up * 10) + [0] * (10 - int(p_up * 10))
    )
    meta = models.ModelMetadata(
        model_id=model_id,
        kind="LOGISTIC_REGRESSION",
        version=models.next_version(model_dir, model_id, DAY),
        trained_at=DAY.isoformat(),
        feature_names=list(FEATURE_NAMES),
        feature_set_version="v1:test",
        training_samples=10,
        metrics={},
        artifact_sha256="",
    )
    models.save(model_dir, meta, estimator, evaluation)
    return meta.version


def test_evaluation_and_pointer_round_trip(tmp_path: Path) -> None:
    evaluation = _evaluation(promoted=True)
    version = _save(tmp_path, "m", evaluation)
    assert models.read_evaluation(tmp_path, "m", version) == evaluation
    assert models.promoted_version(tmp_path, "m") is None  # saving promotes nothing
    models.promote(tmp_path, "m", version)
    assert models.promoted_version(tmp_path, "m") == version
    pointer = json.loads((tmp_path / "m" / models.PROMOTED).read_text())
    assert pointer["version"] == version and pointer["reason"] == "promoted: test"
    served = models.load_promoted(tmp_path)
    assert list(served) == ["m"] and served["m"].meta.version == version


def test_a_refused_version_is_kept_but_never_promoted_or_served(tmp_path: Path) -> None:
    good = _save(tmp_path, "m", _evaluation(promoted=True))
    models.promote(tmp_path, "m", good)
    refused = _save(tmp_path, "m", _evaluation(promoted=False))
    assert models.versions(tmp_path, "m") == [good, refused]  # kept for inspection
    with pytest.raises(models.PromotionRefused, match="did not pass the gate"):
        models.promote(tmp_path, "m", refused)
    # The live version stays the one that passed, though the refused one is newer.
    assert models.load_promoted(tmp_path)["m"].meta.version == good
    # A pointer edited by hand to the refused version is not served.
    (tmp_path / "m" / models.PROMOTED).write_text(json.dumps({"version": refused}))
    assert models.load_promoted(tmp_path) == {}


def test_versions_without_an_evaluation_or_a_pointer_are_not_served(tmp_path: Path) -> None:
    legacy = _save(tmp_path, "old", None)  # trained before the gate existed
    with pytest.raises(models.PromotionRefused, match="no evaluation"):
        models.promote(tmp_path, "old", legacy)
    _save(tmp_path, "new", _evaluation(promoted=True))  # passed, but nobody promoted it
    assert models.model_ids(tmp_path) == ["new", "old"]
    assert models.load_promoted(tmp_path) == {}
    with pytest.raises(models.PromotionRefused, match="no complete version"):
        models.promote(tmp_path, "new", "2026-02-03.9")


def test_shadow_pointer(tmp_path: Path) -> None:
    live = _save(tmp_path, "m", _evaluation(promoted=True), p_up=0.7)
    models.promote(tmp_path, "m", live)
    candidate = _save(tmp_path, "m", _evaluation(promoted=False), p_up=0.2)
    served = models.load_promoted(tmp_path)
    assert models.load_shadows(tmp_path, served) == {}
    models.set_shadow(tmp_path, "m", candidate)  # a refused candidate may be watched, not traded
    assert models.shadow_version(tmp_path, "m") == candidate
    shadows = models.load_shadows(tmp_path, served)
    assert shadows["m"].meta.version == candidate
    assert served["m"].score([0.0] * len(FEATURE_NAMES)) == pytest.approx(0.4)
    assert shadows["m"].score([0.0] * len(FEATURE_NAMES)) == pytest.approx(-0.6)
    models.set_shadow(tmp_path, "m", live)  # the live version as its own shadow: nothing to compare
    assert models.load_shadows(tmp_path, served) == {}
    models.clear_shadow(tmp_path, "m")
    assert models.shadow_version(tmp_path, "m") is None
    with pytest.raises(models.ModelFileError):
        models.set_shadow(tmp_path, "m", "2026-02-03.7")


def test_a_corrupt_pointer_is_an_error(tmp_path: Path) -> None:
    _save(tmp_path, "m", _evaluation(promoted=True))
    (tmp_path / "m" / models.PROMOTED).write_text('{"version": "../../etc"}')
    with pytest.raises(models.ModelFileError, match="bad pointer"):
        models.load_promoted(tmp_path)


def test_the_registry_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _save(tmp_path, "m", _evaluation(promoted=True))
    refused = _save(tmp_path, "m", _evaluation(promoted=False))
    assert models.main(["--model-dir", str(tmp_path), "promote", "m", refused]) == 1
    assert "refused" in capsys.readouterr().out
    assert models.main(["--model-dir", str(tmp_path), "promote", "m", good]) == 0
    assert models.main(["--model-dir", str(tmp_path), "shadow", "m", refused]) == 0
    out = capsys.readouterr().out
    assert f"m {good} [live]: promoted: test" in out and f"m {refused} [shadow]: refused: test" in out
    assert models.main(["--model-dir", str(tmp_path), "unshadow", "m"]) == 0
    assert models.shadow_version(tmp_path, "m") is None
