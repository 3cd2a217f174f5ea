"""The correlation clusters' maths (services.analytics.correlations), pure:
returns of consecutive bars, pairwise correlation over common bars,
connected components above the threshold, and the event they make."""

from __future__ import annotations

import math

import numpy as np
import protovalidate
import pytest

from runtime.contracts import event_registry
from services.analytics.correlations import (
    Cluster,
    clusters,
    clusters_event,
    correlation_matrix,
    log_returns,
)


def series(values: list[float], start: int = 0, step: int = 60) -> dict[int, float]:
    return {start + i * step: v for i, v in enumerate(values)}


def walk(seed: int, n: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(v) for v in 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))]


def test_returns_are_of_consecutive_bars_only() -> None:
    closes = {"A": {0: 100.0, 60: 110.0, 180: 121.0}, "B": {60: 50.0, 120: 25.0}}
    symbols, returns = log_returns(closes, 60)
    assert symbols == ["A", "B"]
    # Rows: 60 (A only), 120 (B only); 180 has no bar at 120 for A: no return.
    assert returns.shape == (2, 2)
    assert returns[0, 0] == pytest.approx(math.log(1.1)) and math.isnan(returns[0, 1])
    assert math.isnan(returns[1, 0]) and returns[1, 1] == pytest.approx(math.log(0.5))


def test_correlation_matches_numpy_over_common_rows_and_needs_enough_of_them() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=200)
    y = 0.9 * x + 0.1 * rng.normal(size=200)
    z = rng.normal(size=200)
    data = np.column_stack([x, y, z])
    data[:40, 2] = np.nan  # z starts later: its pairs use the last 160 rows only
    corr, counts = correlation_matrix(data, min_returns=30)
    assert corr[0, 1] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert corr[0, 2] == pytest.approx(np.corrcoef(x[40:], z[40:])[0, 1])
    assert corr[1, 0] == pytest.approx(corr[0, 1])
    assert (counts[0, 1], counts[0, 2], counts[2, 2]) == (200, 160, 160)
    sparse, _ = correlation_matrix(data, min_returns=170)
    assert math.isnan(sparse[0, 2]) and not math.isnan(sparse[0, 1])
    # A constant series correlates with nothing.
    flat, _ = correlation_matrix(np.column_stack([x, np.ones(200)]), min_returns=3)
    assert math.isnan(flat[0, 1])


def test_clusters_are_connected_components_above_the_threshold() -> None:
    symbols = ["A", "B", "C", "D", "E"]
    corr = np.eye(5)
    for i, j, v in [(0, 1, 0.9), (1, 2, 0.85), (0, 2, 0.7), (3, 4, 0.79), (0, 4, -0.95)]:
        corr[i, j] = corr[j, i] = v
    found = clusters(symbols, corr, 0.8)
    # A-B and B-C link A, B and C (A-C itself is weaker); D-E stays below;
    # the strong negative A-E does not link.
    assert found == [Cluster("A", ("A", "B", "C"), 0.85, 0.9)]
    assert clusters(symbols, corr, 0.75)[1] == Cluster("D", ("D", "E"), 0.79, 0.79)
    corr[0, 3] = corr[3, 0] = float("nan")
    assert clusters(symbols, corr, 0.99) == []


def test_random_walks_that_share_a_driver_cluster_and_the_event_is_valid() -> None:
    driver, n = walk(1, 301), 301
    noise = [walk(s, n) for s in (2, 3, 4)]
    closes = {
        "BTC-USD": series([d * e / 100 for d, e in zip(driver, noise[0], strict=True)]),
        "ETH-USD": series([d * (1 + (e / 100 - 1) * 0.2) for d, e in zip(driver, noise[1], strict=True)]),
        "AAPL": series(noise[2]),
    }
    symbols, returns = log_returns(closes, 60)
    corr, _ = correlation_matrix(returns, min_returns=30)
    found = clusters(symbols, corr, 0.6)
    assert [c.symbols for c in found] == [("BTC-USD", "ETH-USD")]
    event = clusters_event(
        found,
        symbols,
        threshold=0.6,
        bar_s=60,
        window_start_ns=0,
        window_end_ns=18_060 * 10**9,
        computed_at_ns=18_061 * 10**9,
    )
    protovalidate.validate(event)
    assert event.clusters[0].cluster_id == "BTC-USD" and list(event.symbols) == sorted(symbols)
    assert event.bar_interval.seconds == 60 and event.computed_at.seconds == 18_061
    route = event_registry().route(event.DESCRIPTOR.full_name)
    assert (route.kafka_topic, route.nats_subject) == (
        "trading.analytics.correlations",
        "analytics.correlations",
    )
