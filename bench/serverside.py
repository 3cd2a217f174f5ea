"""Server-side handling time from the services' own Prometheus histograms,
beside the client's round trip, and the condition a path is measured in.

Every gRPC service records ``grpc_server_handling_seconds{service, method,
code}`` in its server interceptor (runtime.interceptors, buckets
LATENCY_BUCKETS) and the gateway records ``trading_gateway_http_request_seconds
{method, route, status}`` per REST request. A measured path scrapes the
service's ``/metrics`` right before and right after its recorded calls; the
difference of the cumulative bucket counts is the distribution of exactly
those calls on the server (the benchmark is the only caller of the method
while it measures). Percentiles come from the buckets, interpolated linearly
inside the bucket that holds the rank (as PromQL's histogram_quantile does):
bucket resolution, not HdrHistogram's 0.1 %. Where a goal is a bucket edge
(1.2 ms, 5 ms, 10 ms) the share of calls within it is exact and is reported
too (``share_within_ms``).

What the server-side time leaves out: the client, both network hops, TLS,
HTTP/2 framing, (de)serialisation outside the handler, and for gRPC the
OpenTelemetry interceptor that wraps the timing one (it creates the span).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.feed import CONSUMED, TICKS_ACCEPTED, counter, metrics_url
from bench.harness import Recorder, closed_loop
from bench.model import Result, Status
from runtime.config import Settings

GRPC_HANDLING = "grpc_server_handling_seconds"
GATEWAY_HANDLING = "trading_gateway_http_request_seconds"
_PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p95", 0.95), ("p99", 0.99), ("p99_9", 0.999))


@dataclass(frozen=True)
class Probe:
    """One histogram series (summed over its other labels, e.g. the status code) of one service."""

    service: str  # the platform process whose /metrics is read
    metric: str
    labels: tuple[tuple[str, str], ...]
    what: str  # for row names: "execution.PlaceOrder"

    @property
    def describe(self) -> str:
        labels = ", ".join(f'{k}="{v}"' for k, v in self.labels)
        return f"{self.service}'s {self.metric}{{{labels}}}"


def grpc_probe(service: str, full_method: str) -> Probe:
    """``full_method`` as gRPC names it: "/trading.execution.v1.ExecutionService/PlaceOrder"."""
    grpc_service, _, name = full_method.lstrip("/").rpartition("/")
    short = grpc_service.rsplit(".", 1)[-1].removesuffix("Service").lower()
    return Probe(service, GRPC_HANDLING, (("service", grpc_service), ("method", name)), f"{short}.{name}")


PLACE_ORDER_STAGES = "execution_place_order_stage_seconds"


def stage_probes(service: str, metric: str, stages: Sequence[str]) -> tuple[Probe, ...]:
    """One probe per stage of a histogram labelled by ``stage`` (e.g. PlaceOrder's risk, venue, store)."""
    return tuple(Probe(service, metric, (("stage", stage),), stage) for stage in stages)


def gateway_probe(method: str, route: str) -> Probe:
    """A REST route of the gateway by its template ("/v1/quotes/{symbol}")."""
    return Probe("gateway", GATEWAY_HANDLING, (("method", method), ("route", route)), f"{method} {route}")


@dataclass(frozen=True)
class Buckets:
    """A cumulative histogram: upper bounds (seconds, +Inf last) and counts."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    sum_s: float

    @property
    def count(self) -> float:
        return self.cumulative[-1] if self.cumulative else 0.0

    def minus(self, before: Buckets) -> Buckets:
        if not before.bounds:
            return self
        if before.bounds != self.bounds:
            raise RuntimeError("the histogram's buckets changed between two scrapes (service restarted?)")
        return Buckets(
            self.bounds,
            tuple(a - b for a, b in zip(self.cumulative, before.cumulative, strict=True)),
            self.sum_s - before.sum_s,
        )

    def quantile_s(self, q: float) -> float:
        """The q-quantile, interpolated linearly inside its bucket; a rank in the
        +Inf bucket answers the highest finite bound (a lower limit)."""
        total = self.count
        if total <= 0:
            return math.nan
        rank = q * total
        lower, below = 0.0, 0.0
        for bound, cum in zip(self.bounds, self.cumulative, strict=True):
            if cum >= rank and cum > below:
                if math.isinf(bound):
                    return lower
                return lower + (bound - lower) * (rank - below) / (cum - below)
            lower, below = bound, cum
        return lower

    def share_within_s(self, bound_s: float) -> float | None:
        """Exact share of calls <= ``bound_s`` when it is a bucket edge (else None)."""
        for bound, cum in zip(self.bounds, self.cumulative, strict=True):
            if math.isclose(bound, bound_s, rel_tol=1e-9):
                return cum / self.count if self.count else None
        return None

    def summary_ms(self) -> dict[str, float]:
        """The keys of Recorder.summary(): min is the lower edge of the first
        occupied bucket, max the upper edge of the last (or the highest finite
        bound when calls fell beyond it), mean exact (sum / count)."""
        total = self.count
        if total <= 0:
            return {}
        occupied = [
            (lo, hi)
            for lo, hi, c0, c1 in zip(
                (0.0, *self.bounds[:-1]),
                self.bounds,
                (0.0, *self.cumulative[:-1]),
                self.cumulative,
                strict=True,
            )
            if c1 > c0
        ]
        top = occupied[-1][1] if not math.isinf(occupied[-1][1]) else occupied[-1][0]
        out = {"count": total, "min": occupied[0][0] * 1e3, "mean": self.sum_s / total * 1e3}
        for name, q in _PERCENTILES:
            out[name] = self.quantile_s(q) * 1e3
        out["max"] = top * 1e3
        return out

    def to_json(self) -> dict[str, float]:
        """Calls per bucket (not cumulative), keyed by the upper bound in ms."""
        out: dict[str, float] = {}
        below = 0.0
        for bound, cum in zip(self.bounds, self.cumulative, strict=True):
            if cum > below:
                out["+Inf" if math.isinf(bound) else f"{bound * 1e3:g}"] = cum - below
            below = cum
        return out


def parse_histogram(text: str, probe: Probe) -> Buckets:
    """The probe's series in a /metrics page, summed over the labels it does not name."""
    wanted = dict(probe.labels)
    by_bound: dict[float, float] = {}
    sum_s = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != probe.metric:
            continue
        for sample in family.samples:
            if any(sample.labels.get(k) != v for k, v in wanted.items()):
                continue
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                by_bound[bound] = by_bound.get(bound, 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                sum_s += sample.value
    bounds = tuple(sorted(by_bound))
    return Buckets(bounds, tuple(by_bound[b] for b in bounds), sum_s)


@dataclass
class Window:
    """Scrapes before and after a measured stretch: the probes' histograms and
    the tick pipeline's counters (so each row states the load it ran under)."""

    settings: Settings
    probes: Sequence[Probe]
    feed_metrics_url: str | None  # the bench feed process, None when it is stopped
    before: dict[Probe, Buckets] = field(default_factory=dict)
    deltas: dict[Probe, Buckets] = field(default_factory=dict)
    load: dict[str, float] = field(default_factory=dict)
    _ticks0: tuple[float, float, float] = (0.0, 0.0, 0.0)

    async def _scrape(self, http: httpx.AsyncClient) -> dict[Probe, Buckets]:
        pages: dict[str, str] = {}
        out: dict[Probe, Buckets] = {}
        for probe in self.probes:
            if probe.service not in pages:
                reply = await http.get(metrics_url(self.settings, probe.service), timeout=5)
                pages[probe.service] = reply.text
            out[probe] = parse_histogram(pages[probe.service], probe)
        return out

    async def _ticks(self, http: httpx.AsyncClient) -> tuple[float, float, float]:
        ticks = 0.0
        if self.feed_metrics_url is not None:
            ticks = await counter(http, self.feed_metrics_url, TICKS_ACCEPTED, {})
        features = await counter(
            http, metrics_url(self.settings, "features"), CONSUMED, {"consumer": "features-ticks"}
        )
        return ticks, features, time.monotonic()

    async def __aenter__(self) -> Window:
        async with httpx.AsyncClient() as http:
            self._ticks0 = await self._ticks(http)
            self.before = await self._scrape(http)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if exc[0] is not None:
            return
        async with httpx.AsyncClient() as http:
            after = await self._scrape(http)
            ticks1 = await self._ticks(http)
        self.deltas = {p: after[p].minus(self.before[p]) for p in self.probes}
        seconds = max(ticks1[2] - self._ticks0[2], 1e-9)
        self.load = {
            "marketdata_ticks_per_s": round((ticks1[0] - self._ticks0[0]) / seconds, 1),
            "features_ticks_per_s": round((ticks1[1] - self._ticks0[1]) / seconds, 1),
        }


async def closed_loop_with_server(
    settings: Settings,
    call: Callable[[], Awaitable[Any]],
    probes: Sequence[Probe],
    *,
    samples: int,
    warmup: int,
    feed_metrics_url: str | None,
) -> tuple[Recorder, Window]:
    """`closed_loop`, with the probes scraped around the recorded calls only
    (the warm-up calls run before the first scrape)."""
    for _ in range(warmup):
        await call()
    async with Window(settings, probes, feed_metrics_url) as window:
        rec = await closed_loop(call, samples=samples, warmup=0)
    return rec, window


def server_side(
    key: str,
    target: str,
    name: str,
    probe: Probe,
    window: Window,
    *,
    floor: str | None = "floor_grpc",
    goal_ms: float | None = None,
    notes: str = "",
    stages: Sequence[Probe] = (),
) -> Result:
    """A row from the probe's bucket delta (no HdrHistogram: bucket resolution);
    ``stages``: the call's parts timed inside the servicer, as extra["stages_ms"]."""
    buckets = window.deltas.get(probe)
    method = f"server-side handling time from {probe.describe}, scraped before and after; bucket resolution"
    if buckets is None or buckets.count <= 0:
        return Result(key, target, name, Status.ERROR, method=method, error=f"no calls in {probe.describe}")
    extra: dict[str, Any] = {
        "server_side": True,
        "resolution": "histogram buckets, linear inside a bucket",
        "buckets_ms": buckets.to_json(),
        **window.load,
    }
    parts = {stage.what: window.deltas.get(stage) for stage in stages}
    if any(b is not None and b.count > 0 for b in parts.values()):
        extra["stages_ms"] = {
            what: {k: round(v, 3) for k, v in b.summary_ms().items() if k in ("count", "mean", "p50", "p99")}
            for what, b in parts.items()
            if b is not None and b.count > 0
        }
    if "stages_ms" in extra:
        notes += (
            " Inside the servicer (p50 / p99 ms): "
            + ", ".join(f"{what} {v['p50']:.2f} / {v['p99']:.2f}" for what, v in extra["stages_ms"].items())
            + "; the rest is the interceptors (identity, context, tracing) and the event loop."
        )
    if goal_ms is not None:
        share = buckets.share_within_s(goal_ms / 1e3)
        if share is not None:
            extra["share_within_ms"] = {f"{goal_ms:g}": round(share, 5)}
    bounds = ", ".join(f"{b * 1e3:g}" for b in buckets.bounds if not math.isinf(b) and b <= 0.011)
    text = (
        f"Percentiles interpolated inside the histogram's buckets (edges up to 10 ms: {bounds} ms), "
        "so they are estimates; the mean is exact. The timer runs inside the server's interceptor: "
        "no network, TLS or client time."
    )
    return Result(
        key, target, name, Status.MEASURED, method=method, notes=f"{notes} {text}".strip(), floor=floor,
        latency_ms=buckets.summary_ms(), extra=extra,
    )  # fmt: skip


async def settle(seconds: float) -> None:
    """A pause that lets what the previous step queued be worked off."""
    await asyncio.sleep(seconds)
