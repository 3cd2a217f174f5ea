"""The analytics service on real servers: events published to tansu with the
platform's KafkaPublisher, sunk by the service's consumer group into chdb
(the session's engine, a database of this module's own), read back over gRPC.

Expected figures are recomputed here from the events the test published
(bars) or worked out by hand in the comments (trade statistics, PnL).
Redelivery is proven by publishing every event again and replaying the topics
from the start with a fresh consumer group: no total moves. ClickHouse
unreachable or hanging: the RPCs answer UNAVAILABLE within their budget.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN
from decimal import Decimal as D
from typing import Any, TypeVar

import grpc
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from trading.analytics.v1 import analytics_service_pb2 as pb
from trading.analytics.v1 import analytics_service_pb2_grpc as pb_grpc
from trading.common.v1 import decimal_pb2, event_pb2, types_pb2
from trading.execution.v1 import events_pb2 as execution_events
from trading.execution.v1 import types_pb2 as execution_types
from trading.marketdata.v1 import events_pb2 as md_events
from trading.portfolio.v1 import events_pb2 as portfolio_events
from trading.portfolio.v1 import types_pb2 as portfolio_types

from runtime.config import Settings
from runtime.contracts import event_registry
from runtime.errors import error_details
from runtime.messaging import new_envelope, uuid7
from runtime.messaging.kafka import KafkaPublisher
from services.analytics import domain
from services.analytics.adapters.clickhouse import ClickHouseAnalyticsStore
from services.analytics.main import make_spec
from services.analytics.ports import FILLS
from services.analytics.settings import AnalyticsSettings
from tests.support.polling import eventually
from tests.support.security import service_channel, user_md
from tests.support.services import running_service

pytestmark = pytest.mark.integration

T = TypeVar("T")
TOPICS = (
    "trading.marketdata.ticks",
    "trading.execution.fills",
    "trading.portfolio.positions",
    "trading.portfolio.snapshots",
)
DATABASE = f"analytics_test_{uuid.uuid4().hex[:8]}"
# A fixed past hour, so bars and stats ranges are exact.
BASE_S = 1_709_287_200  # 2024-03-01 10:00:00 UTC
NS = domain.NS_PER_S
BUY, SELL = types_pb2.SIDE_BUY, types_pb2.SIDE_SELL


def fast_settings(group: str, **changes: Any) -> AnalyticsSettings:
    # A generous query budget (chdb shares the test machine's cores with
    # everything else); the budget tests set their own short one.
    fields: dict[str, Any] = {"query_timeout_s": 15.0, **changes}
    return AnalyticsSettings(consumer_group=group, batch_max_rows=200, batch_max_interval_s=0.2, **fields)


@asynccontextmanager
async def analytics(
    settings: Settings, service: AnalyticsSettings, database: str = DATABASE
) -> AsyncIterator[pb_grpc.AnalyticsServiceAsyncStub]:
    spec = make_spec(settings=service, database=database)
    async with running_service(spec, settings) as address, service_channel(address, "analytics") as channel:
        yield pb_grpc.AnalyticsServiceStub(channel)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def publisher(infra_settings: Settings) -> AsyncIterator[KafkaPublisher]:
    async with KafkaPublisher(infra_settings.kafka, event_registry(), client_id="test-analytics") as pub:
        yield pub


def md(tenant: str) -> tuple[tuple[str, str], ...]:
    return user_md("analytics", tenant, scopes=["analytics:read"])


def ts(ns: int) -> Timestamp:
    return domain.timestamp_of(ns)


def dec(value: D | str) -> decimal_pb2.Decimal:
    return decimal_pb2.Decimal(value=str(value))


def usd(value: D | str) -> decimal_pb2.Money:
    return decimal_pb2.Money(currency="USD", amount=dec(value))


def value(d: decimal_pb2.Decimal) -> D:
    return D(d.value) if d.value else D(0)


def amount(m: decimal_pb2.Money) -> D:
    return value(m.amount)


def envelope(payload: Message, tenant: str = "") -> tuple[event_pb2.EventEnvelope, Message]:
    producer = payload.DESCRIPTOR.full_name.split(".")[1]
    return new_envelope(
        payload, tenant_id=tenant, correlation_id=str(uuid.uuid4()), producer=producer
    ), payload


async def caught_up(settings: Settings, group: str) -> bool:
    """Whether `group` committed every analytics topic up to its end."""
    # A member that never joins: it only reads the group's committed offsets.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.servers, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        parts = [TopicPartition(t, p) for t in TOPICS for p in sorted(consumer.partitions_for_topic(t) or ())]
        ends = await consumer.end_offsets(parts)
        for tp in parts:
            if ends[tp] and ((await consumer.committed(tp)) or 0) < ends[tp]:
                return False
        return True
    finally:
        await consumer.stop()


# ------------------------------------------------------------------ the data


@dataclass(frozen=True)
class TickSpec:
    at_ns: int
    sequence: int
    last_price: D | None
    last_size: D | None


def make_ticks(symbol: str) -> list[TickSpec]:
    """~3.5 minutes of ticks: two thirds trades, some sharing a timestamp
    (their sequence orders them), the rest quote-only."""
    out: list[TickSpec] = []
    at = BASE_S * NS + 250_000_000
    for i in range(420):
        at += (0 if i % 5 == 4 else 500_000_000) + (i * 7919) % 1000
        traded = i % 3 != 0
        price = D(100) + D(i % 17) / 4 - D(i % 5) / 8 if traded else None
        size = D(i % 7 + 1) / 100 if traded else None
        out.append(TickSpec(at, i + 1, price, size))
    return out


def tick_event(symbol: str, spec: TickSpec) -> md_events.Tick:
    tick = md_events.Tick(
        symbol=symbol,
        bid_price=dec("99"),
        bid_size=dec("1"),
        ask_price=dec("101"),
        ask_size=dec("1"),
        sequence=spec.sequence,
        source="test",
        exchange_time=ts(spec.at_ns),
        receive_time=ts(spec.at_ns),
    )
    if spec.last_price is not None and spec.last_size is not None:
        tick.last_price.CopyFrom(dec(spec.last_price))
        tick.last_size.CopyFrom(dec(spec.last_size))
    return tick


def expected_bars(ticks: Sequence[TickSpec], step_s: int) -> list[tuple[int, D, D, D, D, D, D, int]]:
    """(start, open, high, low, close, volume, vwap, count) per bar, from the trades."""
    groups: dict[int, list[TickSpec]] = defaultdict(list)
    for t in ticks:
        if t.last_size:
            groups[t.at_ns // (step_s * NS) * step_s].append(t)
    out = []
    for start in sorted(groups):
        trades = sorted(groups[start], key=lambda t: (t.at_ns, t.sequence))
        prices = [t.last_price for t in trades if t.last_price is not None]
        volume = sum((t.last_size for t in trades if t.last_size), D(0))
        notional = sum((t.last_price * t.last_size for t in trades if t.last_price and t.last_size), D(0))
        vwap = (notional / volume).quantize(D("1e-12"), rounding=ROUND_HALF_EVEN)
        out.append((start, prices[0], max(prices), min(prices), prices[-1], volume, vwap, len(trades)))
    return out


def got_bars(reply: pb.GetBarsResponse) -> list[tuple[int, D, D, D, D, D, D, int]]:
    return [
        (b.start_time.seconds, value(b.open), value(b.high), value(b.low), value(b.close), value(b.volume),
         value(b.vwap), b.tick_count)
        for b in reply.bars
    ]  # fmt: skip


@dataclass(frozen=True)
class FillSpec:
    side: int
    qty: str
    price: str
    at_s: int  # seconds after BASE_S


# Buy 1 @ 100, buy 1 @ 102 (average 101), sell 1 @ 105 (closes 1: +4, a win),
# sell 2 @ 99 (closes 1: -2, a loss; opens a short of 1 @ 99), buy 1 @ 97
# (closes the short: +2, a win). Fee 0.1 each.
FILLS_PLAN = (
    FillSpec(BUY, "1", "100", 10),
    FillSpec(BUY, "1", "102", 20),
    FillSpec(SELL, "1", "105", 30),
    FillSpec(SELL, "2", "99", 40),
    FillSpec(BUY, "1", "97", 50),
)
# (quantity before, quantity after, realised PnL change) of each fill, as portfolio books them.
LEDGER = (("0", "1", "0"), ("1", "2", "0"), ("2", "1", "4"), ("1", "-1", "-2"), ("-1", "0", "2"))
# Snapshots at +15, +35, +45, +55 s: (gross exposure, equity).
SNAPSHOTS = ((15, "100", "1000"), (35, "105", "1004"), (45, "99", "1001"), (55, "0", "1003.5"))


def trading_events(tenant: str, symbol: str) -> list[tuple[event_pb2.EventEnvelope, Message]]:
    events = []
    for spec, (before, after, pnl) in zip(FILLS_PLAN, LEDGER, strict=True):
        order_id, execution_id = str(uuid7()), str(uuid7())
        fill = execution_types.Fill(
            execution_id=execution_id,
            order_id=order_id,
            client_order_id=f"c-{order_id[-8:]}",
            symbol=symbol,
            side=spec.side,  # type: ignore[arg-type]
            price=dec(spec.price),
            quantity=dec(spec.qty),
            fee=usd("0.1"),
            executed_at=ts((BASE_S + spec.at_s) * NS),
        )
        order = execution_types.Order(order_id=order_id, symbol=symbol, version=3)
        events.append(
            envelope(execution_events.OrderFillReported(order_id=order_id, fill=fill, order=order), tenant)
        )
        change = portfolio_events.PositionChanged(
            symbol=symbol,
            position=portfolio_types.Position(symbol=symbol, quantity=dec(after), version=len(events)),
            previous_quantity=dec(before),
            realized_pnl_change=usd(pnl),
            fee=usd("0.1"),
            execution_id=execution_id,
            order_id=order_id,
        )
        change.position.updated_at.CopyFrom(ts((BASE_S + spec.at_s) * NS + 1000))
        events.append(envelope(change, tenant))
    for version, (at_s, exposure, equity) in enumerate(SNAPSHOTS, start=1):
        portfolio = portfolio_types.Portfolio(
            cash=usd("1000"),
            equity=usd(equity),
            gross_exposure=usd(exposure),
            total_realized_pnl=usd("0"),
            total_unrealized_pnl=usd("0"),
            total_fees=usd(D("0.1") * version),
            as_of=ts((BASE_S + at_s) * NS),
            version=version,
        )
        events.append(envelope(portfolio_events.PortfolioSnapshot(portfolio=portfolio), tenant))
    return events


def new_symbol() -> str:
    return f"A{uuid.uuid4().hex[:8].upper()}"


def span(start_ns: int, end_ns: int | None = None) -> types_pb2.TimeRange:
    out = types_pb2.TimeRange(start=ts(start_ns))
    if end_ns is not None:
        out.end.CopyFrom(ts(end_ns))
    return out


def hour_range() -> types_pb2.TimeRange:
    return span(BASE_S * NS, (BASE_S + 3600) * NS)


async def totals(stub: pb_grpc.AnalyticsServiceAsyncStub, symbol: str, tenant: str) -> tuple[Any, ...]:
    """Every figure the RPCs give for the test's data, for before/after comparisons."""
    bars = {}
    for interval in (pb.BAR_INTERVAL_ONE_SECOND, pb.BAR_INTERVAL_ONE_MINUTE, pb.BAR_INTERVAL_ONE_HOUR):
        reply = await stub.GetBars(
            pb.GetBarsRequest(symbol=symbol, interval=interval, time_range=hour_range(), limit=10_000),
            metadata=md(tenant),
            timeout=10,
        )
        bars[interval] = got_bars(reply)
    stats = await stub.GetTradeStats(
        pb.GetTradeStatsRequest(time_range=hour_range()), metadata=md(tenant), timeout=10
    )
    series = await stub.GetPnlSeries(
        pb.GetPnlSeriesRequest(time_range=hour_range(), step=Duration(seconds=60)),
        metadata=md(tenant),
        timeout=10,
    )
    return (
        bars,
        stats.stats.SerializeToString(deterministic=True),
        series.SerializeToString(deterministic=True),
    )


