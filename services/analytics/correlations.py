"""The instrument correlation graph: which instruments move together, as clusters.

Every ``interval_s`` (:class:`CorrelationSettings`) the task reads the close
of every instrument's bars over the last ``window_s`` from ClickHouse
(analytics' own bar tables), turns them into log returns of consecutive
bars, and correlates every pair of instruments over the bars both have
(Pearson; a pair needs ``min_returns`` common returns). Instruments are the
nodes of a graph with an edge wherever the correlation is at least
``threshold``; its connected components of two or more instruments are the
clusters. They are published as ``CorrelationClustersComputed`` (Kafka and
core NATS) and risk limits the gross exposure of a tenant to one cluster
(services/risk: ``max_cluster_gross_notional``).

Only positive correlation links: instruments that move against each other
offset one another, which is not the concentration the limit is about. A
chain of strong links joins instruments whose own correlation may be
weaker (a component, not a clique): the cautious reading for a limit.

The maths is pure and unit-tested (:func:`log_returns`,
:func:`correlation_matrix`, :func:`clusters`); numpy keeps a few hundred
instruments x a few hundred bars at milliseconds. A failed round (ClickHouse
down, a publish refused) is logged and counted, and so is a round with fewer
than two instruments to compare (not published); the next comes at the next
interval and risk keeps the clusters it has.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from google.protobuf import message as pb_message
from prometheus_client import Counter, Gauge
from trading.analytics.v1 import events_pb2 as analytics_events
from trading.common.v1 import event_pb2

from runtime.messaging import new_envelope
from runtime.messaging.base import Publisher
from runtime.tasks import stop_task
from services.analytics.adapters.clickhouse import BAR_TABLES, ClickHouseAnalyticsStore
from services.analytics.settings import CorrelationSettings

log = logging.getLogger(__name__)

PRODUCER: Final = "analytics"
BAR_SECONDS: Final = {"1s": 1, "1m": 60, "1h": 3600}

ROUNDS = Counter("trading_correlation_rounds", "Correlation cluster computations, by result.", ["result"])
CLUSTERED = Gauge(
    "trading_correlation_clustered_instruments",
    "Instruments in a correlation cluster after the last computation.",
)


@dataclass(frozen=True, slots=True)
class Cluster:
    cluster_id: str
    symbols: tuple[str, ...]
    min_link_correlation: float
    max_correlation: float


# --------------------------------------------------------------------------- pure maths


def log_returns(
    closes: Mapping[str, Mapping[int, float]], step: int
) -> tuple[list[str], npt.NDArray[np.float64]]:
    """Log returns of consecutive bars, one column per symbol (sorted), one
    row per bar start that any symbol has a return at; NaN where a symbol has
    no bar there or none `step` seconds before."""
    symbols = sorted(closes)
    buckets = sorted({b for series in closes.values() for b in series})
    row = {b: i for i, b in enumerate(buckets)}
    out = np.full((len(buckets), len(symbols)), np.nan)
    for j, symbol in enumerate(symbols):
        series = closes[symbol]
        for bucket, close in series.items():
            before = series.get(bucket - step)
            if before is not None and before > 0 and close > 0:
                out[row[bucket], j] = math.log(close / before)
    keep = ~np.all(np.isnan(out), axis=1)
    return symbols, out[keep]


def correlation_matrix(
    returns: npt.NDArray[np.float64], min_returns: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Pearson correlation of every pair of columns over the rows where both
    are defined (NaN where fewer than `min_returns` or a column is constant
    there), and the number of rows each pair had."""
    valid = (~np.isnan(returns)).astype(np.float64)
    x = np.where(np.isnan(returns), 0.0, returns)
    n = valid.T @ valid
    sx = x.T @ valid  # sx[i, j]: sum of column i over the rows where j is defined too
    sxx = (x * x).T @ valid
    sxy = x.T @ x
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = n * sxy - sx * sx.T
        var = (n * sxx - sx * sx) * (n * sxx - sx * sx).T
        corr = cov / np.sqrt(var)
    corr = np.where((n >= min_returns) & (var > 0), np.clip(corr, -1.0, 1.0), np.nan)
    return corr, n.astype(np.int64)


