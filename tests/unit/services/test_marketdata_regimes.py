"""The regime-switching feed (services/marketdata/regimes.py, feeds.RegimeGenerator):
determinism per symbol, the Markov switching it is documented to follow, each
regime's statistical signature, selection from settings, and the committed
replay sample's provenance. No servers."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from runtime.config import Settings
from services.marketdata.domain import Normalizer, Rejection
from services.marketdata.feeds import (
    FeedSettings,
    RegimeGenerator,
    SyntheticFeed,
    create_feed,
    replay_ticks,
    seeded_spec,
)
from services.marketdata.regimes import TRANSITIONS, Regime, RegimeParams, RegimeProcess
from services.marketdata.sample import write_sample

SYMBOLS = ["BTC-USD", "EUR-USD", "AAPL"]
SPECS = [seeded_spec(s) for s in SYMBOLS]
T0 = 1_717_425_000_000_000_000
ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "services" / "marketdata" / "samples" / "regime-sample.csv"


def _key(ticks: list) -> list[tuple[object, ...]]:  # type: ignore[type-arg]
    return [
        (t.symbol, t.bid_price, t.ask_price, t.bid_size, t.ask_size, t.last_price, t.last_size) for t in ticks
    ]


def test_same_seed_same_ticks_whatever_the_batches() -> None:
    whole = RegimeGenerator(SPECS, seed=3, spread_bps=2.0).next_batch(900, T0)
    g = RegimeGenerator(SPECS, seed=3, spread_bps=2.0)
    parts = g.next_batch(1, T0) + g.next_batch(250, T0) + g.next_batch(649, T0)
    assert _key(whole) == _key(parts)
    other = RegimeGenerator(SPECS, seed=4, spread_bps=2.0).next_batch(900, T0)
    assert _key(whole) != _key(other)


def test_a_symbol_s_path_does_not_depend_on_the_other_symbols() -> None:
    """Training generates one symbol at a time; the live feed quotes them all."""
    alone = RegimeGenerator([seeded_spec("AAPL")], seed=9, spread_bps=2.0).next_batch(500, T0)
    together = RegimeGenerator(SPECS, seed=9, spread_bps=2.0).next_batch(1500, T0)
    assert _key(alone) == _key([t for t in together if t.symbol == "AAPL"])


def test_books_are_valid_and_pass_normalisation() -> None:
    ticks = RegimeGenerator(SPECS, seed=1, spread_bps=2.0, sequence_start=10).next_batch(3000, T0)
    normalizer = Normalizer(set(SYMBOLS))
    assert ticks[0].sequence == 11 and [t.symbol for t in ticks[:3]] == SYMBOLS
    for t in ticks:
        spec = SPECS[SYMBOLS.index(t.symbol)]
        assert t.bid_price is not None and t.ask_price is not None
        assert 0 < t.bid_price < t.ask_price and t.bid_price % spec.tick_size == 0
        assert not isinstance(normalizer.normalize(t, T0), Rejection)


Path4 = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _simulate(params: RegimeParams, n: int, seed: int) -> Path4:
    """Regimes, returns, deviations from the anchor and trend directions of one process over n ticks."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n + 1, 3))
    process = RegimeProcess(params, z[0, 0], z[0, 1])
    regimes = np.empty(n, dtype=np.int64)
    returns = np.empty(n)
    deviation = np.empty(n)  # before the tick's return
    direction = np.empty(n)
    for i in range(n):
        before = process.x - process.anchor
        returns[i] = process.step(*z[i + 1])
        regimes[i] = process.regime
        # The pull applies to the deviation the tick started from (within its regime).
        deviation[i] = before if i and regimes[i] == regimes[i - 1] else np.nan
        direction[i] = process.direction
    return regimes, returns, deviation, direction


@pytest.fixture(scope="module")
def path() -> Path4:
    return _simulate(RegimeParams(), 300_000, seed=5)


