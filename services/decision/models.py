"""Versioned model files: writing, finding the latest version, loading.

Layout under the model directory (``DecisionSettings.model_dir``)::

    <model_id>/<version>/model.joblib      the fitted scikit-learn estimator
    <model_id>/<version>/metadata.json     ModelMetadata (below)

A version is ``YYYY-MM-DD.N`` (N counts the versions trained that day); the
latest is the greatest (date, N). A version directory is written under a
temporary name and renamed into place, so a loader never sees half a model.

The artefact is a joblib pickle, which runs code when loaded: only load files
this project wrote. The loader checks the file's SHA-256 against the metadata
before unpickling, so a truncated or swapped file is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

import joblib
import numpy as np

ARTIFACT: Final = "model.joblib"
METADATA: Final = "metadata.json"
_VERSION = re.compile(r"^(\d{4}-\d{2}-\d{2})\.(\d+)$")
MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

# Kinds as named by trading.decision.v1.ModelKind (without the prefix).
KINDS: Final = frozenset(
    {"GRADIENT_BOOSTING", "LOGISTIC_REGRESSION", "RANDOM_FOREST", "NEURAL_NETWORK", "RULE_BASED"}
)


class ModelFileError(Exception):
    """A model version that cannot be loaded (missing file, checksum mismatch, bad metadata)."""


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


def save(model_dir: Path, meta: ModelMetadata, estimator: Classifier) -> Path:
    """Write a model version atomically; returns its directory. `meta`'s
    artifact_sha256 is filled in here."""
    if not MODEL_ID.fullmatch(meta.model_id) or meta.kind not in KINDS:
        raise ValueError(f"bad model id or kind: {meta.model_id!r} {meta.kind!r}")
    target = model_dir / meta.model_id / meta.version
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{meta.version}.", dir=target.parent))
    try:
        joblib.dump(estimator, tmp / ARTIFACT)
        final = {**asdict(meta), "artifact_sha256": sha256_file(tmp / ARTIFACT)}
        (tmp / METADATA).write_text(json.dumps(final, indent=2, sort_keys=True) + "\n")
        os.rename(tmp, target)  # fails if the version exists: never overwrite a model
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


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


def load_latest(model_dir: Path) -> dict[str, LoadedModel]:
    """The latest version of every model in the directory, by model id."""
    loaded: dict[str, LoadedModel] = {}
    for model_id in model_ids(model_dir):
        latest = versions(model_dir, model_id)[-1]
        loaded[model_id] = load(model_dir / model_id / latest)
    return loaded
