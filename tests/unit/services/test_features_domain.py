"""Incremental features against straightforward batch recomputation, textbook
values, the contract form, and the O(1) promise. No servers."""

from __future__ import annotations

import gc
import math
import random
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import numpy as np
import protovalidate
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st
from trading.common.v1 import decimal_pb2, market_pb2

from services.features.domain import (
    Ema,
    FeatureConfig,
    FeatureEngine,
    FeatureVector,
    RollingStd,
    SymbolFeatures,
    Tick,
    tick_from_quote,
)

D = Decimal
T0 = datetime(2024, 6, 3, 14, 30, tzinfo=UTC)
SMALL = FeatureConfig(ema_fast=3, ema_slow=7, rsi_period=5, volatility_window=6, vwap_window=8)


def tick(
    mid: Decimal | str,
    seq: int,
    *,
    half_spread: str = "0.01",
    bid_size: str = "2",
    ask_size: str = "1",
    last: Decimal | str | None = None,
    last_size: str = "1",
    symbol: str = "X",
) -> Tick:
    m = D(mid)
    h = D(half_spread)
    return Tick(
        symbol=symbol,
        bid=m - h,
        ask=m + h,
        bid_size=D(bid_size),
        ask_size=D(ask_size),
        last=D(last) if last is not None else m,
        last_size=D(last_size),
        ts=T0 + timedelta(milliseconds=seq),
        sequence=seq,
    )


def feed(state: SymbolFeatures, ticks: Sequence[Tick]) -> list[FeatureVector]:
    out = []
    for t in ticks:
        v = state.update(t)
        assert v is not None
        out.append(v)
    return out


# ---------------------------------------------------------------- batch references
# Written from the definitions, independently of the incremental code: closed
# forms where the incremental code uses recursions.


def batch_ema(x: np.ndarray, period: int) -> float:
    """EMA seeded with x[0], as the closed-form weighted sum."""
    a = 2.0 / (period + 1)
    t = len(x) - 1
    weights = a * (1 - a) ** (t - np.arange(1, t + 1))
    return float((1 - a) ** t * x[0] + np.sum(weights * x[1:]))


def batch_wilder(values: np.ndarray, n: int) -> float:
    """Wilder average: plain mean of the first n, then EMA with alpha 1/n (closed form)."""
    if len(values) <= n:
        return float(values.mean())
    a = 1.0 / n
    seed = values[:n].mean()
    rest = values[n:]
    k = len(rest)
    return float((1 - a) ** k * seed + np.sum(a * (1 - a) ** (k - 1 - np.arange(k)) * rest))


def batch_rsi(prices: np.ndarray, n: int) -> float:
    changes = np.diff(prices)
    if len(changes) == 0:
        return 50.0
    gains = np.clip(changes, 0, None)
    losses = np.clip(-changes, 0, None)
    g, lo = batch_wilder(gains, n), batch_wilder(losses, n)
    if lo == 0:
        return 100.0 if g > 0 else 50.0
    return 100.0 - 100.0 / (1.0 + g / lo)


def batch_volatility(prices: np.ndarray, window: int) -> float:
    returns = np.log(prices[1:] / prices[:-1])[-window:]
    return float(np.std(returns, ddof=1)) if len(returns) >= 2 else 0.0


# ---------------------------------------------------------------- textbook values

# StockCharts' RSI example (14 periods): closes and the published RSI values.
STOCKCHARTS_CLOSES = [
    "44.3389", "44.0902", "44.1497", "43.6124", "44.2778", "44.8264", "45.0955", "45.4245", "45.8433",
    "46.0826", "45.8931", "46.0328", "45.614", "46.282", "46.282", "46.0028", "46.0328", "46.4116",
    "46.2222", "45.6439", "46.2122", "46.2521", "45.7137", "46.4515", "45.7835", "45.3548", "44.0288",
    "44.1783", "44.2181", "44.5672", "43.4205", "42.6628", "43.1314",
]  # fmt: skip
STOCKCHARTS_RSI = [
    70.53, 66.32, 66.55, 69.41, 66.36, 57.97, 62.93, 63.26, 56.06, 62.38,
    54.71, 50.42, 39.99, 41.46, 41.87, 45.46, 37.30, 33.08, 37.77,
]  # fmt: skip


