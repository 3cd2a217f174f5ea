"""Runs a set of models on feature vectors, concurrently, each within a
time budget.

Each model has its own thread and a queue (:class:`_ModelLane`). Rows that
arrive while the model is busy (vectors of other symbols handled at the same
time) are scored together in its next call: one ``predict_proba`` on N rows
costs about what one row costs (~0.35 ms for the default gradient boosting,
measured here), so a busy model answers more vectors per second, not fewer.
Why threads rather than direct calls on the event loop: a slow or hung model
cannot stall the event loop that also serves gRPC and consumes NATS, and its
budget is enforced (a direct call can only be judged late, after it
returned). A model whose call has run past the budget answers TIMEOUT at once
("still running an earlier inference"), so a hung model costs one thread, not
one per vector. ``threads=0`` runs the models inline instead (budget judged
after the call) for benchmarks.

The analog model (kind NEAREST_NEIGHBORS, services/decision/domain/analog.py) has
no thread: its inference is a k-nearest-neighbour search of the market
memory (services/decision/memory.py, the vector store) for the vector's
market state, awaited beside the threaded models under the same budget. A
search still running at the budget is cancelled and the model answers
TIMEOUT, like a slow model; with too many searches in flight it answers
TIMEOUT at once; before the memory holds k states it is SKIPPED. Its
result carries the ids of the states it voted with.

The model threads run native code single-threaded (OpenMP/BLAS limited to 1
thread by threadpoolctl in each thread's initializer): scikit-learn's
gradient boosting otherwise starts an OpenMP team per call, which costs
several milliseconds per row on this 2-core machine (0.84 ms vs 0.34 ms per
call measured idle, ~10x under load).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import sklearn
from prometheus_client import Counter, Gauge, Histogram
from threadpoolctl import threadpool_limits

from services.decision.domain import FEATURE_NAMES, ModelResult, Outcome, analog, feature_row
from services.decision.domain.drift import DriftMonitor
from services.decision.memory import MarketMemory, MarketState, MemoryBusy
from services.decision.models import LoadedModel

log = logging.getLogger(__name__)

INFERENCE_SECONDS = Histogram(
    "trading_decision_model_inference_seconds",
    "Time of one model's inference on one feature vector (answered calls).",
    ("model",),
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
BATCH_ROWS = Histogram(
    "trading_decision_model_batch_rows",
    "Rows scored together in one model call (vectors that arrived while the model was busy).",
    ("model",),
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
MODEL_FAILURES = Counter(
    "trading_decision_model_failures_total",
    "Model evaluations whose score was not used, by outcome (error, timeout, skipped).",
    ("model", "outcome"),
)
FEATURE_DRIFT = Gauge(
    "trading_decision_feature_drift_psi",
    "Population stability index of each model input over the model's recent live vectors against its "
    "training data (services/decision/domain/drift.py): < 0.1 stable, > 0.25 shifted.",
    ("model", "model_version", "feature"),
)
_DRIFT_GAUGE_EVERY = 200  # vectors between gauge updates
SHADOW_PREDICTIONS = Counter(
    "trading_decision_shadow_predictions_total",
    "Shadow-version predictions beside the live model's on the same vector, by result: agree or"
    " disagree (the direction of the two scores), dropped (shadow busy) or failed. Never traded.",
    ("model", "shadow_version", "result"),
)
SHADOW_SCORE_DIFFERENCE = Histogram(
    "trading_decision_shadow_score_difference",
    "Absolute difference between the shadow version's score and the live model's on the same vector.",
    ("model",),
    buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
)


def _score(model: LoadedModel, rows: list[list[float]]) -> tuple[list[float], float]:
    start = time.perf_counter()
    # Inputs are checked finite by feature_row; skip scikit-learn's own check
    # (its config is per thread, hence here).
    with sklearn.config_context(assume_finite=True):
        scores = model.score_many(rows)
    return scores, time.perf_counter() - start


def _single_threaded_native_code() -> None:
    threadpool_limits(1)


def is_analog(model: LoadedModel) -> bool:
    """The analog model: answered by the market memory, not by a thread."""
    return model.meta.kind == analog.KIND


# Rows waiting for one model call at most; beyond, callers answer TIMEOUT at once.
MAX_WAITING_ROWS = 256
MAX_BATCH_ROWS = 64


# Rows to score per model id, each with its evaluation's index; results by that index.
_Rows = dict[str, list[tuple[int, list[float]]]]
_Scored = list[tuple[int, ModelResult]]


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One vector to evaluate: the models to run, its market state (the analog
    model's input), and whether it is its symbol's newest in the batch (its
    analog search starts first: searches beyond the memory's limit of
    lookups in flight answer TIMEOUT, and the newest vector matters most)."""

    vector: object
    model_ids: tuple[str, ...]
    state: MarketState | None = None
    newest: bool = True


