"""The contract of analytics' store (services/analytics/ports.py), run
against every adapter: the in-memory one
(tests/unit/services/analytics/test_analytics_ports_memory.py) and the
ClickHouse one on the session's chdb
(tests/integration/storage/test_analytics_ports_clickhouse.py).

A concrete class provides the fixture ``store`` (an :class:`AnalyticsStore`
with the default AnalyticsSettings). Tenants, symbols and model ids are
unique per test, so the real adapter can share one database; expected
figures are worked out in the comments.
"""

from __future__ import annotations

import uuid
from decimal import Decimal as D

from domain.positions import Side
from services.analytics import domain
from services.analytics.domain import (
    NS_PER_S,
    FillRow,
    PnlSample,
    PositionChangeRow,
    Row,
    SignalRow,
    SnapshotRow,
    TickRow,
)
from services.analytics.domain.performance import Call, Cell, Outcome, StrategyFill
from services.analytics.ports import (
    DATETIME_MAX_S,
    FILLS,
    POSITION_CHANGES,
    SIGNALS,
    SNAPSHOTS,
    TICKS,
    AnalyticsStore,
    TradeAggregates,
)

BASE_S = 1_793_613_600  # 2026-11-02 10:00:00 UTC
BASE = BASE_S * NS_PER_S
MS = NS_PER_S // 1000
BUDGET = 10.0
OK, TIMEOUT = 1, 3  # trading.decision.v1.ModelOutcome
ONE_MINUTE = domain.plan_of(2)  # BAR_INTERVAL_ONE_MINUTE
FIVE_MINUTES = domain.plan_of(3)


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def new_symbol() -> str:
    return f"A{uuid.uuid4().hex[:8].upper()}-USD"


def _id() -> str:
    return uuid.uuid4().hex


def trade(symbol: str, at_ns: int, price: str, size: str, sequence: int = 0) -> TickRow:
    """A tick carrying a trade (no quote)."""
    return TickRow(_id(), symbol, "test", sequence, at_ns, at_ns, D(0), D(0), D(0), D(0), D(price), D(size))


def quote(symbol: str, at_ns: int, bid: str, ask: str, sequence: int = 0) -> TickRow:
    """A quote-only tick (no trade: no bar input)."""
    return TickRow(_id(), symbol, "test", sequence, at_ns, at_ns, D(bid), D(1), D(ask), D(1), D(0), D(0))


def fill(
    tenant: str,
    symbol: str,
    side: str,
    qty: str,
    price: str,
    at_ns: int,
    *,
    fee: str = "0",
    strategy: str = "",
) -> FillRow:
    return FillRow(
        tenant, _id(), _id(), _id(), symbol, side, D(price), D(qty), D(fee), "USD", at_ns, strategy
    )


def change(tenant: str, f: FillRow, previous: str, quantity: str, pnl: str) -> PositionChangeRow:
    """The position change of fill `f`."""
    return PositionChangeRow(
        tenant,
        _id(),
        f.execution_id,
        f.order_id,
        f.symbol,
        D(previous),
        D(quantity),
        D(pnl),
        f.fee,
        1,
        f.executed_at_ns,
    )


def snapshot(
    tenant: str,
    at_ns: int,
    equity: str,
    *,
    version: int = 1,
    exposure: str = "0",
    positions: dict[str, str] | None = None,
) -> SnapshotRow:
    held = positions or {}
    return SnapshotRow(
        tenant, _id(), at_ns, version, "USD", D(0), D(equity), D(0), D(exposure), D(1), D(2), D(3),
        tuple(held), tuple(D(v) for v in held.values()), tuple(D(0) for _ in held), tuple(D(0) for _ in held),
    )  # fmt: skip