def clusters(symbols: Sequence[str], corr: npt.NDArray[np.float64], threshold: float) -> list[Cluster]:
    """Connected components (two or more symbols) of the graph linking pairs
    with correlation >= `threshold`, sorted by id (each one's first symbol)."""
    parent = list(range(len(symbols)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    links: list[tuple[int, int, float]] = []
    for i in range(len(symbols)):
        for j in range(i + 1, len(symbols)):
            value = float(corr[i, j])
            if not math.isnan(value) and value >= threshold:
                links.append((i, j, value))
                parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(symbols)):
        groups.setdefault(root(i), []).append(i)
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        inside = set(members)
        linked = [v for i, j, v in links if i in inside and j in inside]
        pairs = [float(corr[i, j]) for a, i in enumerate(members) for j in members[a + 1 :]]
        names = tuple(sorted(symbols[i] for i in members))
        out.append(Cluster(names[0], names, min(linked), max(v for v in pairs if not math.isnan(v))))
    return sorted(out, key=lambda c: c.cluster_id)


def clusters_event(
    found: Sequence[Cluster],
    symbols: Sequence[str],
    *,
    threshold: float,
    bar_s: int,
    window_start_ns: int,
    window_end_ns: int,
    computed_at_ns: int,
) -> analytics_events.CorrelationClustersComputed:
    event = analytics_events.CorrelationClustersComputed(
        clusters=[
            analytics_events.CorrelationCluster(
                cluster_id=c.cluster_id,
                symbols=c.symbols,
                min_link_correlation=round(c.min_link_correlation, 6),
                max_correlation=round(c.max_correlation, 6),
            )
            for c in found
        ],
        symbols=sorted(symbols),
        threshold=threshold,
    )
    event.bar_interval.FromSeconds(bar_s)
    event.window_start.FromNanoseconds(window_start_ns)
    event.window_end.FromNanoseconds(window_end_ns)
    event.computed_at.FromNanoseconds(computed_at_ns)
    return event


# --------------------------------------------------------------------------- the task


def closes_sql(table: str) -> str:
    """Close per symbol and bar of [lo, hi), for the `limit` symbols with the most bars."""
    return f"""SELECT symbol, toUnixTimestamp(bucket) AS start, toFloat64(argMaxMerge(close)) AS close
FROM {table}
WHERE bucket >= toDateTime({{lo:UInt32}}, 'UTC') AND bucket < toDateTime({{hi:UInt32}}, 'UTC')
  AND symbol IN (
    SELECT symbol FROM {table}
    WHERE bucket >= toDateTime({{lo:UInt32}}, 'UTC') AND bucket < toDateTime({{hi:UInt32}}, 'UTC')
    GROUP BY symbol ORDER BY count() DESC, symbol LIMIT {{limit:UInt32}})
GROUP BY symbol, start
ORDER BY symbol, start"""


class CorrelationTask:
    """Computes and publishes the clusters every interval, in a task of its own."""

    def __init__(
        self,
        store: ClickHouseAnalyticsStore,
        publishers: Sequence[Publisher],
        settings: CorrelationSettings | None = None,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._store = store
        self._publishers = list(publishers)
        self._settings = settings or CorrelationSettings()
        self._clock_ns = clock_ns
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        if self._settings.interval_s > 0:
            self._task = asyncio.create_task(self._loop(), name="analytics-correlations")

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        await stop_task(task, name="the correlation task")

    async def _loop(self) -> None:
        # The stop flag ends the loop even if a cancel is swallowed below us.
        while not self._stopping:
            try:
                published = await self.run_once()
                ROUNDS.labels("ok" if published is not None else "skipped").inc()
            except Exception as exc:
                ROUNDS.labels("error").inc()
                log.warning("correlation clusters not computed: %r", exc)
            await asyncio.sleep(self._settings.interval_s)

    async def closes(self, lo_s: int, hi_s: int) -> dict[str, dict[int, float]]:
        """Close per symbol and bar start (epoch seconds) in [lo, hi)."""
        s = self._settings
        # The server stops the query itself when the budget is gone.
        limit = max(1, math.ceil(s.query_timeout_s))
        sql = f"{closes_sql(BAR_TABLES[s.bar])}\nSETTINGS max_execution_time = {limit}"
        client = await self._store.client()
        async with asyncio.timeout(s.query_timeout_s):
            result = await client.query(sql, {"lo": max(lo_s, 0), "hi": max(hi_s, 0), "limit": s.max_symbols})
        out: dict[str, dict[int, float]] = {}
        for symbol, start, close in result.rows:
            out.setdefault(str(symbol), {})[int(start)] = float(close)
        return out

    async def run_once(self) -> analytics_events.CorrelationClustersComputed | None:
        """One round: read, compute, publish; returns the event published, or
        None when fewer than two instruments had enough bars: nothing measured
        is not "nothing correlated", so risk keeps the clusters it has."""
        s = self._settings
        now_ns = self._clock_ns()
        step = BAR_SECONDS[s.bar]
        # Whole bars only: the current one is still forming.
        hi_s = now_ns // 1_000_000_000 // step * step
        lo_s = hi_s - int(s.window_s)
        series = await self.closes(lo_s, hi_s)
        symbols, returns = log_returns(series, step)
        corr, counts = correlation_matrix(returns, s.min_returns)
        found = clusters(symbols, corr, s.threshold)
        compared = [sym for j, sym in enumerate(symbols) if counts[j, j] >= s.min_returns]
        if len(compared) < 2:
            log.info("correlation clusters not published: %d instruments with enough bars", len(compared))
            return None
        event = clusters_event(
            found,
            compared,
            threshold=s.threshold,
            bar_s=step,
            window_start_ns=lo_s * 1_000_000_000,
            window_end_ns=hi_s * 1_000_000_000,
            computed_at_ns=now_ns,
        )
        await self.publish(event)
        CLUSTERED.set(sum(len(c.symbols) for c in found))
        return event

    async def publish(self, payload: pb_message.Message) -> None:
        """To every publisher (NATS first: risk applies it at once; Kafka is
        the durable copy); each failure logged apart, the last one raised."""
        envelope: event_pb2.EventEnvelope = new_envelope(
            payload, tenant_id="", correlation_id="", producer=PRODUCER
        )
        failure: Exception | None = None
        for publisher in self._publishers:
            try:
                await publisher.publish(envelope, payload=payload)
            except Exception as exc:
                failure = exc
                log.warning("%s %s not published by %s: %r", envelope.event_type, envelope.event_id,
                            type(publisher).__name__, exc)  # fmt: skip
        if failure is not None:
            raise failure
