"""The model registry: versioned model files, their evaluations, and which
version of each model is live (promoted) or watched (shadow).

Layout under the model directory (``DecisionSettings.model_dir``)::

    <model_id>/<version>/model.joblib      the fitted scikit-learn estimator
    <model_id>/<version>/metadata.json     ModelMetadata (below)
    <model_id>/<version>/evaluation.json   the walk-forward evaluation and the
                                           gate's decision (services/decision/domain/evaluation.py)
    <model_id>/promoted.json               the live version: {"version", "at", "reason"}
    <model_id>/shadow.json                 a candidate scored beside the live one, never traded

A version is ``YYYY-MM-DD.N`` (N counts the versions trained that day). A
version directory is written under a temporary name and renamed into place,
and the pointers are replaced atomically, so a loader never sees half a
model or half a pointer.

Every version is kept, promoted or not (a refused one is there to inspect).
The service serves only the version the promotion pointer names, and only if
that version's own evaluation says it passed the gate (:func:`load_promoted`):
a hand-edited pointer to a refused version is not served. Pointers are moved
with ``python -m services.decision.models promote|shadow|unshadow`` (or
by training, which promotes each new version that passes); the decision
service reads them when it starts.

The artefact is a joblib pickle, which runs code when loaded: only load files
this project wrote. The loader checks the file's SHA-256 against the metadata
before unpickling, so a truncated or swapped file is refused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

import joblib
import numpy as np

from runtime.config import get_settings
from services.decision.domain.evaluation import Evaluation
from services.decision.settings import DecisionSettings

log = logging.getLogger(__name__)

ARTIFACT: Final = "model.joblib"
METADATA: Final = "metadata.json"
EVALUATION: Final = "evaluation.json"
PROMOTED: Final = "promoted.json"
SHADOW: Final = "shadow.json"
_VERSION = re.compile(r"^(\d{4}-\d{2}-\d{2})\.(\d+)$")
MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

# Kinds as named by trading.decision.v1.ModelKind (without the prefix).
KINDS: Final = frozenset(
    {
        "GRADIENT_BOOSTING",
        "LOGISTIC_REGRESSION",
        "RANDOM_FOREST",
        "NEURAL_NETWORK",
        "RULE_BASED",
        "NEAREST_NEIGHBORS",
    }
)


class ModelFileError(Exception):
    """A model version that cannot be loaded (missing file, checksum mismatch, bad metadata)."""


class PromotionRefused(Exception):
    """A version whose evaluation did not pass the gate (or that has none) cannot be promoted."""


class Classifier(Protocol):
    """What the service needs of a fitted estimator."""

    def predict_proba(self, x: Any) -> Any: ...


@dataclass(frozen=True)
class ModelMetadata:
    """What metadata.json holds about one trained model version."""

    model_id: str
    kind: str
    version: str
    trained_at: str  # RFC 3339, UTC
    feature_names: list[str]
    feature_set_version: str
    training_samples: int
    metrics: dict[str, float]
    artifact_sha256: str
    description: str = ""
    # How the data was made: seed, symbols, ticks, horizon, regime parameters.
    data: dict[str, Any] = field(default_factory=dict)
    library: dict[str, str] = field(default_factory=dict)
    # Per input: training decile edges and shares (services/decision/domain/drift.py),
    # what live drift is measured against; empty for older versions.
    feature_profile: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ModelMetadata:
        try:
            return cls(**raw)
        except TypeError as exc:
            raise ModelFileError(f"bad metadata: {exc}") from exc

    @property
    def trained_at_dt(self) -> datetime:
        return datetime.fromisoformat(self.trained_at)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to score feature rows."""

    meta: ModelMetadata
    estimator: Classifier
    path: Path

    @property
    def model_id(self) -> str:
        return self.meta.model_id

    def score(self, row: list[float]) -> float:
        """Signed score in [-1, 1] of one feature row: 2 * P(up) - 1."""
        return self.score_many([row])[0]

    def score_many(self, rows: list[list[float]]) -> list[float]:
        """Signed scores of several rows in one call (about the cost of one row)."""
        proba = np.asarray(self.estimator.predict_proba(np.asarray(rows, dtype=np.float64)))
        return [float(2.0 * p - 1.0) for p in proba[:, 1]]