def signal(
    tenant: str,
    symbol: str,
    at_ns: int,
    *,
    strategy: str = "momentum",
    direction: str = "BUY",
    strength: float = 0.5,
    models: tuple[tuple[str, int, float], ...] = (),
) -> SignalRow:
    """A signal at feature time `at_ns`; `models`: (model id, outcome, score), all version v1."""
    return SignalRow(
        tenant, _id(), _id(), strategy, symbol, direction, strength, 1.0, False, at_ns, 0, at_ns,
        tuple(m for m, _, _ in models), tuple("v1" for _ in models), tuple(o for _, o, _ in models),
        tuple(s for _, _, s in models), tuple(1.0 for _ in models),
    )  # fmt: skip


def sample(s: SnapshotRow) -> PnlSample:
    return PnlSample(s.as_of_ns, s.currency, s.equity, s.realized_pnl, s.unrealized_pnl, s.fees)


class AnalyticsStoreSuite:
    """Rows stored once by id; bars, marks, PnL, trade figures and
    performance cells as the port defines them; tenants apart."""

    async def test_a_batch_is_stored_once_by_id_however_often_it_comes(self, store: AnalyticsStore) -> None:
        tenant, symbol = new_tenant(), new_symbol()
        tick = trade(symbol, BASE, "100", "1")
        f = fill(tenant, symbol, "BUY", "1", "100", BASE)
        batch: list[Row] = [
            tick,
            tick,
            f,
            change(tenant, f, "0", "1", "0"),
            snapshot(tenant, BASE, "1000"),
            signal(tenant, symbol, BASE),
        ]
        assert await store.write(batch) == {TICKS: 1, FILLS: 1, POSITION_CHANGES: 1, SNAPSHOTS: 1, SIGNALS: 1}
        assert await store.write(batch) == dict.fromkeys(
            (TICKS, FILLS, POSITION_CHANGES, SNAPSHOTS, SIGNALS), 0
        )
        # A fill redelivered under another event id is still the same execution: kept once, as first stored.
        again = FillRow(
            tenant, _id(), f.execution_id, f.order_id, symbol, "SELL", D(1), D(9), D(0), "USD", BASE, ""
        )
        assert (await store.write([again]))[FILLS] == 0
        sums = await store.trade_aggregates(tenant, "", BASE, BASE + NS_PER_S, BUDGET)
        assert (sums.fill_count, sums.turnover) == (1, D(100))
        assert await store.marks([symbol], BASE + 1, BUDGET) == {symbol: D(100)}

    async def test_bars_aggregate_the_trades_of_each_step(self, store: AnalyticsStore) -> None:
        symbol = new_symbol()
        m = 60 * NS_PER_S
        await store.write(
            [
                # Minute 0: 100 then 103 then 99 (same time, higher sequence closes), volume 1 + 2 + 1.
                trade(symbol, BASE + 1 * NS_PER_S, "100", "1"),
                trade(symbol, BASE + 30 * NS_PER_S, "103", "2", sequence=1),
                trade(symbol, BASE + 30 * NS_PER_S, "99", "1", sequence=2),
                quote(symbol, BASE + 40 * NS_PER_S, "50", "51"),  # no trade: not in any bar
                # Minute 1: one trade; minute 7: one trade.
                trade(symbol, BASE + m + 5 * NS_PER_S, "101.5", "0.5"),
                trade(symbol, BASE + 7 * m, "110", "3"),
                trade(new_symbol(), BASE + 2 * NS_PER_S, "1", "1"),  # another symbol
            ]
        )
        rows, truncated = await store.bars(symbol, ONE_MINUTE, BASE_S, BASE_S + 600, 10, BUDGET)
        assert not truncated
        assert [(r.start_s, r.open, r.high, r.low, r.close, r.volume, r.tick_count) for r in rows] == [
            (BASE_S, D(100), D(103), D(99), D(99), D(4), 3),
            (BASE_S + 60, D("101.5"), D("101.5"), D("101.5"), D("101.5"), D("0.5"), 1),
            (BASE_S + 420, D(110), D(110), D(110), D(110), D(3), 1),
        ]
        assert rows[0].notional == D(100 + 206 + 99)
        # Five-minute bars: minutes 0-4 and 5-9.
        five, _ = await store.bars(symbol, FIVE_MINUTES, BASE_S, BASE_S + 600, 10, BUDGET)
        assert [(r.start_s, r.open, r.close, r.volume, r.tick_count) for r in five] == [
            (BASE_S, D(100), D("101.5"), D("4.5"), 4),
            (BASE_S + 300, D(110), D(110), D(3), 1),
        ]
        # The most recent `limit`, oldest first, and whether older ones were left out.
        newest, truncated = await store.bars(symbol, ONE_MINUTE, BASE_S, BASE_S + 600, 2, BUDGET)
        assert [r.start_s for r in newest] == [BASE_S + 60, BASE_S + 420] and truncated
        # [lo, hi): a bucket at hi is out; an empty or inverted window is empty.
        inside, _ = await store.bars(symbol, ONE_MINUTE, BASE_S + 60, BASE_S + 420, 10, BUDGET)
        assert [r.start_s for r in inside] == [BASE_S + 60]
        assert await store.bars(symbol, ONE_MINUTE, BASE_S, BASE_S, 10, BUDGET) == ([], False)
        # A range reaching outside 1970..2106 is cut to it.
        everything, _ = await store.bars(symbol, ONE_MINUTE, -(10**12), 10**12, 10, BUDGET)
        assert len(everything) == 3
        assert await store.bars(symbol, ONE_MINUTE, DATETIME_MAX_S + 1, DATETIME_MAX_S + 99, 10, BUDGET) == (
            [],
            False,
        )

    async def test_a_mark_is_the_last_priced_tick_before_the_time(self, store: AnalyticsStore) -> None:
        quoted, traded, stale, silent = new_symbol(), new_symbol(), new_symbol(), new_symbol()
        lookback = 86_400 * NS_PER_S  # AnalyticsSettings.mark_lookback_s
        await store.write(
            [
                quote(quoted, BASE + 1 * NS_PER_S, "99", "101"),
                quote(quoted, BASE + 2 * NS_PER_S, "100", "101"),  # mid 100.5
                quote(quoted, BASE + 2 * NS_PER_S, "0", "0", sequence=1),  # no price: skipped
                quote(quoted, BASE + 3 * NS_PER_S, "200", "201"),  # at `before`: not before it
                trade(traded, BASE + 1 * NS_PER_S, "42.5", "1"),  # no two-sided quote: the trade price
                trade(stale, BASE + 3 * NS_PER_S - lookback - 1, "7", "1"),  # older than the lookback
            ]
        )
        marks = await store.marks([quoted, traded, stale, silent], BASE + 3 * NS_PER_S, BUDGET)
        assert marks == {quoted: D("100.5"), traded: D("42.5")}
        assert await store.marks([], BASE, BUDGET) == {}

    async def test_pnl_samples_carry_one_in_then_the_last_of_each_step(self, store: AnalyticsStore) -> None:
        tenant, other = new_tenant(), new_tenant()
        s = NS_PER_S
        before = snapshot(tenant, BASE - 5 * s, "900")
        older = snapshot(tenant, BASE - 9 * s, "800")
        first_step = [snapshot(tenant, BASE + 1 * s, "1001"), snapshot(tenant, BASE + 10 * s, "1010")]
        # Two snapshots at the same time: the higher version is the later one.
        tied = [snapshot(tenant, BASE + 15 * s, "1015", version=2), snapshot(tenant, BASE + 15 * s, "1014")]
        at_end = snapshot(tenant, BASE + 30 * s, "1030")
        await store.write([older, before, *first_step, *tied, at_end, snapshot(other, BASE + 2 * s, "5")])
        samples = await store.pnl_samples(tenant, BASE, BASE + 30 * s, 10 * s, BUDGET)
        # Steps (0, 10], (10, 20]; the one at end is outside (start, end).
        assert samples == [sample(before), sample(first_step[1]), sample(tied[0])]
        assert await store.pnl_samples(new_tenant(), BASE, BASE + 30 * s, 10 * s, BUDGET) == []

    async def test_trade_figures_sum_the_fills_and_their_closing_changes(self, store: AnalyticsStore) -> None:
        tenant, symbol, other_symbol = new_tenant(), new_symbol(), new_symbol()
        s = NS_PER_S
        opened = fill(tenant, symbol, "BUY", "2", "100", BASE + 1 * s, fee="0.5")
        won = fill(tenant, symbol, "SELL", "1", "110", BASE + 2 * s, fee="0.25")
        flipped = fill(tenant, symbol, "SELL", "3", "90", BASE + 3 * s)
        lost = fill(tenant, other_symbol, "BUY", "1", "50", BASE + 4 * s)
        outside = fill(tenant, symbol, "SELL", "1", "1", BASE + 10 * s)
        await store.write(
            [
                opened, won, flipped, lost, outside,
                change(tenant, opened, "0", "2", "0"),  # opening: no trade
                change(tenant, won, "2", "1", "10"),  # closing, winning
                change(tenant, flipped, "1", "-2", "-10"),  # closing (through zero), losing
                change(tenant, lost, "-1", "0", "-5"),  # closing, losing
                change(tenant, outside, "-2", "-3", "0"),  # outside the range
                fill(new_tenant(), symbol, "BUY", "5", "5", BASE + 1 * s),  # another tenant's
            ]
        )  # fmt: skip
        every = await store.trade_aggregates(tenant, "", BASE, BASE + 10 * s, BUDGET)
        assert every == TradeAggregates(
            fill_count=4,
            turnover=D(200 + 110 + 270 + 50),
            fees=D("0.75"),
            currency="USD",
            trade_count=3,
            winning=1,
            losing=2,
            gross_pnl=D(-5),
            gross_profit=D(10),
            gross_loss=D(-15),
        )
        one = await store.trade_aggregates(tenant, other_symbol, BASE, BASE + 10 * s, BUDGET)
        assert (one.fill_count, one.trade_count, one.losing, one.gross_pnl) == (1, 1, 1, D(-5))
        none = await store.trade_aggregates(new_tenant(), "", BASE, BASE + 10 * s, BUDGET)
        assert (none.fill_count, none.turnover, none.currency, none.trade_count) == (0, D(0), "", 0)

    async def test_the_snapshot_path_starts_with_the_one_carried_in(self, store: AnalyticsStore) -> None:
        tenant, late = new_tenant(), new_tenant()
        s = NS_PER_S
        rows = [
            snapshot(tenant, BASE - 9 * s, "800", exposure="1"),
            snapshot(tenant, BASE - 2 * s, "900", exposure="2", positions={"X": "5"}),
            snapshot(tenant, BASE + 5 * s, "950", exposure="3", version=2),
            snapshot(tenant, BASE + 5 * s, "940", exposure="4", version=1),
            snapshot(tenant, BASE + 20 * s, "999", exposure="9"),  # at end: out
        ]
        await store.write([*rows, snapshot(late, BASE + 3 * s, "10")])
        path = await store.snapshot_path(tenant, BASE, BASE + 20 * s, BUDGET)
        assert [(at, exposure, equity) for at, exposure, equity, *_ in path] == [
            (BASE - 2 * s, D(2), D(900)),
            (BASE + 5 * s, D(4), D(940)),
            (BASE + 5 * s, D(3), D(950)),
        ]
        assert path[0][3:] == (["X"], [D(5)], [D(0)], [D(0)])
        # None carried in: the path starts with the first in the range.
        assert [p[0] for p in await store.snapshot_path(late, BASE, BASE + 20 * s, BUDGET)] == [BASE + 3 * s]

    async def test_model_cells_score_each_vector_once_against_the_ticks_after_it(
        self, store: AnalyticsStore
    ) -> None:
        tenant, other, symbol = new_tenant(), new_tenant(), new_symbol()
        m1, m2 = f"m1-{_id()[:8]}", f"m2-{_id()[:8]}"
        s = NS_PER_S
        # Mids of ticks 1..6 (at BASE + i s): 100, 101, 102, 101, 100, 100. Over 2 ticks:
        # tick 1 -> UP (102), tick 2 -> TIE (101), tick 3 -> DOWN (100), tick 4 -> DOWN,
        # ticks 5 and 6 -> UNRESOLVED (no tick 2 later).
        mids = [100, 101, 102, 101, 100, 100]
        ticks = [
            quote(symbol, BASE + (i + 1) * s, str(mid - 0.5), str(mid + 0.5)) for i, mid in enumerate(mids)
        ]
        both = ((m1, OK, 0.5), (m2, OK, -0.5))  # p = 0.75 (bucket 7, calls UP), 0.25 (bucket 2, DOWN)
        signals = [
            signal(tenant, symbol, BASE + 1500 * MS, models=both),  # reference tick 1: UP
            # The same vector for another strategy: its models' scores count once.
            signal(tenant, symbol, BASE + 1500 * MS, strategy="other", models=both),
            signal(tenant, symbol, BASE + 2 * s, models=((m1, OK, 0.5), (m2, TIMEOUT, 0.0))),  # tick 2: TIE
            signal(tenant, symbol, BASE + 3200 * MS, models=((m1, OK, -0.5),)),  # tick 3: DOWN
            signal(tenant, symbol, BASE + 500 * MS, models=((m1, OK, 0.5),)),  # no tick before: UNRESOLVED
            signal(tenant, symbol, BASE + 5500 * MS, models=((m1, OK, 0.5),)),  # tick 5: UNRESOLVED
            signal(tenant, symbol, BASE + 20 * s, models=((m1, OK, 0.5),)),  # at end: out of range
            signal(
                other, symbol, BASE + 3500 * MS, models=((m1, OK, 0.5),)
            ),  # another tenant's: tick 3, DOWN
        ]
        await store.write([*ticks, *signals])
        key1, key2 = (m1, "v1"), (m2, "v1")
        cells = await store.model_cells(tenant, m1, BASE, BASE + 20 * s, 2, BUDGET)
        assert cells == [
            Cell(key1, 2, Call.DOWN, Outcome.DOWN, 1, 0.25, 0.0625),
            Cell(key1, 7, Call.UP, Outcome.UNRESOLVED, 2, 1.5, 1.125),
            Cell(key1, 7, Call.UP, Outcome.TIE, 1, 0.75, 0.5625),
            Cell(key1, 7, Call.UP, Outcome.UP, 1, 0.75, 0.5625),
        ]
        every_model = await store.model_cells(tenant, "", BASE, BASE + 20 * s, 2, BUDGET)
        assert [c for c in every_model if c.key == key2] == [
            Cell(key2, 2, Call.DOWN, Outcome.UP, 1, 0.25, 0.0625)
        ]
        # Every tenant (the evaluator's view): the other tenant's prediction counts too.
        platform = await store.model_cells(None, m1, BASE, BASE + 20 * s, 2, BUDGET)
        assert Cell(key1, 7, Call.UP, Outcome.DOWN, 1, 0.75, 0.5625) in platform
        assert sum(c.count for c in platform) == sum(c.count for c in cells) + 1

    async def test_strategy_cells_score_each_answered_signal_by_its_direction(
        self, store: AnalyticsStore
    ) -> None:
        tenant, symbol = new_tenant(), new_symbol()
        s = NS_PER_S
        # Mids 100, 101, 99 at BASE + 1, 2, 3 s: over 1 tick, tick 1 -> UP, tick 2 -> DOWN.
        ticks = [
            quote(symbol, BASE + (i + 1) * s, str(mid - 0.5), str(mid + 0.5))
            for i, mid in enumerate([100, 101, 99])
        ]
        answered = (("m", OK, 0.0),)
        await store.write(
            [
                *ticks,
                signal(
                    tenant, symbol, BASE + 1 * s, direction="BUY", strength=0.5, models=answered
                ),  # UP, p .75
                signal(
                    tenant, symbol, BASE + 2 * s, direction="SELL", strength=-0.5, models=answered
                ),  # DOWN
                signal(
                    tenant,
                    symbol,
                    BASE + 2 * s,
                    strategy="calm",
                    direction="HOLD",
                    strength=0.0,
                    models=answered,
                ),
                signal(
                    tenant, symbol, BASE + 1 * s, strategy="calm", models=(("m", TIMEOUT, 0.0),)
                ),  # none answered
            ]
        )
        cells = await store.strategy_cells(tenant, "", BASE, BASE + 10 * s, 1, BUDGET)
        assert cells == [
            Cell("calm", 5, Call.NONE, Outcome.DOWN, 1, 0.5, 0.25),
            Cell("momentum", 2, Call.DOWN, Outcome.DOWN, 1, 0.25, 0.0625),
            Cell("momentum", 7, Call.UP, Outcome.UP, 1, 0.75, 0.5625),
        ]
        only = await store.strategy_cells(tenant, "calm", BASE, BASE + 10 * s, 1, BUDGET)
        assert [c.key for c in only] == ["calm"]
        assert await store.strategy_cells(new_tenant(), "", BASE, BASE + 10 * s, 1, BUDGET) == []

    async def test_a_strategys_fills_and_what_it_held_before(self, store: AnalyticsStore) -> None:
        tenant, symbol, other_symbol = new_tenant(), new_symbol(), new_symbol()
        s = NS_PER_S
        earlier = [
            fill(tenant, symbol, "BUY", "3", "10", BASE - 5 * s, strategy="a"),
            fill(tenant, symbol, "SELL", "1", "11", BASE - 4 * s, strategy="a"),
            fill(tenant, other_symbol, "BUY", "1", "5", BASE - 3 * s, strategy="a"),
            fill(tenant, other_symbol, "SELL", "1", "6", BASE - 2 * s, strategy="a"),  # flat again: left out
            fill(tenant, symbol, "SELL", "2", "12", BASE - 1 * s, strategy="b"),
        ]
        inside = [
            fill(tenant, symbol, "BUY", "1", "13", BASE + 2 * s, strategy="b", fee="0.1"),
            fill(tenant, symbol, "SELL", "1", "14", BASE + 1 * s, strategy="a"),
            fill(tenant, symbol, "BUY", "1", "15", BASE + 3 * s, strategy="a"),
        ]
        await store.write(
            [*earlier, *inside, fill(new_tenant(), symbol, "BUY", "9", "1", BASE, strategy="a")]
        )
        assert await store.strategy_openings(tenant, "", BASE, BUDGET) == {
            "a": {symbol: D(2)},
            "b": {symbol: D(-2)},
        }
        assert await store.strategy_openings(tenant, "b", BASE, BUDGET) == {"b": {symbol: D(-2)}}
        fills = await store.strategy_fills(tenant, "", BASE, BASE + 10 * s, 10, BUDGET)
        assert [(strategy, f.at_ns, f.price) for strategy, f in fills] == [
            ("a", BASE + 1 * s, D(14)),
            ("b", BASE + 2 * s, D(13)),
            ("a", BASE + 3 * s, D(15)),
        ]
        assert fills[1] == ("b", StrategyFill(symbol, Side.BUY, D(13), D(1), D("0.1"), "USD", BASE + 2 * s))
        # At most limit + 1 (one more tells the range holds too many).
        assert len(await store.strategy_fills(tenant, "", BASE, BASE + 10 * s, 1, BUDGET)) == 2
        only_a = await store.strategy_fills(tenant, "a", BASE, BASE + 10 * s, 10, BUDGET)
        assert [f.price for _, f in only_a] == [D(14), D(15)]
