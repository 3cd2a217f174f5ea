"""Feature drift: how far the live inputs of a model have moved from the data
it was trained on (pure logic, no I/O).

Training keeps a *profile* per input (:func:`training_profile`): the
training deciles as bin edges and the share of training rows in each bin.
The service keeps the bins of the last ``window`` live rows a model scored
(:class:`DriftMonitor`) and compares the two distributions by the
population stability index (:func:`psi`), the usual measure for a model's
inputs in credit and trading risk: sum over bins of
``(live - train) * ln(live / train)``. Below 0.1 is read as stable, above
0.25 as a shift worth retraining for.

Observing a row costs one ``bisect`` per input and two counter updates: the
hot path pays a few microseconds, never a pass over the window.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

BINS = 10
# Empty bins would make ln(0): both shares are floored at this (a common choice).
_FLOOR = 1e-4


def training_profile(x: np.ndarray, feature_names: Sequence[str]) -> dict[str, dict[str, list[float]]]:
    """Per input: the interior bin edges (training deciles, duplicates
    removed so constant inputs get one bin) and the training share per bin."""
    profile: dict[str, dict[str, list[float]]] = {}
    for i, name in enumerate(feature_names):
        column = x[:, i].astype(float)
        column = column[np.isfinite(column)]
        if column.size == 0:
            continue
        edges = sorted({float(e) for e in np.quantile(column, np.linspace(0, 1, BINS + 1)[1:-1])})
        counts = np.bincount(np.searchsorted(edges, column, side="right"), minlength=len(edges) + 1)
        profile[name] = {"edges": edges, "shares": (counts / counts.sum()).tolist()}
    return profile


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index of two distributions over the same bins."""
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, _FLOOR), max(a, _FLOOR)
        total += (a - e) * math.log(a / e)
    return total


class DriftMonitor:
    """The live bins of one model's inputs over its last ``window`` rows."""

    def __init__(
        self, profile: Mapping[str, Mapping[str, Any]], feature_names: Sequence[str], window: int
    ) -> None:
        # Only inputs the profile knows (an older model may have none).
        self._columns = [(i, name) for i, name in enumerate(feature_names) if name in profile]
        self._edges = [list(profile[name]["edges"]) for _, name in self._columns]
        self._expected = [list(profile[name]["shares"]) for _, name in self._columns]
        self._counts = [[0] * len(e) for e in self._expected]
        self._recent: deque[tuple[int, ...]] = deque()
        self._window = window

    @property
    def size(self) -> int:
        return len(self._recent)

    def observe(self, row: Sequence[float]) -> None:
        if not self._columns:
            return
        bins = tuple(
            bisect.bisect_right(edges, row[i])
            for (i, _), edges in zip(self._columns, self._edges, strict=True)
        )
        for counts, b in zip(self._counts, bins, strict=True):
            counts[b] += 1
        self._recent.append(bins)
        if len(self._recent) > self._window:
            for counts, b in zip(self._counts, self._recent.popleft(), strict=True):
                counts[b] -= 1

    def drift(self) -> dict[str, float]:
        """PSI per input over the current window (empty before any row)."""
        n = len(self._recent)
        if n == 0:
            return {}
        return {
            name: psi(expected, [c / n for c in counts])
            for (_, name), expected, counts in zip(self._columns, self._expected, self._counts, strict=True)
        }