# ------------------------------------------------------------------ tests


async def test_sinks_events_and_answers_from_them_and_redelivery_changes_nothing(
    infra_settings: Settings, publisher: KafkaPublisher
) -> None:
    symbol, tenant = new_symbol(), f"t-{uuid.uuid4().hex[:10]}"
    ticks = make_ticks(symbol)
    events = [envelope(tick_event(symbol, t)) for t in ticks] + trading_events(tenant, symbol)
    await publisher.publish_many(events)
    group = f"analytics.test-{uuid.uuid4().hex[:8]}"
    async with analytics(infra_settings, fast_settings(group)) as stub:
        want_1s = expected_bars(ticks, 1)

        async def all_bars() -> pb.GetBarsResponse | None:
            reply = await stub.GetBars(
                pb.GetBarsRequest(
                    symbol=symbol, interval=pb.BAR_INTERVAL_ONE_SECOND, time_range=hour_range(), limit=10_000
                ),
                metadata=md(tenant),
                timeout=10,
            )
            return reply if sum(b.tick_count for b in reply.bars) == sum(b[7] for b in want_1s) else None

        reply = await eventually(all_bars, what="every tick in the 1 s bars")
        # Offsets are committed after the batch is written: caught up = all stored.
        await eventually(lambda: caught_up(infra_settings, group), what="the group at the end of the topics")
        assert got_bars(reply) == want_1s and not reply.truncated
        for interval, step in (
            (pb.BAR_INTERVAL_ONE_MINUTE, 60),
            (pb.BAR_INTERVAL_FIVE_MINUTES, 300),
            (pb.BAR_INTERVAL_ONE_HOUR, 3600),
            (pb.BAR_INTERVAL_ONE_DAY, 86_400),
        ):
            got = await stub.GetBars(
                pb.GetBarsRequest(symbol=symbol, interval=interval, time_range=hour_range()),
                metadata=md(tenant),
                timeout=10,
            )
            if step == 86_400:  # the day bar starts before the hour: not within [start, end)
                assert list(got.bars) == []
                continue
            assert got_bars(got) == expected_bars(ticks, step), interval
            assert all(b.end_time.seconds - b.start_time.seconds == step for b in got.bars)
        # limit keeps the most recent bars and says so
        limited = await stub.GetBars(
            pb.GetBarsRequest(
                symbol=symbol, interval=pb.BAR_INTERVAL_ONE_SECOND, time_range=hour_range(), limit=5
            ),
            metadata=md(tenant),
            timeout=10,
        )
        assert got_bars(limited) == want_1s[-5:] and limited.truncated
        # a range starting mid-minute: only bars that start within it
        mid = await stub.GetBars(
            pb.GetBarsRequest(
                symbol=symbol,
                interval=pb.BAR_INTERVAL_ONE_MINUTE,
                time_range=span((BASE_S + 30) * NS, (BASE_S + 150) * NS),
            ),
            metadata=md(tenant),
            timeout=10,
        )
        assert [b.start_time.seconds for b in mid.bars] == [BASE_S + 60, BASE_S + 120]

        async def stats_ready() -> pb.GetTradeStatsResponse | None:
            reply = await stub.GetTradeStats(
                pb.GetTradeStatsRequest(time_range=hour_range()), metadata=md(tenant), timeout=10
            )
            s = reply.stats
            return reply if s.fill_count == 5 and s.trade_count == 3 and s.max_exposure.amount.value else None

        stats = (await eventually(stats_ready, what="fills, position changes and snapshots stored")).stats
        assert (stats.winning_trades, stats.losing_trades) == (2, 1)
        assert value(stats.win_rate) == D("0.666666666667")  # 2/3, half-even to 12 digits
        assert value(stats.profit_factor) == D(3)  # (4 + 2) / |-2|
        assert amount(stats.turnover) == D(602)  # 100 + 102 + 105 + 2*99 + 97
        assert amount(stats.gross_pnl) == D(4)  # 4 - 2 + 2
        assert amount(stats.fees) == D("0.5")
        assert amount(stats.net_pnl) == D("3.5")
        # Exposure 100 from +15 s, 105 from +35, 99 from +45, 0 from +55 to the
        # end (+3600): (100*20 + 105*10 + 99*10 + 0*3545) / 3585.
        assert amount(stats.average_exposure) == (D(4040) / D(3585)).quantize(D("1e-12"), ROUND_HALF_EVEN)
        assert amount(stats.max_exposure) == D(105)
        # Equity 1000 -> 1004 (peak) -> 1001 -> 1003.5: drawdown 3, 3/1004 of the peak.
        assert amount(stats.max_drawdown) == D(3)
        assert value(stats.max_drawdown_ratio) == (D(3) / D(1004)).quantize(D("1e-12"), ROUND_HALF_EVEN)
        # one symbol only: the same fills; another tenant sees nothing
        other = await stub.GetTradeStats(
            pb.GetTradeStatsRequest(time_range=hour_range()), metadata=md("t-someone-else"), timeout=10
        )
        assert other.stats.fill_count == 0 and amount(other.stats.turnover) == 0
        # a sub-range: the fills at +30 and +40 s only
        part = await stub.GetTradeStats(
            pb.GetTradeStatsRequest(time_range=span((BASE_S + 30) * NS, (BASE_S + 45) * NS), symbol=symbol),
            metadata=md(tenant),
            timeout=10,
        )
        assert (part.stats.fill_count, part.stats.trade_count, amount(part.stats.gross_pnl)) == (2, 2, D(2))

        series = await stub.GetPnlSeries(
            pb.GetPnlSeriesRequest(
                time_range=span(BASE_S * NS, (BASE_S + 60) * NS),
                step=Duration(seconds=20),
            ),
            metadata=md(tenant),
            timeout=10,
        )
        # Ends of the steps: +20 (the +15 snapshot), +40 (+35), +60 (+55).
        assert [(p.time.seconds - BASE_S, amount(p.equity)) for p in series.points] == [
            (20, D(1000)), (40, D(1004)), (60, D("1003.5")),
        ]  # fmt: skip
        assert [amount(p.fees) for p in series.points] == [D("0.1"), D("0.2"), D("0.4")]
        before = await totals(stub, symbol, tenant)

    # Redelivery: every event published again (same event ids), and the topics
    # replayed from the start by a new consumer group into the same tables.
    await publisher.publish_many(events)
    replay = f"analytics.replay-{uuid.uuid4().hex[:8]}"
    async with analytics(infra_settings, fast_settings(replay)) as stub:
        await eventually(lambda: caught_up(infra_settings, replay), what="the replay group at the end")
        assert await totals(stub, symbol, tenant) == before

        # A duplicate slipping past the id check (written straight into the
        # table, no dedup token): FINAL still counts it once.
        store = ClickHouseAnalyticsStore(infra_settings.clickhouse, database=DATABASE)
        try:
            ch = await store.client()
            rows = await ch.query(f"SELECT * FROM {FILLS} WHERE tenant_id = {{t:String}}", {"t": tenant})
            assert len(rows.rows) == 5, "a fill was stored twice"
            await ch.insert(FILLS, rows.rows, rows.columns)
            raw = await ch.query(f"SELECT count() FROM {FILLS} WHERE tenant_id = {{t:String}}", {"t": tenant})
            assert raw.rows[0][0] >= 5
        finally:
            await store.close()
        assert await totals(stub, symbol, tenant) == before


