"""Feature drift: training profiles, the PSI, the live window, and the
ensemble and ListModels reporting it."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from services.decision.api import model_message
from services.decision.domain import FEATURE_NAMES
from services.decision.domain.drift import BINS, DriftMonitor, psi, training_profile
from services.decision.inference import Ensemble
from tests.unit.services.test_decision_inference import Const, Vector, model


def test_the_profile_cuts_at_the_training_deciles() -> None:
    x = np.arange(1000, dtype=float).reshape(-1, 1)
    profile = training_profile(x, ["a"])["a"]
    assert len(profile["edges"]) == BINS - 1
    assert profile["shares"] == pytest.approx([0.1] * BINS)


def test_a_constant_input_has_one_edge_and_no_nan() -> None:
    x = np.column_stack([np.full(100, 3.0), np.where(np.arange(100) < 50, np.nan, 1.0)])
    profile = training_profile(x, ["flat", "half_nan"])
    assert profile["flat"]["edges"] == [3.0] and sum(profile["flat"]["shares"]) == pytest.approx(1.0)
    assert sum(profile["half_nan"]["shares"]) == pytest.approx(1.0)


def test_psi_is_zero_for_the_same_distribution_and_matches_the_formula() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    # (0.7-0.5) ln(0.7/0.5) + (0.3-0.5) ln(0.3/0.5)
    assert psi([0.5, 0.5], [0.7, 0.3]) == pytest.approx(0.2 * math.log(1.4) - 0.2 * math.log(0.6))
    assert math.isfinite(psi([0.5, 0.5], [1.0, 0.0]))  # an empty bin is floored, not ln(0)


def test_the_monitor_sees_a_shift_and_forgets_beyond_its_window() -> None:
    rng = np.random.default_rng(1)
    profile = training_profile(rng.normal(size=(5000, 1)), ["x"])
    monitor = DriftMonitor(profile, ["x"], window=1000)
    assert monitor.drift() == {}
    for value in rng.normal(size=1000):
        monitor.observe([value])
    assert monitor.drift()["x"] < 0.05  # same distribution
    for value in rng.normal(loc=1.5, size=1000):
        monitor.observe([value])
    assert monitor.size == 1000  # the window only holds the shifted rows now
    assert monitor.drift()["x"] > 0.25


def test_a_model_without_a_profile_reports_nothing() -> None:
    monitor = DriftMonitor({}, ["x"], window=10)
    monitor.observe([1.0])
    assert monitor.drift() == {}


async def test_the_ensemble_measures_drift_of_what_it_scores_and_list_models_shows_it() -> None:
    rng = np.random.default_rng(2)
    loaded = model("m", Const(0.6))
    profile = training_profile(rng.normal(size=(2000, len(FEATURE_NAMES))), list(FEATURE_NAMES))
    loaded = dataclasses.replace(loaded, meta=dataclasses.replace(loaded.meta, feature_profile=profile))
    ensemble = Ensemble({"m": loaded}, budget_s=1.0, threads=False, drift_window=50)
    for _ in range(60):
        await ensemble.evaluate(Vector(), ["m"])  # every input fixed at 0.1: far from N(0, 1)
    drift, window = ensemble.drift("m")
    assert window == 50 and set(drift) == set(FEATURE_NAMES)
    assert all(v > 0.25 for v in drift.values())
    shown = model_message(loaded, drift, window)
    assert [(d.feature, d.window_vectors) for d in shown.feature_drift] == [(f, 50) for f in drift]
    assert ensemble.drift("unknown") == ({}, 0)
