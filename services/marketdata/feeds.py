"""Feed adapters of the marketdata service, behind one interface.

A feed is anything that yields batches of :class:`~services.marketdata.domain.RawTick`
(:class:`Feed`); marketdata normalises, validates and publishes what it yields.
Batches, not single ticks, so a fast feed costs one await per batch.

- :class:`SyntheticFeed`: geometric Brownian motion per symbol, seeded and
  deterministic (:class:`GbmGenerator` holds the pure part), paced to a rate.
  ``feed="regime"`` paces a :class:`RegimeGenerator` instead: trending,
  mean-reverting and volatility-clustered regimes switched by a known Markov
  matrix (services/marketdata/regimes.py), the market the decision models
  are trained on.
- :class:`ReplayFeed`: ticks from a CSV or Parquet file, paced by their
  timestamps (optionally sped up) or as fast as possible.
- Exchange adapters implement the same protocol (connect, translate venue
  messages into RawTicks) and register a factory in :data:`FEED_FACTORIES`.

Settings come from :class:`FeedSettings`, the ``marketdata`` section of
``runtime.config.Settings`` (env ``TRADING_MARKETDATA__<FIELD>``).
"""

from __future__ import annotations

import asyncio
import csv
import math
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from runtime.config import MarketDataSettings
from services.marketdata.domain import RawTick
from services.marketdata.regimes import PROCESS_DRAWS, Regime, RegimeParams, RegimeProcess

SECONDS_PER_YEAR = 365.0 * 24 * 3600

# Starting prices of the seeded instruments (others start at DEFAULT_PRICE).
INITIAL_PRICES: Mapping[str, Decimal] = {
    "BTC-USD": Decimal("60000"),
    "ETH-USD": Decimal("3000"),
    "SOL-USD": Decimal("150"),
    "EUR-USD": Decimal("1.08"),
    "AAPL": Decimal("190"),
    "MSFT": Decimal("420"),
    "NVDA": Decimal("120"),
    "SPY": Decimal("520"),
}
DEFAULT_PRICE = Decimal("100")


class Feed(Protocol):
    """A source of raw updates. `batches()` runs until the feed ends (a replay
    file is exhausted) or the consuming task is cancelled."""

    @property
    def name(self) -> str: ...

    def batches(self) -> AsyncIterator[Sequence[RawTick]]: ...


# The feed's settings live with all others in runtime.config (env TRADING_MARKETDATA__*).
FeedSettings = MarketDataSettings


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """What the synthetic feed needs of an instrument."""

    symbol: str
    price: Decimal
    tick_size: Decimal
    lot_size: Decimal


# Tick and lot sizes of the seeded instruments (migrations/0001_instruments.sql)
# that differ from 0.01 and 1.
_SEEDED_TICK_SIZE: Mapping[str, Decimal] = {"EUR-USD": Decimal("0.00001"), "SOL-USD": Decimal("0.001")}
_SEEDED_LOT_SIZE: Mapping[str, Decimal] = {
    "BTC-USD": Decimal("0.00001"),
    "ETH-USD": Decimal("0.0001"),
    "SOL-USD": Decimal("0.001"),
}


def seeded_spec(symbol: str) -> SymbolSpec:
    """A seeded instrument as the synthetic feeds quote it, without the
    database (training, sample files): starting price, tick and lot size."""
    return SymbolSpec(
        symbol,
        INITIAL_PRICES.get(symbol, DEFAULT_PRICE),
        _SEEDED_TICK_SIZE.get(symbol, Decimal("0.01")),
        _SEEDED_LOT_SIZE.get(symbol, Decimal(1)),
    )


# ---------------------------------------------------------------- synthetic


def _normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


class TickGenerator(Protocol):
    """A deterministic source of synthetic ticks (:class:`GbmGenerator`, :class:`RegimeGenerator`)."""

    def next_batch(self, n: int, now_ns: int) -> list[RawTick]: ...


