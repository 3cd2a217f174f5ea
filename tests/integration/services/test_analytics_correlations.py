"""The correlation task on analytics' real ClickHouse schema (chdb, a database
of its own): ticks written by the store become minute bars (the
materialized views), the task correlates their returns and publishes the
clusters; a publisher that fails is reported after the others got it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import numpy as np
import numpy.typing as npt
import protovalidate
import pytest
import pytest_asyncio
from google.protobuf import message as pb_message
from trading.analytics.v1 import events_pb2 as analytics_events
from trading.common.v1 import event_pb2

from runtime.config import Settings
from services.analytics.adapters.clickhouse import ClickHouseAnalyticsStore
from services.analytics.correlations import CorrelationTask
from services.analytics.domain import TickRow
from services.analytics.settings import CorrelationSettings

pytestmark = pytest.mark.integration

DATABASE = f"analytics_corr_{uuid.uuid4().hex[:8]}"
BASE_S = 1_709_287_200  # 2024-03-01 10:00:00 UTC
MINUTES = 120
NS = 1_000_000_000


def clock() -> int:
    """Five seconds after the last bar closed."""
    return (BASE_S + MINUTES * 60 + 5) * NS


class Recorder:
    """A publisher that keeps what it was given (or fails, when told to)."""

    def __init__(self, fail: bool = False) -> None:
        self.events: list[tuple[event_pb2.EventEnvelope, pb_message.Message | None]] = []
        self.fail = fail

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(
        self, envelope: event_pb2.EventEnvelope, *, payload: pb_message.Message | None = None
    ) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.events.append((envelope, payload))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def store(infra_settings: Settings) -> AsyncIterator[ClickHouseAnalyticsStore]:
    analytics = ClickHouseAnalyticsStore(infra_settings.clickhouse, database=DATABASE)
    yield analytics
    await analytics.close()


def prices(seed: int, driver: npt.NDArray[np.float64] | None = None, weight: float = 0.0) -> list[float]:
    rng = np.random.default_rng(seed)
    own = rng.normal(0, 0.002, MINUTES)
    steps = own if driver is None else weight * driver + (1 - weight) * own
    return [float(v) for v in 100 * np.exp(np.cumsum(steps))]


def ticks(symbol: str, closes: list[float]) -> list[TickRow]:
    """One trade per minute, 30 s into it: its price is the minute's close."""
    rows = []
    for minute, close in enumerate(closes):
        at = (BASE_S + minute * 60 + 30) * NS
        price = Decimal(f"{close:.6f}")
        one = Decimal(1)
        rows.append(
            TickRow(str(uuid.uuid4()), symbol, "test", minute + 1, at, at, price, one, price, one, price, one)
        )
    return rows


async def test_correlated_instruments_are_published_as_one_cluster(store: ClickHouseAnalyticsStore) -> None:
    driver = np.random.default_rng(1).normal(0, 0.002, MINUTES)
    series = {
        "CA-USD": prices(2, driver, 0.9),
        "CB-USD": prices(3, driver, 0.9),
        "CC-USD": prices(4, driver, 0.85),
        "CD-USD": prices(5),  # its own way
    }
    for symbol, closes in series.items():
        await store.write(ticks(symbol, closes))
    good, broken = Recorder(), Recorder(fail=True)
    settings = CorrelationSettings(window_s=MINUTES * 60, bar="1m", threshold=0.8, min_returns=30)
    task = CorrelationTask(store, [broken, good], settings, clock_ns=clock)
    with pytest.raises(ConnectionError):
        await task.run_once()
    # The failing publisher did not keep the event from the other one.
    [(envelope, payload)] = good.events
    assert isinstance(payload, analytics_events.CorrelationClustersComputed)
    protovalidate.validate(payload)
    assert envelope.tenant_id == "" and envelope.producer == "analytics"
    assert envelope.event_type == "trading.analytics.v1.CorrelationClustersComputed"
    assert [list(c.symbols) for c in payload.clusters] == [["CA-USD", "CB-USD", "CC-USD"]]
    cluster = payload.clusters[0]
    assert (
        cluster.cluster_id == "CA-USD" and 0.8 <= cluster.min_link_correlation <= cluster.max_correlation <= 1
    )
    assert {"CA-USD", "CB-USD", "CC-USD", "CD-USD"} <= set(payload.symbols)
    assert payload.bar_interval.seconds == 60 and payload.threshold == 0.8
    assert payload.window_end.seconds == BASE_S + MINUTES * 60
    # A stricter threshold breaks the cluster up.
    strict = CorrelationTask(store, [good], settings.model_copy(update={"threshold": 0.999}), clock_ns=clock)
    stricter = await strict.run_once()
    assert stricter is not None and not stricter.clusters and len(good.events) == 2
    # A window without bars measures nothing: nothing is published (risk keeps what it has).
    later = CorrelationTask(store, [good], settings, clock_ns=lambda: clock() + 86_400 * NS)
    assert await later.run_once() is None and len(good.events) == 2
