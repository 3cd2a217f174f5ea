"""Feed adapters: synthetic GBM (determinism, statistics, book shape, pacing),
CSV and Parquet replay, settings from the environment. No servers."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runtime.config import Settings
from services.marketdata.domain import Normalizer, RawTick, Rejection, RejectReason
from services.marketdata.feeds import (
    REPLAY_COLUMNS,
    FeedSettings,
    GbmGenerator,
    ReplayFeed,
    SymbolSpec,
    SyntheticFeed,
    create_feed,
)

D = Decimal
SPECS = [
    SymbolSpec("BTC-USD", D("60000"), D("0.01"), D("0.00001")),
    SymbolSpec("EUR-USD", D("1.08"), D("0.00001"), D("1")),
    SymbolSpec("AAPL", D("190"), D("0.01"), D("1")),
]
T0 = 1_717_425_000_000_000_000


def _gen(seed: int = 7, specs: Sequence[SymbolSpec] = SPECS, **kw: float) -> GbmGenerator:
    params: dict[str, float] = {"rate": 300.0, "volatility": 0.6, "drift": 0.0, "spread_bps": 2.0} | kw
    return GbmGenerator(specs, seed=seed, **params)  # type: ignore[arg-type]


def test_same_seed_same_ticks_other_seed_other_ticks() -> None:
    a, b, c = _gen(7), _gen(7), _gen(8)
    first = a.next_batch(500, T0)
    assert first == b.next_batch(500, T0)
    other = c.next_batch(500, T0)
    assert [t.bid_price for t in first] != [t.bid_price for t in other]
    assert [t.symbol for t in first] == [t.symbol for t in other]


def test_batch_boundaries_do_not_change_the_path() -> None:
    whole = _gen(11).next_batch(600, T0)
    g = _gen(11)
    parts = g.next_batch(100, T0) + g.next_batch(250, T0) + g.next_batch(250, T0)
    key = [
        (t.symbol, t.bid_price, t.ask_price, t.bid_size, t.ask_size, t.last_price, t.sequence) for t in whole
    ]
    assert key == [
        (t.symbol, t.bid_price, t.ask_price, t.bid_size, t.ask_size, t.last_price, t.sequence) for t in parts
    ]


def test_books_are_valid_on_the_tick_and_lot_grid_and_pass_normalisation() -> None:
    gen = _gen(3, sequence_start=1000)
    ticks = gen.next_batch(3000, T0)
    normalizer = Normalizer({s.symbol for s in SPECS})
    by_symbol = {s.symbol: s for s in SPECS}
    assert ticks[0].sequence == 1001
    trades = 0
    for t in ticks:
        spec = by_symbol[t.symbol]
        assert t.bid_price is not None and t.ask_price is not None
        assert t.bid_size is not None and t.ask_size is not None
        assert 0 < t.bid_price < t.ask_price
        assert t.bid_price % spec.tick_size == 0 and t.ask_price % spec.tick_size == 0
        assert t.bid_size > 0 and t.bid_size % spec.lot_size == 0 and t.ask_size % spec.lot_size == 0
        if t.last_size is not None:
            trades += 1
            assert t.last_price in (t.bid_price, t.ask_price) and t.last_size > 0
        assert not isinstance(normalizer.normalize(t, T0), Rejection)
    # Symbols round-robin; about half the ticks trade.
    assert [t.symbol for t in ticks[:6]] == ["BTC-USD", "EUR-USD", "AAPL"] * 2
    assert 0.45 < trades / len(ticks) < 0.55


def test_log_returns_follow_the_gbm_moments() -> None:
    # A fine tick grid so rounding the mid to it does not distort the returns.
    spec = SymbolSpec("X", D("100"), D("0.00000001"), D("1"))
    gen = _gen(42, [spec], rate=10.0, volatility=0.8, drift=0.5, spread_bps=0.01)
    ticks = gen.next_batch(40_000, T0)
    mids = np.array([float((t.bid_price or 0) + (t.ask_price or 0)) / 2 for t in ticks])
    returns = np.diff(np.log(mids))
    mean, std = gen.log_return_moments
    dt = 1 / 10.0 / (365 * 24 * 3600)
    assert std == pytest.approx(0.8 * math.sqrt(dt))
    assert mean == pytest.approx((0.5 - 0.8**2 / 2) * dt)
    assert returns.std(ddof=1) == pytest.approx(std, rel=0.03)
    # The drift is tiny next to the noise: its estimate is within 4 standard errors.
    assert abs(returns.mean() - mean) < 4 * std / math.sqrt(len(returns))
    # Gaussian shocks: about 68% of returns within one sigma, few beyond four.
    within = np.mean(np.abs(returns - mean) < std)
    assert 0.66 < within < 0.70
    assert np.mean(np.abs(returns - mean) > 4 * std) < 0.001


async def _collect(feed: SyntheticFeed | ReplayFeed, limit: int, timeout: float = 10.0) -> list[RawTick]:
    out: list[RawTick] = []
    async with asyncio.timeout(timeout):
        async for batch in feed.batches():
            out.extend(batch)
            if len(out) >= limit:
                break
    return out


async def test_synthetic_feed_is_paced_to_its_rate() -> None:
    feed = SyntheticFeed(_gen(1), rate=400.0)
    start = time.monotonic()
    ticks = await _collect(feed, 120)
    elapsed = time.monotonic() - start
    # 120 ticks at 400/s take ~0.3 s; a loaded machine may be late, never early.
    assert elapsed >= 0.25
    assert [t.sequence for t in ticks] == sorted(t.sequence for t in ticks)
    times = [t.exchange_time_ns for t in ticks]
    assert times == sorted(times)


async def test_unlimited_synthetic_feed_hands_over_full_batches() -> None:
    feed = SyntheticFeed(_gen(1), rate=0, max_batch=256)
    ticks = await _collect(feed, 1024)
    assert len(ticks) == 1024


ROWS = [
    # symbol, bid, bid size, ask, ask size, last, last size, time, sequence
    ("BTC-USD", "60000.10", "0.5", "60000.20", "0.25", "60000.10", "0.01", "2024-06-03T14:30:00+00:00", "1"),
    ("ETH-USD", "3000.5", "2", "3000.6", "3", "", "", "2024-06-03T14:30:00.050", "1"),
    ("BTC-USD", "60000.30", "0.5", "60000.40", "0.25", "", "", str(T0 + 100_000_000), "2"),
    ("BTC-USD", "not-a-number", "0.5", "60000.40", "0.25", "", "", str(T0 + 150_000_000), "3"),
    ("ETH-USD", "3000.7", "2", "3000.6", "3", "", "", str(T0 + 200_000_000), "2"),
]


def _write_csv(path: Path, rows: Sequence[Sequence[str]], columns: Sequence[str] = REPLAY_COLUMNS) -> None:
    lines = [",".join(columns)] + [",".join(r[: len(columns)]) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def _check_replayed(ticks: list[RawTick]) -> None:
    assert [t.symbol for t in ticks] == ["BTC-USD", "ETH-USD", "BTC-USD", "BTC-USD", "ETH-USD"]
    first = ticks[0]
    assert (first.bid_price, first.bid_size, first.ask_price, first.last_price, first.last_size) == (
        D("60000.10"),
        D("0.5"),
        D("60000.20"),
        D("60000.10"),
        D("0.01"),
    )
    assert first.exchange_time_ns == T0 and first.source == "replay" and not first.error
    assert ticks[1].exchange_time_ns == T0 + 50_000_000 and ticks[1].last_price is None
    assert ticks[2].exchange_time_ns == T0 + 100_000_000 and ticks[2].sequence == 2
    assert "unparsable" in ticks[3].error
    normalizer = Normalizer({"BTC-USD", "ETH-USD"})
    results = [normalizer.normalize(t, T0) for t in ticks]
    reasons = [r.reason if isinstance(r, Rejection) else None for r in results]
    assert reasons == [None, None, None, RejectReason.MALFORMED, RejectReason.CROSSED_BOOK]


async def test_replay_csv_fast(tmp_path: Path) -> None:
    path = tmp_path / "ticks.csv"
    _write_csv(path, ROWS)
    _check_replayed(await _collect(ReplayFeed(path, pace="fast"), len(ROWS)))


async def test_replay_parquet_fast_with_native_types(tmp_path: Path) -> None:
    path = tmp_path / "ticks.parquet"
    table = pa.table(
        {
            "symbol": [r[0] for r in ROWS],
            # Strings keep decimals exact; floats work too (see the ETH rows).
            "bid_price": [r[1] for r in ROWS],
            "bid_size": [float(r[2]) for r in ROWS],
            "ask_price": [r[3] for r in ROWS],
            "ask_size": [float(r[4]) for r in ROWS],
            "last_price": [r[5] or None for r in ROWS],
            "last_size": [float(r[6]) if r[6] else None for r in ROWS],
            "exchange_time": pa.array(
                [T0, T0 + 50_000_000, T0 + 100_000_000, T0 + 150_000_000, T0 + 200_000_000],
                type=pa.timestamp("ns", tz="UTC"),
            ).cast(pa.timestamp("us", tz="UTC")),
            "sequence": [int(r[8]) for r in ROWS],
        }
    )
    pq.write_table(table, path)
    ticks = await _collect(ReplayFeed(path, pace="fast"), len(ROWS))
    _check_replayed(ticks)
    assert ticks[0].bid_size == D("0.5") and ticks[1].ask_size == D("3.0")


async def test_replay_realtime_keeps_the_gaps_and_numbers_missing_sequences(tmp_path: Path) -> None:
    path = tmp_path / "ticks.csv"
    rows = [("BTC-USD", "1", "1", "2", "1", "", "", str(T0 + i * 100_000_000)) for i in range(4)]
    _write_csv(path, rows, REPLAY_COLUMNS[:-1])  # no sequence column
    start = time.monotonic()
    ticks = await _collect(ReplayFeed(path, pace="realtime", speed=2.0), 4)
    # 300 ms of file time at double speed: at least ~150 ms.
    assert time.monotonic() - start >= 0.14
    assert [t.sequence for t in ticks] == [1, 2, 3, 4]


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRADING_MARKETDATA__FEED", "replay")
    monkeypatch.setenv("TRADING_MARKETDATA__FEED_SYMBOLS", "BTC-USD, ETH-USD")
    monkeypatch.setenv("TRADING_MARKETDATA__FEED_RATE", "2000")
    monkeypatch.setenv("TRADING_MARKETDATA__FEED_FILE", str(tmp_path / "x.csv"))
    settings = Settings().marketdata
    assert settings.feed == "replay" and settings.feed_symbols == ["BTC-USD", "ETH-USD"]
    assert settings.feed_rate == 2000.0
    with pytest.raises(FileNotFoundError):
        create_feed(settings, SPECS)
    assert create_feed(FeedSettings(feed="none"), SPECS) is None
    assert isinstance(create_feed(FeedSettings(feed="synthetic"), SPECS), SyntheticFeed)
    with pytest.raises(ValueError, match="unknown feed"):
        create_feed(FeedSettings(feed="binance"), SPECS)


def test_default_settings_run_a_modest_synthetic_feed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FEED", "FEED_RATE", "FEED_SYMBOLS"):
        monkeypatch.delenv(f"TRADING_MARKETDATA__{name}", raising=False)
    settings = FeedSettings()
    assert (settings.feed, settings.feed_rate, settings.feed_symbols) == ("synthetic", 50.0, [])