class _Quoter:
    """The book around a mid, shared by the synthetic generators.

    Bid and ask sit ``spread_bps / 2`` around the mid, rounded outwards to the
    tick size; sizes are log-normal around ~10,000 quote units, in lots; a
    share ``trade_probability`` of the ticks carries a trade at the bid or the
    ask. Five standard normals per tick decide sizes and trades.
    """

    __slots__ = ("_base_lots", "_half_spread", "_source", "_specs", "_ticks", "_trade_probability")

    def __init__(
        self, specs: Sequence[SymbolSpec], *, spread_bps: float, source: str, trade_probability: float
    ) -> None:
        self._specs = list(specs)
        self._ticks = [float(s.tick_size) for s in specs]
        # ~10,000 quote units per level, at least one lot.
        self._base_lots = [max(1.0, 10_000.0 / (float(s.price) * float(s.lot_size))) for s in specs]
        self._half_spread = spread_bps / 2.0 / 10_000.0
        self._trade_probability = trade_probability
        self._source = source

    def quote(
        self,
        j: int,
        mid: float,
        draws: Sequence[float],
        now_ns: int,
        sequence: int,
    ) -> RawTick:
        """The tick of symbol `j` at `mid`; `draws`: z_bid, z_ask, z_trade, z_happens, z_side."""
        z_bid, z_ask, z_trade, z_happens, z_side = draws
        exp = math.exp
        spec = self._specs[j]
        tick = self._ticks[j]
        half = max(mid * self._half_spread, tick / 2.0)
        bid_ticks = max(1, math.floor((mid - half) / tick))
        ask_ticks = max(bid_ticks + 1, math.ceil((mid + half) / tick))
        base = self._base_lots[j]
        lot = spec.lot_size
        bid = Decimal(bid_ticks) * spec.tick_size
        ask = Decimal(ask_ticks) * spec.tick_size
        last_price: Decimal | None = None
        last_size: Decimal | None = None
        if _normal_cdf(z_happens) < self._trade_probability:
            last_price = bid if z_side < 0 else ask
            last_size = Decimal(max(1, int(base * exp(0.5 * z_trade) / 4))) * lot
        return RawTick(
            symbol=spec.symbol,
            bid_price=bid,
            bid_size=Decimal(max(1, int(base * exp(0.75 * z_bid)))) * lot,
            ask_price=ask,
            ask_size=Decimal(max(1, int(base * exp(0.75 * z_ask)))) * lot,
            last_price=last_price,
            last_size=last_size,
            exchange_time_ns=now_ns,
            sequence=sequence,
            source=self._source,
        )


class GbmGenerator:
    """Deterministic GBM quotes: the same seed and specs give the same ticks.

    Symbols tick round-robin; each tick of a symbol advances its mid by
    ``exp((drift - vol^2 / 2) dt + vol sqrt(dt) Z)`` with ``dt`` the symbol's
    nominal tick interval (in years). The book around the mid: :class:`_Quoter`.
    """

    def __init__(
        self,
        specs: Sequence[SymbolSpec],
        *,
        seed: int,
        rate: float,
        volatility: float,
        drift: float,
        spread_bps: float,
        source: str = "synthetic",
        trade_probability: float = 0.5,
        sequence_start: int = 0,
    ) -> None:
        if not specs:
            raise ValueError("the synthetic feed needs at least one symbol")
        self._specs = list(specs)
        self._rng = np.random.default_rng(seed)
        self._mids = [float(s.price) for s in specs]
        self._quoter = _Quoter(
            specs, spread_bps=spread_bps, source=source, trade_probability=trade_probability
        )
        per_symbol_rate = (rate if rate > 0 else 1000.0) / len(specs)
        dt = 1.0 / per_symbol_rate / SECONDS_PER_YEAR
        self._drift_dt = (drift - volatility * volatility / 2.0) * dt
        self._vol_sqrt_dt = volatility * math.sqrt(dt)
        self._next = 0
        # Sequences continue from here (the first tick gets sequence_start + 1).
        self._sequence = sequence_start

    @property
    def log_return_moments(self) -> tuple[float, float]:
        """Mean and standard deviation of one tick's log return of a symbol."""
        return self._drift_dt, self._vol_sqrt_dt

    def next_batch(self, n: int, now_ns: int) -> list[RawTick]:
        """The next `n` ticks, stamped `now_ns` (never earlier than the last)."""
        # One draw of six normals per tick, so the path depends on the seed
        # only, not on how a paced feed happens to cut it into batches.
        draws = self._rng.standard_normal((n, 6)).tolist()
        count = len(self._specs)
        out: list[RawTick] = []
        exp = math.exp
        quote = self._quoter.quote
        for i in range(n):
            j = self._next
            self._next = (j + 1) % count
            self._sequence += 1
            row = draws[i]
            mid = self._mids[j] * exp(self._drift_dt + self._vol_sqrt_dt * row[0])
            self._mids[j] = mid
            out.append(quote(j, mid, row[1:], now_ns, self._sequence))
        return out