def _version_key(version: str) -> tuple[str, int]:
    m = _VERSION.fullmatch(version)
    if m is None:
        raise ValueError(f"not a model version: {version!r}")
    return m.group(1), int(m.group(2))


def versions(model_dir: Path, model_id: str) -> list[str]:
    """Complete versions of a model, oldest first."""
    base = model_dir / model_id
    if not base.is_dir():
        return []
    found = [
        p.name
        for p in base.iterdir()
        if p.is_dir() and _VERSION.fullmatch(p.name) and (p / METADATA).is_file() and (p / ARTIFACT).is_file()
    ]
    return sorted(found, key=_version_key)


def model_ids(model_dir: Path) -> list[str]:
    """Ids of the models with at least one complete version."""
    if not model_dir.is_dir():
        return []
    return sorted(
        p.name for p in model_dir.iterdir() if MODEL_ID.fullmatch(p.name) and versions(model_dir, p.name)
    )


def next_version(model_dir: Path, model_id: str, now: datetime) -> str:
    day = now.astimezone(UTC).date().isoformat()
    taken = [n for d, n in map(_version_key, versions(model_dir, model_id)) if d == day]
    return f"{day}.{max(taken, default=0) + 1}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save(
    model_dir: Path, meta: ModelMetadata, estimator: Classifier, evaluation: Evaluation | None = None
) -> Path:
    """Write a model version (and its evaluation) atomically; returns its
    directory. `meta`'s artifact_sha256 is filled in here. Saving promotes
    nothing: see :func:`promote`."""
    if not MODEL_ID.fullmatch(meta.model_id) or meta.kind not in KINDS:
        raise ValueError(f"bad model id or kind: {meta.model_id!r} {meta.kind!r}")
    target = model_dir / meta.model_id / meta.version
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{meta.version}.", dir=target.parent))
    try:
        joblib.dump(estimator, tmp / ARTIFACT)
        final = {**asdict(meta), "artifact_sha256": sha256_file(tmp / ARTIFACT)}
        (tmp / METADATA).write_text(json.dumps(final, indent=2, sort_keys=True) + "\n")
        if evaluation is not None:
            (tmp / EVALUATION).write_text(json.dumps(evaluation.to_json(), indent=2) + "\n")
        os.rename(tmp, target)  # fails if the version exists: never overwrite a model
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def read_evaluation(model_dir: Path, model_id: str, version: str) -> Evaluation | None:
    """The stored evaluation of a version; None when it has none (trained before the gate)."""
    path = model_dir / model_id / version / EVALUATION
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: cannot read the evaluation: {exc}") from exc
    try:
        return Evaluation.from_json(raw)
    except TypeError as exc:
        raise ModelFileError(f"{path}: bad evaluation: {exc}") from exc