def test_rsi_matches_the_textbook_example() -> None:
    state = SymbolFeatures("X", FeatureConfig(rsi_period=14))
    vectors = feed(state, [tick(c, i + 1, half_spread="0") for i, c in enumerate(STOCKCHARTS_CLOSES)])
    assert [round(v.rsi, 2) for v in vectors[14:]] == STOCKCHARTS_RSI


def test_rsi_extremes() -> None:
    up = feed(SymbolFeatures("X", SMALL), [tick(str(100 + i), i + 1) for i in range(10)])
    assert up[-1].rsi == 100.0
    down = feed(SymbolFeatures("X", SMALL), [tick(str(100 - i), i + 1) for i in range(10)])
    assert down[-1].rsi == 0.0
    flat = feed(SymbolFeatures("X", SMALL), [tick("100", i + 1) for i in range(10)])
    assert flat[0].rsi == 50.0 and flat[-1].rsi == 50.0


def test_ema_by_hand_is_exact_decimal() -> None:
    ema = Ema(3)  # alpha = 0.5
    assert [ema.update(D(x)) for x in ("1", "2", "3", "5")] == [D(1), D("1.5"), D("2.25"), D("3.625")]


def test_spread_mid_imbalance_by_hand() -> None:
    state = SymbolFeatures("BTC-USD")
    v = state.update(Tick("BTC-USD", D("99.5"), D("100.5"), D("3"), D("1"), D("100"), D("2"), T0, 1))
    assert v is not None
    assert v.mid_price == D(100)
    assert v.spread == D(1)
    assert v.spread_bps == pytest.approx(100.0)
    assert v.order_book_imbalance == 0.5
    assert v.vwap == D(100)
    assert (v.log_return, v.window_return, v.volatility) == (0.0, 0.0, 0.0)
    assert v.ema_fast == v.ema_slow == D(100) and v.ema_crossover == 0.0


def test_empty_book_sides_give_zero_imbalance_and_no_trades_no_vwap() -> None:
    v = SymbolFeatures("X").update(tick("100", 1, bid_size="0", ask_size="0", last_size="0"))
    assert v is not None
    assert v.order_book_imbalance == 0.0
    assert v.vwap is None


# ---------------------------------------------------------------- incremental == batch

prices_st = st.lists(st.integers(min_value=100, max_value=1_000_000), min_size=2, max_size=80)
sizes_st = st.lists(st.integers(min_value=0, max_value=500), min_size=80, max_size=80)


@settings(max_examples=150, deadline=None)
@given(cents=prices_st, bid_sizes=sizes_st, ask_sizes=sizes_st, trade_sizes=sizes_st)
def test_incremental_equals_batch_recomputation(
    cents: list[int], bid_sizes: list[int], ask_sizes: list[int], trade_sizes: list[int]
) -> None:
    cfg = SMALL
    mids = [D(c) / 100 for c in cents]
    lasts = [m + D(i % 3 - 1) / 100 for i, m in enumerate(mids)]
    ticks = [
        Tick(
            symbol="X",
            bid=m - D("0.005"),
            ask=m + D("0.005"),
            bid_size=D(bid_sizes[i]),
            ask_size=D(ask_sizes[i]),
            last=lasts[i],
            last_size=D(trade_sizes[i]) / 10,
            ts=T0 + timedelta(seconds=i),
            sequence=10 + 3 * i,  # gaps are fine, only order matters
        )
        for i, m in enumerate(mids)
    ]
    vectors = feed(SymbolFeatures("X", cfg), ticks)
    p = np.array([float(m) for m in mids])
    for k, v in enumerate(vectors):
        prefix = p[: k + 1]
        assert v.mid_price == mids[k]
        assert v.spread == D("0.01")
        assert v.spread_bps == pytest.approx(float(Fraction(1, 100) / Fraction(mids[k])) * 1e4, rel=1e-12)
        depth = bid_sizes[k] + ask_sizes[k]
        assert v.order_book_imbalance == pytest.approx(
            (bid_sizes[k] - ask_sizes[k]) / depth if depth else 0.0
        )
        assert v.log_return == pytest.approx(math.log(prefix[-1] / prefix[-2]) if k else 0.0, abs=1e-12)
        start = max(0, k - cfg.volatility_window)
        assert v.window_return == pytest.approx(math.log(prefix[-1] / prefix[start]), abs=1e-12)
        assert float(v.ema_fast) == pytest.approx(batch_ema(prefix, cfg.ema_fast), rel=1e-12)
        assert float(v.ema_slow) == pytest.approx(batch_ema(prefix, cfg.ema_slow), rel=1e-12)
        assert v.ema_crossover == pytest.approx(float(v.ema_fast / v.ema_slow) - 1, abs=1e-15)
        assert v.rsi == pytest.approx(batch_rsi(prefix, cfg.rsi_period), abs=1e-8)
        assert v.volatility == pytest.approx(
            batch_volatility(prefix, cfg.volatility_window), rel=1e-9, abs=1e-15
        )
        # VWAP: exact rational over the last vwap_window ticks.
        lo = max(0, k + 1 - cfg.vwap_window)
        volume = sum(Fraction(trade_sizes[i], 10) for i in range(lo, k + 1))
        if volume == 0:
            assert v.vwap is None
        else:
            notional = sum(Fraction(lasts[i]) * Fraction(trade_sizes[i], 10) for i in range(lo, k + 1))
            assert v.vwap is not None
            assert abs(Fraction(v.vwap) - notional / volume) < Fraction(1, 10**25)
        assert v.tick_count == k + 1
        assert v.warmed_up == (k + 1 >= cfg.warm_up_ticks)