def symbol_seed(seed: int, symbol: str) -> np.random.SeedSequence:
    """The seed of one symbol's own random stream: its path depends on
    (seed, symbol) only, not on which other symbols the feed quotes."""
    return np.random.SeedSequence([seed, zlib.crc32(symbol.encode())])


class RegimeGenerator:
    """Deterministic regime-switching quotes (services/marketdata/regimes.py).

    Symbols tick round-robin, each with its own :class:`RegimeProcess` and
    random stream (:func:`symbol_seed`): a symbol's ticks are the same whether
    the feed quotes it alone (as training does) or with others (live), and
    whatever the batch sizes. Eight normals per tick of a symbol: the
    process's three, then the book's five (:class:`_Quoter`). ``regimes``
    holds each symbol's regime after its last tick (for reports and tests).
    """

    def __init__(
        self,
        specs: Sequence[SymbolSpec],
        *,
        seed: int,
        spread_bps: float,
        params: RegimeParams | None = None,
        source: str = "regime",
        trade_probability: float = 0.5,
        sequence_start: int = 0,
    ) -> None:
        if not specs:
            raise ValueError("the synthetic feed needs at least one symbol")
        self.params = params or RegimeParams()
        self._specs = list(specs)
        self._rngs = [np.random.default_rng(symbol_seed(seed, s.symbol)) for s in specs]
        self._processes = []
        for rng in self._rngs:
            z_regime, z_dir = rng.standard_normal(2).tolist()
            self._processes.append(RegimeProcess(self.params, z_regime, z_dir))
        self._mids = [float(s.price) for s in specs]
        self._quoter = _Quoter(
            specs, spread_bps=spread_bps, source=source, trade_probability=trade_probability
        )
        self._next = 0
        self._sequence = sequence_start

    @property
    def regimes(self) -> dict[str, Regime]:
        return {s.symbol: p.regime for s, p in zip(self._specs, self._processes, strict=True)}

    def next_batch(self, n: int, now_ns: int) -> list[RawTick]:
        """The next `n` ticks, stamped `now_ns` (never earlier than the last)."""
        count = len(self._specs)
        # How many of the n ticks each symbol gets (round-robin from _next).
        per_symbol = [(n - ((j - self._next) % count) + count - 1) // count for j in range(count)]
        draws = [
            iter(rng.standard_normal((m, PROCESS_DRAWS + 5)).tolist()) if m else iter(())
            for rng, m in zip(self._rngs, per_symbol, strict=True)
        ]
        out: list[RawTick] = []
        exp = math.exp
        quote = self._quoter.quote
        for _ in range(n):
            j = self._next
            self._next = (j + 1) % count
            self._sequence += 1
            row = next(draws[j])
            mid = self._mids[j] * exp(self._processes[j].step(row[0], row[1], row[2]))
            self._mids[j] = mid
            out.append(quote(j, mid, row[PROCESS_DRAWS:], now_ns, self._sequence))
        return out


class SyntheticFeed:
    """Paces a :class:`TickGenerator` to `rate` ticks/s (0: as fast as possible)."""

    def __init__(
        self,
        generator: TickGenerator,
        *,
        rate: float,
        max_batch: int = 512,
        clock_ns: Callable[[], int] = time.time_ns,
        name: str = "synthetic",
    ) -> None:
        self._generator = generator
        self._rate = rate
        self._max_batch = max_batch
        self._clock_ns = clock_ns
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def batches(self) -> AsyncIterator[Sequence[RawTick]]:
        last_ns = 0
        if self._rate <= 0:
            while True:
                last_ns = max(last_ns, self._clock_ns())
                yield self._generator.next_batch(self._max_batch, last_ns)
                await asyncio.sleep(0)
        # Emit what is due since start; sleep at least 5 ms (a batch per
        # wake-up) or one tick interval, whichever is longer.
        interval = max(1.0 / self._rate, 0.005)
        start = time.monotonic()
        emitted = 0
        while True:
            due = int((time.monotonic() - start) * self._rate) + 1 - emitted
            if due > 0:
                n = min(due, self._max_batch)
                emitted += n
                last_ns = max(last_ns, self._clock_ns())
                yield self._generator.next_batch(n, last_ns)
            if due <= self._max_batch:
                await asyncio.sleep(interval)
            else:
                await asyncio.sleep(0)


# ---------------------------------------------------------------- replay

REPLAY_COLUMNS = (
    "symbol",
    "bid_price",
    "bid_size",
    "ask_price",
    "ask_size",
    "last_price",
    "last_size",
    "exchange_time",
    "sequence",
)


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, float):
        # repr is the shortest string that round-trips: 101.1, not 101.09999...
        return Decimal(repr(value))
    return Decimal(str(value).strip())


