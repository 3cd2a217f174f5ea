"""Analytics on a real platform run: every service its own process (as
`./dev run` runs them, tools.supervisor), isolated (its own database, Redis,
NATS, tansu and chdb). The synthetic feed quotes two symbols, the AI
strategy of a tenant created in identity trades them (decision places its
orders under identity's delegation), then:

- GetBars (1 s and 1 min) equals OHLCV/VWAP/count recomputed from the raw
  ticks read back from Kafka `trading.marketdata.ticks`, over every whole
  bar before a cut-off all of whose ticks the test read;
- GetTradeStats equals the statistics recomputed from the tenant's fills read
  back from `trading.execution.fills` (count, turnover, fees) and from
  replaying them in the order portfolio booked them (trades, wins, losses,
  gross and net PnL, win rate, profit factor);
- GetStrategyPerformance and GetModelPerformance see decision's real signals
  and the strategy's fills (its own book realises what portfolio did).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf import duration_pb2
from trading.analytics.v1 import analytics_service_pb2 as apb
from trading.analytics.v1 import analytics_service_pb2_grpc as apb_grpc
from trading.common.v1 import decimal_pb2
from trading.common.v1 import types_pb2 as common_types
from trading.decision.v1 import decision_service_pb2 as dpb
from trading.decision.v1 import decision_service_pb2_grpc as dpb_grpc
from trading.execution.v1 import execution_service_pb2_grpc as epb_grpc
from trading.marketdata.v1 import events_pb2 as md_events
from trading.portfolio.v1 import portfolio_service_pb2_grpc as ppb_grpc

from runtime.config import Settings
from runtime.contracts import event_registry
from runtime.decimals import from_proto
from runtime.messaging import decode_envelope, unpack
from tests.integration.test_hot_path_e2e import (
    DIVIDE,
    EXACT,
    FILLS_TOPIC,
    POSITIONS_TOPIC,
    Book,
    Hot,
    fee_of,
    list_orders,
    new_tenant,
    operator_env,
    read_topics,
    settle,
    trading_models,
)
from tests.support.polling import eventually
from tests.support.security import as_user, secure_channel
from tools.supervisor import isolated_settings, platform_running

pytestmark = pytest.mark.integration

SERVICES = ("identity", "marketdata", "features", "risk", "execution", "portfolio", "decision", "analytics")
SYMBOLS = ("BTC-USD", "ETH-USD")
TICKS_TOPIC = "trading.marketdata.ticks"
WANT_FILLED = 4
QUANTUM = Decimal("1e-12")
NS = 1_000_000_000


SCOPES = ("strategies:read", "strategies:write", "orders:read", "portfolio:read", "analytics:read")


def _md(hot: Hot, service: str, tenant: str) -> tuple[tuple[str, str], ...]:
    return as_user(hot.settings, service, tenant, subject="user-analytics", scopes=SCOPES)


def wire(value: Decimal) -> Decimal:
    return value.quantize(QUANTUM, rounding=ROUND_HALF_EVEN)


def dec(d: decimal_pb2.Decimal) -> Decimal:
    return from_proto(d)


@pytest.fixture
async def platform(
    infra_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Hot, apb_grpc.AnalyticsServiceAsyncStub]]:
    settings = isolated_settings(infra_settings, tmp_path)
    settings.telemetry.log_level = "WARNING"
    settings.marketdata.feed = "synthetic"
    settings.marketdata.feed_symbols = list(SYMBOLS)
    settings.marketdata.feed_rate = 100.0
    settings.marketdata.feed_seed = 20240601
    await trading_models(settings, SYMBOLS, monkeypatch)
    monkeypatch.setenv("TRADING_ANALYTICS__BATCH_MAX_INTERVAL_S", "0.25")
    monkeypatch.setenv("TRADING_ANALYTICS__QUERY_TIMEOUT_S", "15")  # chdb shares a loaded machine
    operator_env(monkeypatch)
    async with (
        platform_running(settings, SERVICES, ready_timeout=90.0),
        secure_channel(settings, settings.address_of("decision"), "decision") as dch,
        secure_channel(settings, settings.address_of("execution"), "execution") as ech,
        secure_channel(settings, settings.address_of("portfolio"), "portfolio") as pch,
        secure_channel(settings, settings.address_of("analytics"), "analytics") as ach,
    ):
        hot = Hot(
            settings,
            dpb_grpc.DecisionServiceStub(dch),
            epb_grpc.ExecutionServiceStub(ech),
            ppb_grpc.PortfolioServiceStub(pch),
        )
        yield hot, apb_grpc.AnalyticsServiceStub(ach)


async def read_ticks(settings: Settings) -> list[md_events.Tick]:
    """Every tick on the (isolated) platform's topic, up to its end offsets now."""
    registry = event_registry()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.servers, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        parts = [
            TopicPartition(TICKS_TOPIC, p) for p in sorted(consumer.partitions_for_topic(TICKS_TOPIC) or ())
        ]
        assert parts
        ends = await consumer.end_offsets(parts)
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ticks: list[md_events.Tick] = []
        done: set[TopicPartition] = {tp for tp in parts if ends[tp] == 0}
        while len(done) < len(parts):
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, records in batch.items():
                for r in records:
                    if r.offset < ends[tp] and r.value is not None:
                        payload = unpack(decode_envelope(r.value), registry)
                        assert isinstance(payload, md_events.Tick)
                        ticks.append(payload)
                if records and records[-1].offset >= ends[tp] - 1:
                    done.add(tp)
        return ticks
    finally:
        await consumer.stop()