def test_regimes_switch_with_the_documented_matrix(path: Path4) -> None:
    regimes = path[0]
    pairs = Counter(zip(regimes[:-1].tolist(), regimes[1:].tolist(), strict=True))
    for i, row in enumerate(TRANSITIONS):
        leaving = sum(pairs[(i, j)] for j in range(3) if j != i)
        total = sum(pairs[(i, j)] for j in range(3))
        expected = 1 - row[i]
        # A binomial count: within 4 standard errors.
        assert abs(leaving / total - expected) < 4 * math.sqrt(expected / total), (i, leaving, total)
    shares = np.bincount(regimes, minlength=3) / len(regimes)
    assert np.allclose(shares, RegimeParams().stationary(), atol=0.05), shares
    assert RegimeParams().stationary() == pytest.approx((4 / 11, 4 / 11, 3 / 11))


def test_each_regime_has_its_signature(path: Path4) -> None:
    p = RegimeParams()
    regimes, returns, deviation, direction = path
    trend = regimes == Regime.TREND
    # Trend: returns drift by trend_drift sigma in the episode's direction, sigma of noise around it.
    assert np.mean(returns[trend] * direction[trend]) == pytest.approx(p.trend_drift * p.sigma, rel=0.05)
    assert np.std(returns[trend] * direction[trend]) == pytest.approx(p.sigma, rel=0.02)
    # Mean reversion: the next return pulls the deviation back, slope -reversion.
    mr = (regimes == Regime.MEAN_REVERT) & ~np.isnan(deviation)
    slope = np.polyfit(deviation[mr], returns[mr], 1)[0]
    assert slope == pytest.approx(-p.reversion, abs=0.02)
    # Volatile: long-run volatility garch_vol sigma, no direction, clustered volatility.
    vol = regimes == Regime.VOLATILE
    r = returns[vol]
    assert np.std(r) == pytest.approx(p.garch_vol * p.sigma, rel=0.1)
    both = vol[1:] & vol[:-1]
    lagged, now = returns[:-1][both], returns[1:][both]
    assert abs(np.corrcoef(lagged, now)[0, 1]) < 0.02
    assert np.corrcoef(lagged**2, now**2)[0, 1] > 0.05  # GARCH: big moves follow big moves


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="sum"):
        RegimeParams(transitions=((0.5, 0.5, 0.5), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)))
    with pytest.raises(ValueError, match="stationary"):
        RegimeParams(garch_alpha=0.2, garch_beta=0.8)
    with pytest.raises(ValueError, match="reversion"):
        RegimeParams(reversion=1.5)


def test_the_regime_feed_is_selected_by_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADING_MARKETDATA__FEED", "regime")
    settings = Settings().marketdata
    assert settings.feed == "regime"
    feed = create_feed(settings, SPECS)
    assert isinstance(feed, SyntheticFeed) and feed.name == "regime"
    assert isinstance(create_feed(FeedSettings(feed="synthetic"), SPECS), SyntheticFeed)


async def test_the_regime_feed_yields_its_generator_s_ticks() -> None:
    feed = create_feed(FeedSettings(feed="regime", feed_rate=0, feed_max_batch=64, feed_seed=8), SPECS)
    assert feed is not None
    batches = feed.batches()
    first = await anext(batches)
    expected = RegimeGenerator(SPECS, seed=8, spread_bps=2.0).next_batch(64, T0)
    assert _key(list(first)) == _key(expected)


def test_the_committed_sample_is_what_its_readme_says(tmp_path: Path) -> None:
    """Provenance: the documented command makes the committed bytes again."""
    readme = (SAMPLE.parent / "README.md").read_text()
    digest = hashlib.sha256(SAMPLE.read_bytes()).hexdigest()
    assert digest in readme
    again = tmp_path / "again.csv"
    write_sample(again, symbols=["BTC-USD", "ETH-USD", "SOL-USD", "AAPL"], ticks=4000, seed=2024, rate=50)
    assert hashlib.sha256(again.read_bytes()).hexdigest() == digest
    ticks = [t for chunk in replay_ticks(SAMPLE) for t in chunk]
    assert len(ticks) == 4000 and not any(t.error for t in ticks)
    assert Counter(t.symbol for t in ticks) == {s: 1000 for s in ("BTC-USD", "ETH-USD", "SOL-USD", "AAPL")}
    times = [t.exchange_time_ns for t in ticks]
    assert times == sorted(times) and times[1] - times[0] == 20_000_000
    assert ticks[0].bid_price is not None and ticks[0].bid_price > Decimal(59_000)
