"""Runs a set of models on one feature vector, concurrently, each within a
time budget.

Each model has its own single-thread executor and the calls are awaited
together (asyncio.wait with the budget as timeout). Why threads rather than
direct calls on the event loop, measured on this 2-core machine with the two
default models (scikit-learn predict_proba on one row): direct calls take
~0.3 ms (logistic regression) and ~0.8 ms (gradient boosting), ~1.1 ms per
vector; through the threads a vector takes ~1.5-5 ms (thread hand-off and
the GIL, worse under load). Threads still win on what matters: a slow or
hung model cannot stall the event loop that also serves gRPC and consumes
NATS, and its budget is enforced (a direct call can only be judged late
after it returned). A model still busy with an earlier vector is not called
again: it answers TIMEOUT at once, so a hung model costs one thread, not one
per vector. ``threads=0`` runs the models inline instead (budget judged
after the call) for benchmarks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor

import sklearn
from prometheus_client import Counter, Histogram

from services.decision.domain import FEATURE_NAMES, ModelResult, Outcome, feature_row
from services.decision.models import LoadedModel

log = logging.getLogger(__name__)

INFERENCE_SECONDS = Histogram(
    "trading_decision_model_inference_seconds",
    "Time of one model's inference on one feature vector (answered calls).",
    ("model",),
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
MODEL_FAILURES = Counter(
    "trading_decision_model_failures_total",
    "Model evaluations whose score was not used, by outcome (error, timeout, skipped).",
    ("model", "outcome"),
)


def _score(model: LoadedModel, row: list[float]) -> tuple[float, float]:
    start = time.perf_counter()
    # Inputs are checked finite by feature_row; skip scikit-learn's own check
    # (its config is per thread, hence here).
    with sklearn.config_context(assume_finite=True):
        score = model.score(row)
    return score, time.perf_counter() - start


class Ensemble:
    """The loaded models and the machinery to evaluate them."""

    def __init__(self, models: Mapping[str, LoadedModel], *, budget_s: float, threads: bool = True) -> None:
        self._models = dict(models)
        self._budget_s = budget_s
        self._threads = threads
        self._executors = (
            {m: ThreadPoolExecutor(1, thread_name_prefix=f"model-{m}") for m in self._models}
            if threads
            else {}
        )
        # The call in flight of each model (a model that overran its budget keeps running).
        self._busy: dict[str, Future[tuple[float, float]]] = {}

    @property
    def models(self) -> Mapping[str, LoadedModel]:
        return self._models

    def close(self) -> None:
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)

    def _skip(self, model: LoadedModel, vector: object) -> str:
        if not getattr(vector, "warmed_up", True):
            return "feature vector not warmed up"
        version = getattr(vector, "feature_set_version", "")
        if version != model.meta.feature_set_version:
            return f"feature set {version!r}, model trained on {model.meta.feature_set_version!r}"
        return ""

    async def evaluate(self, vector: object, model_ids: Iterable[str]) -> dict[str, ModelResult]:
        """The result of every requested model on `vector` (unknown ids: ERROR)."""
        results: dict[str, ModelResult] = {}
        row: list[float] | None = None
        todo: list[LoadedModel] = []
        for model_id in dict.fromkeys(model_ids):
            model = self._models.get(model_id)
            if model is None:
                results[model_id] = ModelResult(model_id, "", Outcome.ERROR, error="model not loaded")
                continue
            reason = self._skip(model, vector)
            if reason:
                results[model_id] = ModelResult(model_id, model.meta.version, Outcome.SKIPPED, error=reason)
                continue
            if row is None:
                try:
                    row = feature_row(vector, model.meta.feature_names or FEATURE_NAMES)
                except (AttributeError, TypeError, ValueError) as exc:
                    results[model_id] = ModelResult(
                        model_id, model.meta.version, Outcome.ERROR, error=str(exc)
                    )
                    continue
            todo.append(model)
        if todo:
            assert row is not None
            if self._threads:
                results.update(await self._threaded(todo, row))
            else:
                results.update(self._inline(todo, row))
        for r in results.values():
            if r.outcome is Outcome.OK:
                INFERENCE_SECONDS.labels(r.model_id).observe(r.latency_s)
            else:
                MODEL_FAILURES.labels(r.model_id, r.outcome.name.lower()).inc()
        return results

    def _inline(self, todo: list[LoadedModel], row: list[float]) -> dict[str, ModelResult]:
        out: dict[str, ModelResult] = {}
        for model in todo:
            start = time.perf_counter()
            try:
                score, elapsed = _score(model, row)
            except Exception as exc:
                out[model.model_id] = self._error(model, exc, time.perf_counter() - start)
                continue
            out[model.model_id] = self._answer(model, score, elapsed)
        return out

    async def _threaded(self, todo: list[LoadedModel], row: list[float]) -> dict[str, ModelResult]:
        out: dict[str, ModelResult] = {}
        waiting: dict[asyncio.Future[tuple[float, float]], LoadedModel] = {}
        start = time.perf_counter()
        for model in todo:
            busy = self._busy.get(model.model_id)
            if busy is not None and not busy.done():
                out[model.model_id] = ModelResult(
                    model.model_id,
                    model.meta.version,
                    Outcome.TIMEOUT,
                    error="still running an earlier inference",
                )
                continue
            future = self._executors[model.model_id].submit(_score, model, row)
            self._busy[model.model_id] = future
            waiting[asyncio.wrap_future(future)] = model
        if waiting:
            done, _ = await asyncio.wait(waiting, timeout=self._budget_s)
            for aio_future, model in waiting.items():
                if aio_future not in done:
                    # Keep the thread's future in _busy; stop caring about the asyncio one.
                    aio_future.add_done_callback(_consume)
                    out[model.model_id] = ModelResult(
                        model.model_id,
                        model.meta.version,
                        Outcome.TIMEOUT,
                        latency_s=time.perf_counter() - start,
                        error=f"no answer within {self._budget_s * 1e3:.0f} ms",
                    )
                    continue
                exc = aio_future.exception()
                if exc is not None:
                    out[model.model_id] = self._error(model, exc, time.perf_counter() - start)
                    continue
                score, elapsed = aio_future.result()
                out[model.model_id] = self._answer(model, score, elapsed)
        return out

    def _answer(self, model: LoadedModel, score: float, elapsed: float) -> ModelResult:
        if not -1.0 <= score <= 1.0:  # NaN fails too
            return ModelResult(
                model.model_id,
                model.meta.version,
                Outcome.ERROR,
                latency_s=elapsed,
                error=f"score {score!r} outside [-1, 1]",
            )
        if elapsed > self._budget_s:
            return ModelResult(
                model.model_id,
                model.meta.version,
                Outcome.TIMEOUT,
                latency_s=elapsed,
                error=f"took {elapsed * 1e3:.1f} ms, budget {self._budget_s * 1e3:.0f} ms",
            )
        return ModelResult(model.model_id, model.meta.version, Outcome.OK, score=score, latency_s=elapsed)

    @staticmethod
    def _error(model: LoadedModel, exc: BaseException, elapsed: float) -> ModelResult:
        log.warning("model %s failed: %r", model.model_id, exc)
        return ModelResult(
            model.model_id,
            model.meta.version,
            Outcome.ERROR,
            latency_s=elapsed,
            error=f"{type(exc).__name__}: {exc}"[:200],
        )


def _consume(future: asyncio.Future[tuple[float, float]]) -> None:
    """Retrieve a late result or exception so asyncio does not log it as lost."""
    if not future.cancelled():
        future.exception()