async def test_clickhouse_unreachable_fails_fast_with_unavailable(infra_settings: Settings) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings = infra_settings.model_copy(
        update={
            "clickhouse": infra_settings.clickhouse.model_copy(
                update={"url": f"http://127.0.0.1:{closed_port}"}
            )
        }
    )
    group = f"analytics.down-{uuid.uuid4().hex[:8]}"
    async with analytics(settings, fast_settings(group, breaker_failure_threshold=3)) as stub:
        for _ in range(4):
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetBars(
                    pb.GetBarsRequest(
                        symbol="BTC-USD", interval=pb.BAR_INTERVAL_ONE_MINUTE, time_range=hour_range()
                    ),
                    metadata=md("t-x"),
                    timeout=5,
                )
            assert time.monotonic() - started < 1.0
            details = error_details(caught.value)
            assert details.code == grpc.StatusCode.UNAVAILABLE
            assert (
                details.error_info is not None and details.error_info.reason == "ANALYTICS_STORE_UNAVAILABLE"
            )
            assert details.retry_delay_s is not None
        # after three failures the breaker answers without trying
        assert "circuit open" in details.message


@pytest.fixture
def hanging_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a stuck server)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


async def test_slow_clickhouse_fails_within_the_budget(infra_settings: Settings, hanging_server: int) -> None:
    settings = infra_settings.model_copy(
        update={
            "clickhouse": infra_settings.clickhouse.model_copy(
                update={"url": f"http://127.0.0.1:{hanging_server}"}
            )
        }
    )
    group = f"analytics.slow-{uuid.uuid4().hex[:8]}"
    async with analytics(settings, fast_settings(group, query_timeout_s=0.5)) as stub:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetTradeStats(
                pb.GetTradeStatsRequest(time_range=hour_range()), metadata=md("t-x"), timeout=5
            )
        assert time.monotonic() - started < 1.5
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        # the call's own deadline shortens the budget further
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetPnlSeries(
                pb.GetPnlSeriesRequest(time_range=hour_range(), step=Duration(seconds=60)),
                metadata=md("t-x"),
                timeout=0.3,
            )
        assert time.monotonic() - started < 1.0
        assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.GetBarsRequest(symbol="BTC-USD", interval=pb.BAR_INTERVAL_UNSPECIFIED), "interval"),
        (pb.GetBarsRequest(symbol="BTC-USD", interval=99), "interval"),  # type: ignore[arg-type]
        (pb.GetBarsRequest(symbol="btc usd", interval=pb.BAR_INTERVAL_ONE_MINUTE), "symbol"),
        (pb.GetBarsRequest(symbol="BTC-USD", interval=pb.BAR_INTERVAL_ONE_MINUTE, limit=10_001), "limit"),
    ],
)
async def test_bad_bars_requests_are_invalid_argument(
    infra_settings: Settings, request_: pb.GetBarsRequest, field: str
) -> None:
    request = pb.GetBarsRequest()
    request.CopyFrom(request_)
    request.time_range.start.CopyFrom(ts(BASE_S * NS))
    request.time_range.end.CopyFrom(ts((BASE_S + 60) * NS))
    async with analytics(infra_settings, fast_settings(f"analytics.bad-{uuid.uuid4().hex[:8]}")) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetBars(request, metadata=md("t-x"), timeout=5)
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert any(f.startswith(field) for f in details.violated_fields), details.violated_fields