def _time_ns(value: Any) -> int:
    """Unix nanoseconds from an int (ns), a datetime, or ISO 8601 text (naive = UTC)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int):
        return value
    else:
        text = str(value).strip()
        if text.lstrip("-").isdigit():
            return int(text)
        moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def raw_tick_from_row(row: Mapping[str, Any], sequence: int, source: str) -> RawTick:
    """A RawTick from one file row; a row that does not parse becomes a
    RawTick with `error` set (rejected as MALFORMED, never silently skipped)."""
    symbol = str(row.get("symbol") or "")
    try:
        seq_value = row.get("sequence")
        return RawTick(
            symbol=symbol,
            bid_price=_decimal(row.get("bid_price")),
            bid_size=_decimal(row.get("bid_size")),
            ask_price=_decimal(row.get("ask_price")),
            ask_size=_decimal(row.get("ask_size")),
            last_price=_decimal(row.get("last_price")),
            last_size=_decimal(row.get("last_size")),
            exchange_time_ns=_time_ns(row.get("exchange_time")),
            sequence=int(seq_value) if seq_value not in (None, "") else sequence,
            source=source,
        )
    except (InvalidOperation, ValueError, TypeError) as exc:
        return RawTick(
            symbol, None, None, None, None, None, None, 0, sequence, source, f"unparsable row: {exc}"
        )


def _read_rows(path: Path, chunk: int) -> Iterator[list[dict[str, Any]]]:
    if path.suffix.lower() in (".parquet", ".pq"):
        # Imported on use: pyarrow is heavy to load. It ships no type hints.
        import pyarrow.parquet as pq

        with pq.ParquetFile(path) as file:
            for batch in file.iter_batches(batch_size=chunk):
                yield batch.to_pylist()
        return
    with path.open(newline="") as handle:
        rows: list[dict[str, Any]] = []
        for row in csv.DictReader(handle):
            rows.append(row)
            if len(rows) >= chunk:
                yield rows
                rows = []
        if rows:
            yield rows


def replay_ticks(path: Path, *, source: str = "replay", chunk: int = 512) -> Iterator[list[RawTick]]:
    """The file's rows as RawTicks, in chunks of at most `chunk`, unpaced
    (ReplayFeed paces them; training reads them as they are)."""
    counters: dict[str, int] = {}
    for rows in _read_rows(path, chunk):
        out: list[RawTick] = []
        for row in rows:
            symbol = str(row.get("symbol") or "")
            counters[symbol] = counters.get(symbol, 0) + 1
            out.append(raw_tick_from_row(row, counters[symbol], source))
        yield out


class ReplayFeed:
    """Replays a CSV or Parquet file of ticks (columns: REPLAY_COLUMNS;
    `sequence` optional, numbered per symbol from 1 when absent; exchange_time
    as Unix ns, ISO 8601 or a Parquet timestamp).

    `pace="realtime"` keeps the file's gaps between timestamps (divided by
    `speed`); `"fast"` hands rows over as fast as they are read.
    """

    def __init__(
        self,
        path: Path,
        *,
        pace: Literal["realtime", "fast"] = "realtime",
        speed: float = 1.0,
        max_batch: int = 512,
        name: str = "replay",
    ) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"replay file {path} does not exist")
        self._path = path
        self._pace = pace
        self._speed = speed
        self._max_batch = max_batch
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def batches(self) -> AsyncIterator[Sequence[RawTick]]:
        first_ns: int | None = None
        start = time.monotonic()
        pending: list[RawTick] = []
        for chunk in replay_ticks(self._path, source=self._name, chunk=self._max_batch):
            for raw in chunk:
                if self._pace == "realtime" and raw.exchange_time_ns > 0:
                    if first_ns is None:
                        first_ns = raw.exchange_time_ns
                    wait = start + (raw.exchange_time_ns - first_ns) / 1e9 / self._speed - time.monotonic()
                    if wait > 0.001:
                        if pending:
                            yield pending
                            pending = []
                        await asyncio.sleep(wait)
                pending.append(raw)
            if pending:
                yield pending
                pending = []
            await asyncio.sleep(0)


# ---------------------------------------------------------------- factory

FeedFactory = Callable[[FeedSettings, Sequence[SymbolSpec]], Feed]


def _synthetic(settings: FeedSettings, specs: Sequence[SymbolSpec]) -> Feed:
    generator = GbmGenerator(
        specs,
        seed=settings.feed_seed,
        rate=settings.feed_rate,
        volatility=settings.feed_volatility,
        drift=settings.feed_drift,
        spread_bps=settings.feed_spread_bps,
        # Microseconds since the epoch: a restarted process continues above
        # the sequences it published before, so consumers that drop
        # non-increasing sequences do not ignore it.
        sequence_start=time.time_ns() // 1000,
    )
    return SyntheticFeed(generator, rate=settings.feed_rate, max_batch=settings.feed_max_batch)


def _regime(settings: FeedSettings, specs: Sequence[SymbolSpec]) -> Feed:
    generator = RegimeGenerator(
        specs,
        seed=settings.feed_seed,
        spread_bps=settings.feed_spread_bps,
        sequence_start=time.time_ns() // 1000,  # as _synthetic: above a previous run's sequences
    )
    return SyntheticFeed(generator, rate=settings.feed_rate, max_batch=settings.feed_max_batch, name="regime")


def _replay(settings: FeedSettings, specs: Sequence[SymbolSpec]) -> Feed:
    if settings.feed_file is None:
        raise ValueError("the replay feed needs TRADING_MARKETDATA__FEED_FILE")
    return ReplayFeed(
        settings.feed_file,
        pace=settings.feed_pace,
        speed=settings.feed_speed,
        max_batch=settings.feed_max_batch,
    )


# Feeds by the name in FeedSettings.feed. Exchange adapters add their factory here.
FEED_FACTORIES: dict[str, FeedFactory] = {"synthetic": _synthetic, "regime": _regime, "replay": _replay}


def create_feed(settings: FeedSettings, specs: Sequence[SymbolSpec]) -> Feed | None:
    """The configured feed, or None for ``feed="none"``."""
    if settings.feed == "none":
        return None
    factory = FEED_FACTORIES.get(settings.feed)
    if factory is None:
        raise ValueError(f"unknown feed {settings.feed!r}; known: none, {', '.join(sorted(FEED_FACTORIES))}")
    return factory(settings, specs)