def _write_pointer(model_dir: Path, model_id: str, name: str, version: str, reason: str) -> None:
    base = model_dir / model_id
    body = {"version": version, "at": datetime.now(UTC).isoformat(), "reason": reason}
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=base)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(body, indent=2) + "\n")
        os.replace(tmp, base / name)  # atomic: readers see the old pointer or the new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_pointer(model_dir: Path, model_id: str, name: str) -> str | None:
    path = model_dir / model_id / name
    try:
        version = json.loads(path.read_text())["version"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{path}: bad pointer: {exc}") from exc
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise ModelFileError(f"{path}: bad pointer: version {version!r}")
    return version


def promote(model_dir: Path, model_id: str, version: str) -> None:
    """Make `version` the live one; refused unless its evaluation passed the gate."""
    if version not in versions(model_dir, model_id):
        raise PromotionRefused(f"{model_id} has no complete version {version}")
    evaluation = read_evaluation(model_dir, model_id, version)
    if evaluation is None:
        raise PromotionRefused(f"{model_id} {version} has no evaluation")
    if not evaluation.promoted:
        raise PromotionRefused(f"{model_id} {version} did not pass the gate: {evaluation.reason}")
    _write_pointer(model_dir, model_id, PROMOTED, version, evaluation.reason)


def promoted_version(model_dir: Path, model_id: str) -> str | None:
    """The version the promotion pointer names (None: nothing promoted)."""
    return _read_pointer(model_dir, model_id, PROMOTED)


def set_shadow(model_dir: Path, model_id: str, version: str) -> None:
    """Score `version` beside the live model (any complete version, passed or not)."""
    if version not in versions(model_dir, model_id):
        raise ModelFileError(f"{model_id} has no complete version {version}")
    _write_pointer(model_dir, model_id, SHADOW, version, "named as shadow")


def clear_shadow(model_dir: Path, model_id: str) -> None:
    (model_dir / model_id / SHADOW).unlink(missing_ok=True)


def shadow_version(model_dir: Path, model_id: str) -> str | None:
    return _read_pointer(model_dir, model_id, SHADOW)


def load(path: Path) -> LoadedModel:
    """Load one version directory, checking the artefact's checksum first."""
    try:
        meta = ModelMetadata.from_json(json.loads((path / METADATA).read_text()))
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: cannot read metadata: {exc}") from exc
    artifact = path / ARTIFACT
    try:
        actual = sha256_file(artifact)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read artefact: {exc}") from exc
    if actual != meta.artifact_sha256:
        raise ModelFileError(f"{path}: artefact checksum {actual} does not match the metadata")
    estimator = joblib.load(artifact)
    if not callable(getattr(estimator, "predict_proba", None)):
        raise ModelFileError(f"{path}: artefact has no predict_proba")
    return LoadedModel(meta, estimator, path)


def load_promoted(model_dir: Path) -> dict[str, LoadedModel]:
    """The promoted version of every model that has one, by model id.

    A model without a promotion pointer is not served; nor is one whose
    pointer names a version that did not pass the gate (logged)."""
    loaded: dict[str, LoadedModel] = {}
    for model_id in model_ids(model_dir):
        version = promoted_version(model_dir, model_id)
        if version is None:
            log.warning("model %s: no promoted version, not served", model_id)
            continue
        evaluation = read_evaluation(model_dir, model_id, version)
        if evaluation is None or not evaluation.promoted:
            log.error(
                "model %s: promoted pointer names %s, which did not pass the gate; not served",
                model_id,
                version,
            )
            continue
        loaded[model_id] = load(model_dir / model_id / version)
    return loaded


def load_shadows(model_dir: Path, live: Mapping[str, LoadedModel]) -> dict[str, LoadedModel]:
    """The shadow version of every model in `live` that names one (other than the live version)."""
    loaded: dict[str, LoadedModel] = {}
    for model_id, current in live.items():
        version = shadow_version(model_dir, model_id)
        if version is None or version == current.meta.version:
            continue
        loaded[model_id] = load(model_dir / model_id / version)
    return loaded


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m services.decision.models list|promote|shadow|unshadow``."""
    parser = argparse.ArgumentParser(
        prog="python -m services.decision.models", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--model-dir", type=Path, help="default: TRADING_DECISION__MODEL_DIR or <var_dir>/models"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every version, its gate decision, and the pointers")
    for name, text in (
        ("promote", "make a version live (only one that passed the gate)"),
        ("shadow", "score a version beside the live one (never traded)"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("model_id")
        cmd.add_argument("version")
    sub.add_parser("unshadow", help="stop scoring a model's shadow").add_argument("model_id")
    args = parser.parse_args(argv)
    if args.model_dir is None:
        args.model_dir = DecisionSettings().resolved_model_dir(get_settings().var_dir)
    model_dir: Path = args.model_dir
    try:
        if args.command == "promote":
            promote(model_dir, args.model_id, args.version)
        elif args.command == "shadow":
            set_shadow(model_dir, args.model_id, args.version)
        elif args.command == "unshadow":
            clear_shadow(model_dir, args.model_id)
    except (PromotionRefused, ModelFileError) as exc:
        print(f"refused: {exc}")
        return 1
    for model_id in model_ids(model_dir):
        live, shadow = promoted_version(model_dir, model_id), shadow_version(model_dir, model_id)
        for version in versions(model_dir, model_id):
            evaluation = read_evaluation(model_dir, model_id, version)
            marks = "".join((" [live]" if version == live else "", " [shadow]" if version == shadow else ""))
            verdict = (
                evaluation.reason if evaluation is not None else "no evaluation (trained before the gate)"
            )
            print(f"{model_id} {version}{marks}: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