Bar = tuple[int, Decimal, Decimal, Decimal, Decimal, Decimal, Decimal, int]


def recompute_bars(
    ticks: Sequence[md_events.Tick], symbol: str, step_s: int, lo_s: int, hi_s: int
) -> list[Bar]:
    groups: dict[int, list[md_events.Tick]] = defaultdict(list)
    for t in ticks:
        if t.symbol == symbol and dec(t.last_size) > 0:
            start = t.exchange_time.seconds // step_s * step_s
            if lo_s <= start < hi_s:
                groups[start].append(t)
    out: list[Bar] = []
    for start in sorted(groups):
        trades = sorted(groups[start], key=lambda t: (t.exchange_time.ToNanoseconds(), t.sequence))
        prices = [dec(t.last_price) for t in trades]
        volume = Decimal(0)
        notional = Decimal(0)
        for t in trades:
            volume = EXACT.add(volume, dec(t.last_size))
            notional = EXACT.add(notional, EXACT.multiply(dec(t.last_price), dec(t.last_size)))
        vwap = wire(DIVIDE.divide(notional, volume))
        out.append((start, prices[0], max(prices), min(prices), prices[-1], volume, vwap, len(trades)))
    return out


def bars_of(reply: apb.GetBarsResponse) -> list[Bar]:
    return [
        (b.start_time.seconds, dec(b.open), dec(b.high), dec(b.low), dec(b.close), dec(b.volume), dec(b.vwap),
         b.tick_count)
        for b in reply.bars
    ]  # fmt: skip