async def test_bad_ranges_are_invalid_argument(infra_settings: Settings) -> None:
    inverted = span((BASE_S + 60) * NS, BASE_S * NS)
    open_ended = span(BASE_S * NS)
    async with analytics(infra_settings, fast_settings(f"analytics.bad-{uuid.uuid4().hex[:8]}")) as stub:
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: stub.GetBars(
                pb.GetBarsRequest(symbol="BTC-USD", interval=pb.BAR_INTERVAL_ONE_MINUTE, time_range=inverted),
                metadata=md("t-x"),
                timeout=5,
            ),
            lambda: stub.GetBars(
                pb.GetBarsRequest(
                    symbol="BTC-USD", interval=pb.BAR_INTERVAL_ONE_MINUTE, time_range=open_ended
                ),
                metadata=md("t-x"),
                timeout=5,
            ),
            lambda: stub.GetTradeStats(
                pb.GetTradeStatsRequest(time_range=inverted), metadata=md("t-x"), timeout=5
            ),
            lambda: stub.GetTradeStats(pb.GetTradeStatsRequest(), metadata=md("t-x"), timeout=5),
            lambda: stub.GetPnlSeries(
                pb.GetPnlSeriesRequest(time_range=inverted, step=Duration(seconds=60)),
                metadata=md("t-x"),
                timeout=5,
            ),
            # 86400 one-second steps > 10000 points
            lambda: stub.GetPnlSeries(
                pb.GetPnlSeriesRequest(
                    time_range=span(BASE_S * NS, (BASE_S + 86_400) * NS),
                    step=Duration(seconds=1),
                ),
                metadata=md("t-x"),
                timeout=5,
            ),
            lambda: stub.GetPnlSeries(
                pb.GetPnlSeriesRequest(time_range=hour_range(), step=Duration(nanos=1000)),
                metadata=md("t-x"),
                timeout=5,
            ),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call()
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
            assert error_details(caught.value).field_violations