class _ModelLane:
    """One model's thread and the rows waiting for it.

    One call in flight at a time; rows submitted meanwhile wait and go
    together into the next call. Callers that stopped waiting (budget passed)
    cancel their future and their row is dropped before the call.
    """

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self._executor = ThreadPoolExecutor(
            1, thread_name_prefix=f"model-{model.model_id}", initializer=_single_threaded_native_code
        )
        self._waiting: list[tuple[list[float], asyncio.Future[tuple[float, float]]]] = []
        self._in_flight_since: float | None = None
        self._call: Future[tuple[list[float], float]] | None = None

    def stuck(self, budget_s: float) -> bool:
        """The call in flight has run past the budget (a hung or very slow model)."""
        since, call = self._in_flight_since, self._call
        # The thread's future, not only our bookkeeping: a call that just
        # ended is not stuck even before its completion reaches the loop.
        return (
            since is not None
            and not (call is None or call.done())
            and time.perf_counter() - since >= budget_s
        )

    def submit(self, row: list[float]) -> asyncio.Future[tuple[float, float]] | None:
        """A future of (score, seconds of the call); None when the queue is full."""
        if len(self._waiting) >= MAX_WAITING_ROWS:
            return None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[float, float]] = loop.create_future()
        self._waiting.append((row, future))
        if self._in_flight_since is None:
            self._launch(loop)
        return future

    def submit_many(self, rows: list[list[float]]) -> list[asyncio.Future[tuple[float, float]]] | None:
        """Futures of (score, seconds of the call), one per row, scored together
        in one call (or the next one, while a call is in flight); None when
        they do not fit in the queue."""
        if len(self._waiting) + len(rows) > MAX_WAITING_ROWS:
            return None
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[tuple[float, float]]] = [loop.create_future() for _ in rows]
        self._waiting.extend(zip(rows, futures, strict=True))
        if self._in_flight_since is None:
            self._launch(loop)
        return futures

    def _launch(self, loop: asyncio.AbstractEventLoop) -> None:
        live = [(r, f) for r, f in self._waiting if not f.done()]
        batch, self._waiting = live[:MAX_BATCH_ROWS], live[MAX_BATCH_ROWS:]
        if not batch:
            return
        self._in_flight_since = time.perf_counter()
        BATCH_ROWS.labels(self.model.model_id).observe(len(batch))
        call = self._call = self._executor.submit(_score, self.model, [r for r, _ in batch])

        def done(c: Future[tuple[list[float], float]]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (shutdown)
                loop.call_soon_threadsafe(self._finish, loop, batch, c)

        call.add_done_callback(done)

    def _finish(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[tuple[list[float], asyncio.Future[tuple[float, float]]]],
        call: Future[tuple[list[float], float]],
    ) -> None:
        self._in_flight_since = None
        exc = call.exception()
        if exc is None:
            scores, elapsed = call.result()
            if len(scores) != len(batch):
                exc = ValueError(f"model answered {len(scores)} scores for {len(batch)} rows")
        for i, (_, future) in enumerate(batch):
            if future.done():
                continue
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result((scores[i], elapsed))
        self._launch(loop)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class Ensemble:
    """The loaded models and the machinery to evaluate them."""

    def __init__(
        self,
        models: Mapping[str, LoadedModel],
        *,
        budget_s: float,
        threads: bool = True,
        drift_window: int = 5_000,
        memory: MarketMemory | None = None,
    ) -> None:
        self._models = dict(models)
        self._budget_s = budget_s
        self._threads = threads
        # The analog model's memory (None: it answers SKIPPED).
        self._memory = memory
        self._drift = {
            m: DriftMonitor(
                model.meta.feature_profile, model.meta.feature_names or FEATURE_NAMES, drift_window
            )
            for m, model in self._models.items()
        }
        self._observed = 0
        self._lanes = (
            {m: _ModelLane(model) for m, model in self._models.items() if not is_analog(model)}
            if threads
            else {}
        )
        if not threads:
            _single_threaded_native_code()  # inline: the calling (event loop) thread

    @property
    def models(self) -> Mapping[str, LoadedModel]:
        return self._models

    def close(self) -> None:
        for lane in self._lanes.values():
            lane.close()

    def drift(self, model_id: str) -> tuple[dict[str, float], int]:
        """PSI per input of a model over its recent live rows, and how many rows."""
        monitor = self._drift.get(model_id)
        if monitor is None:
            return {}, 0
        return monitor.drift(), monitor.size

    def _observe_drift(self, todo: list[LoadedModel], row: list[float]) -> None:
        for model in todo:
            self._drift[model.model_id].observe(row)
        self._observed += 1
        if self._observed % _DRIFT_GAUGE_EVERY == 0:  # the gauges need not move per vector
            for model in todo:
                for feature, value in self._drift[model.model_id].drift().items():
                    FEATURE_DRIFT.labels(model.model_id, model.meta.version, feature).set(value)

    def _skip(self, model: LoadedModel, vector: object) -> str:
        if not getattr(vector, "warmed_up", True):
            return "feature vector not warmed up"
        version = getattr(vector, "feature_set_version", "")
        if version != model.meta.feature_set_version:
            return f"feature set {version!r}, model trained on {model.meta.feature_set_version!r}"
        return ""

    async def evaluate(
        self, vector: object, model_ids: Iterable[str], *, state: MarketState | None = None
    ) -> dict[str, ModelResult]:
        """The result of every requested model on `vector` (unknown ids:
        ERROR); `state` is the vector's market state (the analog model's input)."""
        [results] = await self.evaluate_many([Evaluation(vector, tuple(model_ids), state)])
        return results

    async def evaluate_many(self, batch: Sequence[Evaluation]) -> list[dict[str, ModelResult]]:
        """The results of each evaluation of `batch`, in order: every threaded
        model scores the rows of all of them in one call (one ``predict_proba``
        over N rows costs about one row's), the analog searches run beside
        them, all under one budget."""
        results: list[dict[str, ModelResult]] = [{} for _ in batch]
        rows: _Rows = defaultdict(list)  # model id -> (index, row)
        searches: list[tuple[int, LoadedModel, MarketState]] = []
        for i, item in enumerate(batch):
            vector, out = item.vector, results[i]
            row: list[float] | None = None
            todo: list[LoadedModel] = []
            for model_id in dict.fromkeys(item.model_ids):
                model = self._models.get(model_id)
                if model is None:
                    out[model_id] = ModelResult(model_id, "", Outcome.ERROR, error="model not loaded")
                    continue
                reason = self._skip(model, vector)
                if not reason and is_analog(model):
                    if self._memory is None:
                        reason = "no market memory (vector store) configured"
                    elif item.state is None:
                        reason = "no market state for this vector"
                if reason:
                    out[model_id] = ModelResult(model_id, model.meta.version, Outcome.SKIPPED, error=reason)
                    continue
                if row is None:
                    try:
                        row = feature_row(vector, model.meta.feature_names or FEATURE_NAMES)
                    except (AttributeError, TypeError, ValueError) as exc:
                        out[model_id] = ModelResult(
                            model_id, model.meta.version, Outcome.ERROR, error=str(exc)
                        )
                        continue
                todo.append(model)
            if not todo:
                continue
            assert row is not None
            self._observe_drift(todo, row)
            for model in todo:
                if is_analog(model):
                    assert item.state is not None
                    searches.append((i, model, item.state))
                else:
                    rows[model.model_id].append((i, row))
        if searches:
            # Started first: the searches run while the threads score (the newest vectors' first).
            searches.sort(key=lambda x: not batch[x[0]].newest)
            found = self._analog(searches)
            if rows:
                scored, answered = await asyncio.gather(self._scored(rows), found)
                scored.extend(answered)
            else:
                scored = await found
        else:
            scored = await self._scored(rows) if rows else []
        for i, result in scored:
            results[i][result.model_id] = result
        for out in results:
            for r in out.values():
                if r.outcome is Outcome.OK:
                    INFERENCE_SECONDS.labels(r.model_id).observe(r.latency_s)
                else:
                    MODEL_FAILURES.labels(r.model_id, r.outcome.name.lower()).inc()
        return results

    async def _scored(self, rows: _Rows) -> _Scored:
        if self._threads:
            return await self._threaded(rows)
        return self._inline(rows)

    def _inline(self, rows: _Rows) -> _Scored:
        out: _Scored = []
        for model_id, indexed in rows.items():
            model = self._models[model_id]
            start = time.perf_counter()
            try:
                scores, elapsed = _score(model, [r for _, r in indexed])
                if len(scores) != len(indexed):
                    raise ValueError(f"model answered {len(scores)} scores for {len(indexed)} rows")
            except Exception as exc:
                failed = self._error(model, exc, time.perf_counter() - start)
                out.extend((i, failed) for i, _ in indexed)
                continue
            out.extend(
                (i, self._answer(model, score, elapsed))
                for (i, _), score in zip(indexed, scores, strict=True)
            )
        return out

    async def _threaded(self, rows: _Rows) -> _Scored:
        out: _Scored = []
        waiting: dict[asyncio.Future[tuple[float, float]], tuple[int, LoadedModel]] = {}
        start = time.perf_counter()
        for model_id, indexed in rows.items():
            lane = self._lanes[model_id]
            model = lane.model
            futures = None if lane.stuck(self._budget_s) else lane.submit_many([r for _, r in indexed])
            if futures is None:
                busy = ModelResult(
                    model.model_id,
                    model.meta.version,
                    Outcome.TIMEOUT,
                    error="still running an earlier inference",
                )
                out.extend((i, busy) for i, _ in indexed)
                continue
            for (i, _), future in zip(indexed, futures, strict=True):
                waiting[future] = (i, model)
        if waiting:
            done, _ = await asyncio.wait(waiting, timeout=self._budget_s)
            for future, (i, model) in waiting.items():
                if future not in done:
                    future.cancel()  # its row is dropped if the model has not started it
                    timeout = ModelResult(
                        model.model_id,
                        model.meta.version,
                        Outcome.TIMEOUT,
                        latency_s=time.perf_counter() - start,
                        error=f"no answer within {self._budget_s * 1e3:.0f} ms",
                    )
                    out.append((i, timeout))
                    continue
                exc = future.exception()
                if exc is not None:
                    out.append((i, self._error(model, exc, time.perf_counter() - start)))
                    continue
                score, elapsed = future.result()
                out.append((i, self._answer(model, score, elapsed)))
        return out

    async def _analog(self, todo: list[tuple[int, LoadedModel, MarketState]]) -> _Scored:
        """The analog models' searches of the market memory, within the budget."""
        assert self._memory is not None
        out: _Scored = []
        searches: dict[asyncio.Task[tuple[list[Any], float]], tuple[int, LoadedModel, int]] = {}
        start = time.perf_counter()
        for i, model, state in todo:
            k = int(getattr(model.estimator, "k", analog.DEFAULT_K))
            searches[asyncio.create_task(self._search(state, k))] = (i, model, k)
        done, _ = await asyncio.wait(searches, timeout=self._budget_s)
        for task, (i, model, k) in searches.items():
            version = model.meta.version
            if task not in done:
                task.cancel()  # its query is cancelled on the server; the connection goes back to the pool
                out.append(
                    (
                        i,
                        ModelResult(
                            model.model_id,
                            version,
                            Outcome.TIMEOUT,
                            latency_s=time.perf_counter() - start,
                            error=f"no market memory answer within {self._budget_s * 1e3:.0f} ms",
                        ),
                    )
                )
                continue
            exc = task.exception()
            if isinstance(exc, MemoryBusy):
                out.append((i, ModelResult(model.model_id, version, Outcome.TIMEOUT, error=str(exc))))
                continue
            if exc is not None:
                out.append((i, self._error(model, exc, time.perf_counter() - start)))
                continue
            neighbours, elapsed = task.result()
            if len(neighbours) < k:
                few = ModelResult(
                    model.model_id,
                    version,
                    Outcome.SKIPPED,
                    latency_s=elapsed,
                    error=f"the market memory holds {len(neighbours)} of the {k} states needed",
                )
                out.append((i, few))
                continue
            p_up = analog.vote(int(n.payload.get("outcome") or 0) for n in neighbours)
            answer = self._answer(model, 2.0 * p_up - 1.0, elapsed)
            out.append((i, replace(answer, analogs=tuple(n.id for n in neighbours))))
        return out

    async def _search(self, state: MarketState, k: int) -> tuple[list[Any], float]:
        assert self._memory is not None
        began = time.perf_counter()
        found = await self._memory.similar(state, k)
        return found, time.perf_counter() - began

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


def _direction(score: float) -> int:
    return (score > 0) - (score < 0)


class ShadowScorer:
    """Shadow versions (models.shadow_version) scored beside the live models, never traded.

    :meth:`observe` is called once a vector's orders are decided and started:
    it hands the vector's row to the shadow of each live model that answered
    on it and returns at once (a few microseconds); the shadow runs on its own
    thread (a :class:`_ModelLane`, batching rows like the live models) and its
    answer is only counted (``trading_decision_shadow_predictions_total``,
    ``trading_decision_shadow_score_difference``) and logged (every prediction at
    DEBUG, a summary per model every ``summary_every`` predictions at INFO).
    Nothing it computes reaches a signal or an order. A busy shadow drops rows
    rather than queue them: shadows never hold the event loop or memory.
    """

    def __init__(self, shadows: Mapping[str, LoadedModel], *, summary_every: int = 1000) -> None:
        # An analog shadow would need a memory search per vector: not scored (logged).
        for m in (m for m, model in shadows.items() if is_analog(model)):
            log.warning("shadow %s: analog models are not scored as shadows", m)
        self._shadows = {m: model for m, model in shadows.items() if not is_analog(model)}
        self._lanes = {m: _ModelLane(model) for m, model in self._shadows.items()}
        self._summary_every = summary_every
        # Per model: predictions, agreements, sum of |score difference| since the last summary.
        self._tally: dict[str, list[float]] = {m: [0, 0, 0.0] for m in self._shadows}

    @property
    def models(self) -> Mapping[str, LoadedModel]:
        return self._shadows

    def close(self) -> None:
        for lane in self._lanes.values():
            lane.close()

    def observe(self, vector: object, live: Mapping[str, ModelResult]) -> int:
        """Score `vector` with the shadows of the live models that answered it
        (results in `live`); returns how many rows were handed over."""
        submitted = 0
        for model_id, lane in self._lanes.items():
            result = live.get(model_id)
            if result is None or result.outcome is not Outcome.OK:
                continue  # no live answer to compare with
            shadow = lane.model
            if getattr(vector, "feature_set_version", "") != shadow.meta.feature_set_version:
                continue
            try:
                row = feature_row(vector, shadow.meta.feature_names or FEATURE_NAMES)
            except (AttributeError, TypeError, ValueError):
                continue
            future = lane.submit(row)
            if future is None:  # its queue is full: the shadow is behind
                SHADOW_PREDICTIONS.labels(model_id, shadow.meta.version, "dropped").inc()
                continue
            context = (getattr(vector, "symbol", ""), getattr(vector, "tick_sequence", 0))
            future.add_done_callback(partial(self._record, model_id, shadow, result, context))
            submitted += 1
        return submitted

    def _record(
        self,
        model_id: str,
        shadow: LoadedModel,
        live: ModelResult,
        context: tuple[str, int],
        future: asyncio.Future[tuple[float, float]],
    ) -> None:
        if future.cancelled() or future.exception() is not None:
            SHADOW_PREDICTIONS.labels(model_id, shadow.meta.version, "failed").inc()
            return
        score, _ = future.result()
        agree = _direction(score) == _direction(live.score)
        SHADOW_PREDICTIONS.labels(model_id, shadow.meta.version, "agree" if agree else "disagree").inc()
        difference = abs(score - live.score)
        SHADOW_SCORE_DIFFERENCE.labels(model_id).observe(difference)
        symbol, sequence = context
        log.debug(
            "shadow %s %s on %s #%d: score %.4f, live %s %.4f",
            model_id,
            shadow.meta.version,
            symbol,
            sequence,
            score,
            live.version,
            live.score,
        )
        tally = self._tally[model_id]
        tally[0] += 1
        tally[1] += agree
        tally[2] += difference
        if tally[0] >= self._summary_every:
            log.info(
                "shadow %s %s beside live %s: %d predictions, %.1f%% same direction,"
                " mean |score difference| %.3f",
                model_id,
                shadow.meta.version,
                live.version,
                tally[0],
                100 * tally[1] / tally[0],
                tally[2] / tally[0],
            )
            self._tally[model_id] = [0, 0, 0.0]