async def test_bars_and_trade_stats_match_the_raw_ticks_and_fills(
    platform: tuple[Hot, apb_grpc.AnalyticsServiceAsyncStub],
) -> None:
    hot, analytics = platform
    tenant = await new_tenant(hot.settings, "t-an")
    began_ns = time.time_ns()
    spec = dpb.StrategySpec(
        name="analytics e2e",
        symbols=list(SYMBOLS),
        enabled=True,
        max_position=decimal_pb2.Decimal(value="0.03"),
        sizing=dpb.OrderSizing(fixed_quantity=decimal_pb2.Decimal(value="0.01")),
        model_ids=["gbt-trend", "logreg-trend"],
        signal_threshold=0.01,
        cooldown=duration_pb2.Duration(nanos=250_000_000),
    )
    await hot.decision.SetStrategy(
        dpb.SetStrategyRequest(strategy_id="an-e2e", spec=spec),
        metadata=_md(hot, "decision", tenant),
        timeout=10,
    )

    async def enough_filled() -> bool:
        orders = await list_orders(hot, tenant)
        return sum(1 for o in orders if dec(o.filled_quantity) > 0) >= WANT_FILLED

    await eventually(enough_filled, 40.0, f"{WANT_FILLED} filled orders")
    await hot.decision.SetStrategyEnabled(
        dpb.SetStrategyEnabledRequest(strategy_id="an-e2e", enabled=False),
        metadata=_md(hot, "decision", tenant),
        timeout=10,
    )
    settled = await settle(hot, tenant)

    # ---- bars: every whole bar before the cut, whose ticks are all in Kafka by now
    cut_s = time.time_ns() // NS - 1
    ticks = await read_ticks(hot.settings)
    assert ticks, "no ticks on Kafka"
    first_s = min(t.exchange_time.seconds for t in ticks)
    for symbol in SYMBOLS:
        for interval, step in ((apb.BAR_INTERVAL_ONE_SECOND, 1), (apb.BAR_INTERVAL_ONE_MINUTE, 60)):
            lo = first_s // step * step
            hi = cut_s // step * step
            if hi <= lo:
                # No whole bar of this size before the cut (a run shorter than a
                # minute that crossed no minute boundary): the only bar is still
                # filling with ticks after the cut, so there is nothing exact to compare.
                continue
            request = apb.GetBarsRequest(symbol=symbol, interval=interval, limit=10_000)
            request.time_range.start.FromSeconds(lo)
            request.time_range.end.FromSeconds(hi)

            last: list[Bar] = []  # the bars that differed at the last look, for the failure message

            async def same(
                request: apb.GetBarsRequest = request,
                symbol: str = symbol,
                step: int = step,
                hi: int = hi,
                last: list[Bar] = last,
            ) -> bool:
                # Both sides re-read: a tick stamped before the cut may reach
                # Kafka (marketdata publishes there in background batches) and
                # analytics a little later on a loaded machine.
                nonlocal ticks
                ticks = await read_ticks(hot.settings)
                want = recompute_bars(ticks, symbol, step, request.time_range.start.seconds, hi)
                reply = await analytics.GetBars(request, metadata=_md(hot, "analytics", tenant), timeout=10)
                got = bars_of(reply)
                last[:] = [b for b in got if b not in want][:3] + [b for b in want if b not in got][:3]
                return got == want

            what = f"{symbol} {step}s bars equal to the recomputation from Kafka ticks"
            try:
                await eventually(same, 30.0, what)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; differing bars (got..., want...): {last}") from None
        assert recompute_bars(ticks, symbol, 1, first_s, cut_s), f"no trades of {symbol}"

    # ---- trade stats: from the tenant's fills and the order portfolio booked them in
    fills = [r.payload.fill for r in settled.records if r.topic == FILLS_TOPIC]
    assert len(fills) >= WANT_FILLED
    by_execution = {f.execution_id: f for f in fills}
    changes = await read_topics(hot.settings, tenant, (POSITIONS_TOPIC,), len(fills))
    books: dict[str, Book] = defaultdict(Book)
    trades = wins = losses = 0
    gross = profit = loss = Decimal(0)
    for symbol in {f.symbol for f in fills}:
        steps = sorted(
            (c.payload for c in changes if c.payload.symbol == symbol), key=lambda c: c.position.version
        )
        for change in steps:
            fill = by_execution[change.execution_id]
            before = books[symbol].quantity
            realized = wire(books[symbol].apply(fill))
            signed = dec(fill.quantity) if fill.side == common_types.SIDE_BUY else -dec(fill.quantity)
            if before != 0 and (signed > 0) != (before > 0):
                trades += 1
                gross += realized
                wins += realized > 0
                losses += realized < 0
                profit += realized if realized > 0 else 0
                loss += realized if realized < 0 else 0
    turnover = sum((EXACT.multiply(dec(f.price), dec(f.quantity)) for f in fills), Decimal(0))
    fees = sum((fee_of(f) for f in fills), Decimal(0))
    stats_request = apb.GetTradeStatsRequest()
    stats_request.time_range.start.FromNanoseconds(began_ns - 60 * NS)
    stats_request.time_range.end.FromNanoseconds(time.time_ns() + 60 * NS)

    async def stats_ready() -> apb.TradeStats | None:
        reply = await analytics.GetTradeStats(
            stats_request, metadata=_md(hot, "analytics", tenant), timeout=10
        )
        s = reply.stats
        return s if s.fill_count == len(fills) and s.trade_count == trades else None

    stats = await eventually(stats_ready, 30.0, "every fill and position change in analytics")
    assert (stats.winning_trades, stats.losing_trades) == (wins, losses)
    assert dec(stats.turnover.amount) == wire(turnover)
    assert dec(stats.fees.amount) == wire(fees)
    assert dec(stats.gross_pnl.amount) == gross
    assert dec(stats.net_pnl.amount) == wire(gross - fees)
    if trades:
        assert dec(stats.win_rate) == wire(Decimal(wins) / Decimal(trades))
    else:
        assert not stats.HasField("win_rate")
    if loss:
        assert dec(stats.profit_factor) == wire(DIVIDE.divide(profit, abs(loss)))
    else:
        assert not stats.HasField("profit_factor")
    assert dec(stats.max_exposure.amount) >= 0 and dec(stats.max_drawdown.amount) >= 0

    # ---- performance: decision's real signals stored and scored; the strategy's
    # own book (one strategy, flat at the start) realises what portfolio did
    perf_request = apb.GetStrategyPerformanceRequest(time_range=stats_request.time_range)

    async def perf_ready() -> apb.StrategyPerformance | None:
        reply = await analytics.GetStrategyPerformance(
            perf_request, metadata=_md(hot, "analytics", tenant), timeout=10
        )
        found = {s.strategy_id: s for s in reply.strategies}.get("an-e2e")
        ready = found is not None and found.pnl.fill_count == len(fills) and found.quality.prediction_count
        return found if ready else None

    perf = await eventually(perf_ready, 30.0, "the strategy's signals and fills in analytics")
    assert dec(perf.pnl.turnover.amount) == wire(turnover)
    assert dec(perf.pnl.fees.amount) == wire(fees)
    assert dec(perf.pnl.realized_pnl.amount) == gross
    models = await analytics.GetModelPerformance(
        apb.GetModelPerformanceRequest(time_range=stats_request.time_range),
        metadata=_md(hot, "analytics", tenant),
        timeout=10,
    )
    assert {m.model_id for m in models.models if m.quality.prediction_count} == {"gbt-trend", "logreg-trend"}
    print(
        f"\nanalytics e2e: {len(ticks)} ticks, {len(fills)} fills, "
        f"{trades} trades ({wins} won, {losses} lost), "
        f"turnover {wire(turnover)}, gross {gross}, fees {wire(fees)}"
    )
