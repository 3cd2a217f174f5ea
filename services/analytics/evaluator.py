"""The periodic model evaluator behind the ``trading_model_*`` gauges.

Every ``evaluation_interval_s`` it scores the signals of every tenant of the
last ``evaluation_window_s`` at ``evaluation_horizon_ticks`` (one query,
AnalyticsStore.model_cells with no tenant; a model's score on one feature vector
counts once however many tenants' strategies used it) and sets, per model id
and version:

- ``trading_model_signal_hit_ratio``: hits / directional predictions;
- ``trading_model_brier_score``: mean (p - y)^2 over scored predictions;
- ``trading_model_realized_up_ratio``: share of scored predictions after
  which the price rose (the base rate the hit ratio is to be read against);
- ``trading_model_scored_predictions``: how many the figures rest on.

No tenant label: models are the platform's (decision loads them from its
model directory), so their quality over all tenants is the platform's figure
and says nothing about one tenant. Every analytics replica computes the same
figures from the same tables: aggregate replicas with max (or avg), not sum. Cardinality is bounded: at most
``evaluation_max_models`` model versions (the most scored) carry series, and
versions no longer in the window lose theirs.

Strategies get no gauges: their ids are chosen by tenants (unbounded, and
naming a tenant's business), and there is no strategy kind to group them by.
PnL gets none either: amounts of different tenants, accounts and currencies
do not add up to anything meaningful, and a platform sum would expose one
large tenant's PnL. Both are served per tenant by GetStrategyPerformance.

The query runs under the analytics query budget (max_execution_time on the
server) over a bounded window; a failure is logged and counted, the gauges
keep their last values (``trading_model_evaluation_timestamp_seconds`` tells
how old they are), and the next round comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from decimal import Decimal

from prometheus_client import Counter, Gauge

from runtime.tasks import stop_task
from services.analytics.domain import NS_PER_S, performance
from services.analytics.ports import AnalyticsStore
from services.analytics.settings import AnalyticsSettings

log = logging.getLogger(__name__)

_LABELS = ("model_id", "model_version", "horizon_ticks")
HIT_RATIO = Gauge(
    "trading_model_signal_hit_ratio",
    "Share of a model's directional predictions (p >= 0.5: up, else down) whose direction the "
    "price took over the horizon, all tenants, last evaluation window.",
    _LABELS,
)
BRIER = Gauge(
    "trading_model_brier_score",
    "Mean squared error of a model's predicted P(up) against the outcome (1 up, 0 down), all "
    "tenants, last evaluation window; 0.25 is a constant 0.5.",
    _LABELS,
)
UP_RATIO = Gauge(
    "trading_model_realized_up_ratio",
    "Share of a model's scored predictions after which the price rose (the base rate).",
    _LABELS,
)
SCORED = Gauge(
    "trading_model_scored_predictions",
    "Predictions of a model with an up or down outcome in the last evaluation window.",
    _LABELS,
)
EVALUATED_AT = Gauge(
    "trading_model_evaluation_timestamp_seconds",
    "When the model gauges were last computed (Unix time).",
)
EVALUATIONS = Counter("trading_model_evaluations", "Model evaluation rounds, by result.", ["result"])

Labels = tuple[str, str, str]


def top_models(
    found: dict[tuple[str, str], performance.Quality], limit: int
) -> list[tuple[tuple[str, str], performance.Quality]]:
    """The `limit` most scored model versions (ties by id and version), so the
    series stay bounded whatever the signals name."""
    ranked = sorted(found.items(), key=lambda item: (-item[1].scored_count, item[0]))
    return ranked[:limit]


class ModelEvaluator:
    """Sets the model gauges every interval, in a task of its own."""

    def __init__(
        self,
        store: AnalyticsStore,
        settings: AnalyticsSettings,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock_ns = clock_ns
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # The label sets this evaluator set, to remove those that drop out.
        self._series: set[Labels] = set()

    def start(self) -> None:
        if self._settings.evaluation_interval_s > 0:
            self._task = asyncio.create_task(self._loop(), name="analytics-model-evaluator")

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        await stop_task(task, name="the model evaluator")

    async def _loop(self) -> None:
        # The stop flag ends the loop even if a cancel is swallowed below us.
        while not self._stopping:
            try:
                await self.run_once()
                EVALUATIONS.labels("ok").inc()
            except Exception as exc:
                EVALUATIONS.labels("error").inc()
                log.warning("model evaluation failed: %r", exc)
            await asyncio.sleep(self._settings.evaluation_interval_s)

    async def run_once(self) -> dict[tuple[str, str], performance.Quality]:
        """One evaluation: query, set the gauges, drop stale series; returns
        the qualities the gauges now show."""
        s = self._settings
        end_ns = self._clock_ns()
        start_ns = end_ns - int(s.evaluation_window_s * NS_PER_S)
        cells = await self._store.model_cells(
            None, "", start_ns, end_ns, s.evaluation_horizon_ticks, s.query_timeout_s
        )
        shown = dict(top_models(performance.qualities(cells), s.evaluation_max_models))
        horizon = str(s.evaluation_horizon_ticks)
        current: set[Labels] = set()
        for (model_id, version), q in shown.items():
            labels = (model_id, version, horizon)
            current.add(labels)
            SCORED.labels(*labels).set(q.scored_count)
            _set_or_remove(HIT_RATIO, labels, q.hit_rate)
            _set_or_remove(BRIER, labels, q.brier_score)
            _set_or_remove(UP_RATIO, labels, q.base_rate)
        # New values first, then the stale series go: a scrape never sees none.
        for labels in self._series - current:
            for gauge in (SCORED, HIT_RATIO, BRIER, UP_RATIO):
                _remove(gauge, labels)
        self._series = current
        EVALUATED_AT.set(end_ns / NS_PER_S)
        return shown


def _set_or_remove(gauge: Gauge, labels: Labels, value: Decimal | None) -> None:
    """A figure without data (no scored prediction) has no series, rather
    than a made-up 0."""
    if value is None:
        _remove(gauge, labels)
    else:
        gauge.labels(*labels).set(float(value))


def _remove(gauge: Gauge, labels: Labels) -> None:
    with contextlib.suppress(KeyError):  # never set (e.g. no directional prediction yet)
        gauge.remove(*labels)