def test_volatility_stays_exact_over_a_long_run() -> None:
    """The add/remove updates must not drift: compare with numpy after 30k ticks."""
    rng = random.Random(7)
    cfg = FeatureConfig(volatility_window=50)
    state = SymbolFeatures("X", cfg)
    price = 50_000.0
    prices = []
    for i in range(30_000):
        # Regime changes: the variance jumps by orders of magnitude.
        sigma = 1e-2 if (i // 5000) % 2 else 1e-6
        price *= math.exp(rng.gauss(0, sigma))
        prices.append(D(repr(round(price, 8))))
    vectors = feed(state, [tick(m, i + 1, half_spread="0") for i, m in enumerate(prices)])
    p = np.array([float(m) for m in prices])
    # Low-variance stretches after high-variance ones are where add/remove
    # updates drift the most (about 1e-6 relative here without the resync).
    for k in (14_999, 24_999, len(p) - 1):
        expected = batch_volatility(p[: k + 1], cfg.volatility_window)
        assert vectors[k].volatility == pytest.approx(expected, rel=1e-9, abs=0)


def test_volatility_of_a_constant_return_is_zero_not_negative_or_nan() -> None:
    std = RollingStd(10)
    for _ in range(1000):
        value = std.update(0.000123456789)
    assert 0.0 <= value < 1e-15


# ---------------------------------------------------------------- ignored ticks


def test_out_of_order_ticks_are_ignored_counted_and_change_nothing() -> None:
    ticks = [tick(str(100 + i), seq) for i, seq in enumerate((1, 2, 3, 4, 5))]
    clean = feed(SymbolFeatures("X", SMALL), ticks)

    state = SymbolFeatures("X", SMALL)
    got = []
    for t in (ticks[0], ticks[1], ticks[2], tick("1", 2), tick("1", 3), ticks[3], tick("1", 1), ticks[4]):
        got.append(state.update(t))
    assert [v for v in got if v is not None] == clean
    assert sum(v is None for v in got) == 3
    assert state.ignored.out_of_order == 3
    assert state.tick_count == 5
    assert state.latest == clean[-1]


@pytest.mark.parametrize(
    "bad",
    [
        Tick("X", D("101"), D("100"), D(1), D(1), D(100), D(1), T0, 9),  # crossed
        Tick("X", D("0"), D("100"), D(1), D(1), D(100), D(1), T0, 9),  # non-positive bid
        Tick("X", D("99"), D("100"), D(-1), D(1), D(100), D(1), T0, 9),  # negative size
        Tick("X", D("99"), D("NaN"), D(1), D(1), D(100), D(1), T0, 9),  # not a number
        Tick("X", D("99"), D("100"), D(1), D(1), D(0), D(1), T0, 9),  # a trade at price 0
    ],
)
def test_invalid_ticks_are_ignored_and_counted(bad: Tick) -> None:
    state = SymbolFeatures("X", SMALL)
    first = state.update(tick("100", 1, symbol="X"))
    assert state.update(bad) is None
    assert state.ignored.invalid == 1
    assert state.latest == first and state.tick_count == 1
    # The bad tick did not consume its sequence number.
    assert state.update(tick("100", 9, symbol="X")) is not None


def test_a_tick_of_another_symbol_is_a_bug() -> None:
    with pytest.raises(ValueError):
        SymbolFeatures("X").update(tick("100", 1, symbol="Y"))


# ---------------------------------------------------------------- O(1)


def deep_size(root: object) -> int:
    """Bytes of every object reachable from root (shared singletons counted once)."""
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def test_state_size_does_not_grow_with_tick_count() -> None:
    rng = random.Random(3)
    cfg = FeatureConfig()
    state = SymbolFeatures("X", cfg)
    price = D(100)

    def run(n: int, start: int) -> None:
        nonlocal price
        for i in range(n):
            price = max(D(1), price + D(rng.randint(-50, 50)) / 100)
            state.update(tick(price, start + i, symbol="X", last_size=str(rng.randint(0, 9))))

    run(2 * cfg.warm_up_ticks, 1)
    state.latest = None  # the last vector is output, not state
    early = deep_size(state)
    run(20_000, 10_000)
    state.latest = None
    late = deep_size(state)
    assert state.tick_count == 2 * cfg.warm_up_ticks + 20_000
    # Same structure, same number of stored values; only digit counts vary.
    assert abs(late - early) <= early * 0.05, (early, late)


# ---------------------------------------------------------------- engine and contract


def test_engine_keeps_one_state_per_symbol() -> None:
    engine = FeatureEngine(SMALL)
    a = engine.update(tick("100", 1, symbol="AAA"))
    b = engine.update(tick("200", 1, symbol="BBB"))  # sequences are per symbol
    a2 = engine.update(tick("101", 2, symbol="AAA"))
    assert a is not None and b is not None and a2 is not None
    assert engine.symbols() == {"AAA", "BBB"}
    assert engine.latest("AAA") == a2 and engine.latest("BBB") == b
    assert a2.log_return == pytest.approx(math.log(101 / 100))
    assert engine.latest("CCC") is None
    assert engine.update(tick("1", 1, symbol="AAA")) is None
    state = engine.state("AAA")
    assert state is not None and state.ignored.out_of_order == 1


def test_engine_ignores_unknown_symbols_when_limited() -> None:
    engine = FeatureEngine(symbols=frozenset({"AAA"}))
    assert engine.update(tick("100", 1, symbol="ZZZ")) is None
    assert engine.unknown_symbols == 1 and engine.symbols() == frozenset()
    assert engine.update(tick("100", 1, symbol="AAA")) is not None


def test_vector_converts_to_a_valid_contract_message() -> None:
    state = SymbolFeatures("X", SMALL)
    # A mid with 13 decimals: the wire carries 12, rounded half-even.
    odd = Tick("X", D("64000.000000000001"), D("64000.000000000002"), D(1), D(1), D(64000), D(1), T0, 1)
    vectors = feed(
        state,
        [
            odd,
            tick("64010.25", 2),
            tick("63990.5", 3, last_size="0"),
        ],
    )
    computed = T0 + timedelta(seconds=5)
    event = vectors[0].to_event(computed)
    protovalidate.validate(event)
    msg = event.vector
    assert vectors[0].mid_price == D("64000.0000000000015")
    assert msg.mid_price.value == "64000.000000000002"
    assert msg.spread.value == "0.000000000001"
    assert msg.tick_sequence == 1 and msg.tick_count == 1
    assert msg.as_of.ToDatetime(tzinfo=UTC) == T0
    assert msg.computed_at.ToDatetime(tzinfo=UTC) == computed
    assert msg.feature_set_version == SMALL.version
    last = vectors[-1].to_proto(computed)
    protovalidate.validate(last)
    assert last.mid_price.value == "63990.5"
    assert last.rsi == vectors[-1].rsi and last.volatility == vectors[-1].volatility
    assert last.HasField("vwap")
    no_trades = SymbolFeatures("X").update(tick("1", 1, symbol="X", last_size="0"))
    assert no_trades is not None and not no_trades.to_proto(computed).HasField("vwap")


def test_tick_from_quote() -> None:
    ts = Timestamp()
    ts.FromDatetime(T0)
    msg = market_pb2.Quote(
        symbol="ETH-USD",
        bid_price=decimal_pb2.Decimal(value="3000.1"),
        bid_size=decimal_pb2.Decimal(value="4"),
        ask_price=decimal_pb2.Decimal(value="3000.2"),
        ask_size=decimal_pb2.Decimal(value="5"),
        last_price=decimal_pb2.Decimal(value="3000.15"),
        last_size=decimal_pb2.Decimal(value="0.25"),
        exchange_time=ts,
        sequence=77,
    )
    assert tick_from_quote(msg) == Tick(
        "ETH-USD", D("3000.1"), D("3000.2"), D(4), D(5), D("3000.15"), D("0.25"), T0, 77
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ema_fast": 26, "ema_slow": 12},
        {"rsi_period": 0},
        {"volatility_window": 1},
        {"vwap_window": 0},
    ],
)
def test_config_refuses_nonsense(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        FeatureConfig(**kwargs)


def test_config_version_names_every_parameter() -> None:
    assert FeatureConfig().version == "v1:ema12-26:rsi14:vol20:vwap100"
    assert FeatureConfig(vwap_window=50).version != FeatureConfig().version
    assert FeatureConfig().warm_up_ticks == 100


# ---------------------------------------------------------------- across symbols


def _random_ticks(rng: random.Random, symbols: Sequence[str], n: int) -> list[Tick]:
    """Random walks of several symbols, interleaved at random, with some
    out-of-order, repeated and invalid (crossed) ticks mixed in."""
    mids = {s: D(rng.choice(["0.0013", "1.08", "150", "60000"])) for s in symbols}
    seqs = dict.fromkeys(symbols, 0)
    out = []
    for _ in range(n):
        s = rng.choice(symbols)
        roll = rng.random()
        if roll < 0.03 and seqs[s] > 2:
            out.append(tick(mids[s], seqs[s] - rng.randint(0, 2), symbol=s))  # not after the last
            continue
        seqs[s] += rng.randint(1, 3)
        if roll < 0.06:
            out.append(tick(mids[s], seqs[s], half_spread="-0.5", symbol=s))  # crossed: invalid
            continue
        if rng.random() > 0.1:  # else the same mid again: a zero change (RSI's flat case)
            mids[s] = (mids[s] * D(1 + rng.gauss(0, 0.002))).quantize(D("0.0000001"))
        out.append(
            tick(
                mids[s],
                seqs[s],
                half_spread=str((mids[s] / 5000).quantize(D("0.0000001"))),
                bid_size=str(rng.randint(0, 5)),
                ask_size=str(rng.randint(0, 5)),
                last_size=str(rng.choice([0, 1, 2])),
                symbol=s,
            )
        )
    return out


@pytest.mark.parametrize("config", [SMALL, FeatureConfig()], ids=["small", "default"])
def test_the_batch_engine_equals_the_tick_by_tick_engine_on_random_ticks(config: FeatureConfig) -> None:
    """Vectorised across symbols (numpy columns), value for value the scalar
    engine: every field of every vector, the ignored counters, in batches of
    every size (one symbol several times in a batch included)."""
    from services.features.domain import BatchFeatureEngine

    rng = random.Random(7)
    symbols = ["BTC-USD", "ETH-USD", "SOL-USD", "EUR-USD", "AAPL"]
    ticks = _random_ticks(rng, symbols, 3000)
    ticks.append(tick("1", 1, symbol="UNKNOWN"))
    known = frozenset(symbols)
    scalar, batched = FeatureEngine(config, known), BatchFeatureEngine(config, known)
    expected = [scalar.update(t) for t in ticks]
    got: list[FeatureVector | None] = []
    i = 0
    while i < len(ticks):
        size = rng.choice([1, 2, 7, 40, 300])
        got.extend(batched.update_many(ticks[i : i + size]))
        i += size
    assert got == expected
    assert sum(v is not None for v in got) > 2500  # most ticks applied; resyncs happened
    for s in symbols:
        a, b = scalar.state(s), batched.state(s)
        assert a is not None and b is not None
        assert (a.ignored, a.tick_count, a.latest) == (b.ignored, b.tick_count, b.latest)
    assert batched.unknown_symbols == scalar.unknown_symbols == 1
