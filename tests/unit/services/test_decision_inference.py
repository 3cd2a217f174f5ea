"""The ensemble runner: concurrency, time budget, failures, skips."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.decision.domain import FEATURE_NAMES, Outcome, combine
from services.decision.inference import Ensemble
from services.decision.models import LoadedModel, ModelMetadata

VERSION = "v1:test"


class Const:
    """A model answering a fixed probability of a rise."""

    def __init__(self, p_up: float) -> None:
        self.p_up = p_up
        self.calls = 0

    def predict_proba(self, x: Any) -> Any:
        self.calls += 1
        return np.asarray([[1 - self.p_up, self.p_up]])


class Broken:
    def predict_proba(self, x: Any) -> Any:
        raise RuntimeError("corrupt tree")


class Slow:
    """Blocks until released (a hung model)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def predict_proba(self, x: Any) -> Any:
        self.calls += 1
        self.release.wait(5)
        return np.asarray([[0.0, 1.0]])


def model(model_id: str, estimator: Any) -> LoadedModel:
    meta = ModelMetadata(
        model_id=model_id,
        kind="LOGISTIC_REGRESSION",
        version="2025-01-01.1",
        trained_at="2025-01-01T00:00:00+00:00",
        feature_names=list(FEATURE_NAMES),
        feature_set_version=VERSION,
        training_samples=1,
        metrics={},
        artifact_sha256="",
    )
    return LoadedModel(meta, estimator, Path("/nonexistent"))


class Vector:
    def __init__(self, **changes: Any) -> None:
        self.warmed_up = True
        self.feature_set_version = VERSION
        for name in FEATURE_NAMES:
            setattr(self, name, 0.1)
        for k, v in changes.items():
            setattr(self, k, v)


@pytest.mark.parametrize("threads", [True, False])
async def test_scores_and_combination(threads: bool) -> None:
    ensemble = Ensemble(
        {"a": model("a", Const(0.9)), "b": model("b", Const(0.3))}, budget_s=1.0, threads=threads
    )
    try:
        results = await ensemble.evaluate(Vector(), ["a", "b"])
    finally:
        ensemble.close()
    assert results["a"].outcome is Outcome.OK and results["a"].score == pytest.approx(0.8)
    assert results["b"].score == pytest.approx(-0.4)
    assert combine(list(results.values()), 0.1).strength == pytest.approx(0.2)


async def test_a_failing_model_is_an_error_and_the_rest_still_count() -> None:
    ensemble = Ensemble({"a": model("a", Const(0.9)), "bad": model("bad", Broken())}, budget_s=1.0)
    try:
        results = await ensemble.evaluate(Vector(), ["a", "bad", "missing"])
    finally:
        ensemble.close()
    assert results["bad"].outcome is Outcome.ERROR and "corrupt tree" in results["bad"].error
    assert results["missing"].outcome is Outcome.ERROR
    signal = combine(list(results.values()), 0.5)
    assert signal.fallback and signal.strength == pytest.approx(0.8)


async def test_a_model_over_budget_times_out_and_is_not_called_again_while_busy() -> None:
    slow = Slow()
    fast = Const(0.2)
    ensemble = Ensemble({"fast": model("fast", fast), "slow": model("slow", slow)}, budget_s=0.05)
    try:
        start = time.perf_counter()
        first = await ensemble.evaluate(Vector(), ["fast", "slow"])
        took = time.perf_counter() - start
        assert first["slow"].outcome is Outcome.TIMEOUT and first["fast"].outcome is Outcome.OK
        assert took < 1.0  # the budget bounds the wait, not the hung model
        second = await ensemble.evaluate(Vector(), ["fast", "slow"])
        assert second["slow"].outcome is Outcome.TIMEOUT and "still running" in second["slow"].error
        assert slow.calls == 1 and fast.calls == 2
        signal = combine(list(second.values()), 0.5)
        assert signal.fallback and signal.direction.name == "SELL"
        slow.release.set()
        deadline = time.monotonic() + 5
        while True:  # the freed model answers again
            third = await ensemble.evaluate(Vector(), ["slow"])
            if third["slow"].outcome is Outcome.OK or time.monotonic() > deadline:
                break
        assert third["slow"].outcome is Outcome.OK and third["slow"].score == pytest.approx(1.0)
    finally:
        slow.release.set()
        ensemble.close()


async def test_inline_mode_judges_the_budget_after_the_call() -> None:
    class Sleepy(Const):
        def predict_proba(self, x: Any) -> Any:
            time.sleep(0.03)
            return super().predict_proba(x)

    ensemble = Ensemble({"s": model("s", Sleepy(0.9))}, budget_s=0.01, threads=False)
    results = await ensemble.evaluate(Vector(), ["s"])
    assert results["s"].outcome is Outcome.TIMEOUT and results["s"].score == 0.0


async def test_vectors_not_warmed_up_or_of_another_feature_set_are_skipped() -> None:
    const = Const(0.9)
    ensemble = Ensemble({"a": model("a", const)}, budget_s=1.0)
    try:
        cold = await ensemble.evaluate(Vector(warmed_up=False), ["a"])
        other = await ensemble.evaluate(Vector(feature_set_version="v2"), ["a"])
        nan = await ensemble.evaluate(Vector(rsi=float("nan")), ["a"])
    finally:
        ensemble.close()
    assert cold["a"].outcome is Outcome.SKIPPED and other["a"].outcome is Outcome.SKIPPED
    assert nan["a"].outcome is Outcome.ERROR
    assert const.calls == 0
    assert combine(list(cold.values()), 0.1).direction.name == "HOLD"


class Gated:
    """Answers P(up) = 0.6 for every row once its gate opens; records batch sizes."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.answered = threading.Event()
        self.batches: list[int] = []

    def predict_proba(self, x: Any) -> Any:
        self.gate.wait(5)
        self.batches.append(len(x))
        self.answered.set()
        return np.tile([[0.4, 0.6]], (len(x), 1))


async def test_vectors_arriving_while_a_model_is_busy_are_scored_together_in_its_next_call() -> None:
    gated = Gated()
    ensemble = Ensemble({"m": model("m", gated)}, budget_s=5.0)
    try:
        tasks = [asyncio.create_task(ensemble.evaluate(Vector(), ["m"])) for _ in range(5)]
        await asyncio.sleep(0.05)  # the first row is in the model, the other four wait
        gated.gate.set()
        results = await asyncio.gather(*tasks)
    finally:
        ensemble.close()
    assert gated.batches == [1, 4]
    assert all(r["m"].outcome is Outcome.OK and r["m"].score == pytest.approx(0.2) for r in results)


async def test_rows_whose_caller_gave_up_are_not_scored() -> None:
    gated = Gated()
    ensemble = Ensemble({"m": model("m", gated)}, budget_s=0.2)
    try:
        first = asyncio.create_task(ensemble.evaluate(Vector(), ["m"]))
        await asyncio.sleep(0.01)
        second = await ensemble.evaluate(Vector(), ["m"])  # queued behind the first, then gives up
        assert second["m"].outcome is Outcome.TIMEOUT
        assert (await first)["m"].outcome is Outcome.TIMEOUT
        gated.gate.set()
        await asyncio.to_thread(gated.answered.wait, 5)
        third = await ensemble.evaluate(Vector(), ["m"])
    finally:
        ensemble.close()
    assert third["m"].outcome is Outcome.OK
    assert gated.batches == [1, 1]  # the first row, then the third: the second was dropped
