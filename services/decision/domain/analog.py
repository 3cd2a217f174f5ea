"""The analog model: the k past market states most similar to now vote
with the direction that followed them (services/decision/domain/embedding.py
defines a state).

- **Vote** (:func:`vote`): among the k nearest states, ``P(up) = (ups + 1) /
  (ups + downs + 2)`` (Laplace smoothing: a handful of neighbours cannot
  give certainty); states whose mid did not move (FLAT) count for neither.
  The score is ``2 * P(up) - 1``, as every model's.
- **Offline** (training, walk-forward evaluation, the report):
  :class:`AnalogClassifier` is a scikit-learn-like estimator whose ``fit``
  remembers the training states and whose ``predict_proba`` searches them
  exactly (a matrix product over all of them). It passes the same
  walk-forward evaluation and gate as the other models
  (services/decision/domain/evaluation.py).
- **Live** (services/decision/inference.py): the memory is the vector store
  (runtime.vectors, HNSW: approximate, recall measured in
  bench/results/vectors.md) holding the states decision observed, each
  written once its outcome is known (services/decision/memory.py); the
  saved artefact carries the parameters only, never the training memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import numpy as np

from services.decision.domain import embedding

KIND: Final = "NEAREST_NEIGHBORS"
DEFAULT_K: Final = 32
# Outcomes of a market state (trading.decision.v1.MarketStateOutcome, same numbers).
UP: Final = 1
DOWN: Final = 2
FLAT: Final = 3


def vote(outcomes: Iterable[int]) -> float:
    """P(up) from the outcomes of the nearest states (see the module docstring)."""
    ups = downs = 0
    for o in outcomes:
        if o == UP:
            ups += 1
        elif o == DOWN:
            downs += 1
    return (ups + 1) / (ups + downs + 2)


class AnalogClassifier:
    """k-nearest-neighbour vote over remembered states (offline; see the module docstring).

    ``x`` rows are unit embeddings (embedding.embed), ``y`` 1 for up, 0 for down.
    """

    def __init__(self, k: int = DEFAULT_K) -> None:
        if k < 1:
            raise ValueError("k must be at least 1")
        self.k = k
        self.embedding_version = embedding.EMBEDDING_VERSION
        self.classes_ = np.array([0, 1])
        self._memory: np.ndarray | None = None
        self._labels: np.ndarray | None = None

    def fit(self, x: Any, y: Any) -> AnalogClassifier:
        memory = np.asarray(x, dtype=np.float32)
        if memory.ndim != 2 or memory.shape[1] != embedding.DIMENSION:
            raise ValueError(f"expected embeddings of dimension {embedding.DIMENSION}, got {memory.shape}")
        self._memory = memory
        self._labels = np.asarray(y, dtype=np.int64)
        return self

    def predict_proba(self, x: Any) -> np.ndarray:
        if self._memory is None or self._labels is None:
            raise RuntimeError("the analog model's memory is the vector store: use it live through memory.py")
        queries = np.asarray(x, dtype=np.float32)
        k = min(self.k, len(self._memory))
        out = np.empty(len(queries))
        for start in range(0, len(queries), 2048):  # bounded memory for the similarity block
            block = queries[start : start + 2048] @ self._memory.T
            nearest = np.argpartition(-block, k - 1, axis=1)[:, :k]
            ups = self._labels[nearest].sum(axis=1)
            out[start : start + 2048] = (ups + 1) / (k + 2)
        return np.column_stack([1.0 - out, out])

    def __getstate__(self) -> dict[str, Any]:
        # The saved version is the parameters: the live memory is the vector store.
        state = dict(self.__dict__)
        state["_memory"] = None
        state["_labels"] = None
        return state
