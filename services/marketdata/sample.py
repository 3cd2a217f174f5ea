"""Write a replay file of the regime feed: ``python -m services.marketdata.sample``.

The file is in ReplayFeed's format (REPLAY_COLUMNS, CSV; exchange_time in
ISO 8601 UTC, as an exchange export would carry it): the symbols tick
round-robin at ``--rate`` ticks/s in all, from ``--start``. The same seed and
arguments give the same bytes. services/marketdata/samples/README.md says how
the committed sample was made.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.marketdata.feeds import REPLAY_COLUMNS, RegimeGenerator, seeded_spec
from services.marketdata.regimes import RegimeParams


def write_sample(
    path: Path,
    *,
    symbols: Sequence[str],
    ticks: int,
    seed: int,
    rate: float = 50.0,
    start: datetime = datetime(2026, 1, 5, 14, 30, tzinfo=UTC),
    spread_bps: float = 2.0,
) -> int:
    """Write `ticks` rows of the regime feed to `path`; returns the rows written."""
    generator = RegimeGenerator(
        [seeded_spec(s) for s in symbols], seed=seed, spread_bps=spread_bps, params=RegimeParams()
    )
    step = timedelta(seconds=1 / rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(REPLAY_COLUMNS)
        for i, tick in enumerate(generator.next_batch(ticks, 0)):
            at = (start + i * step).isoformat().replace("+00:00", "Z")
            writer.writerow(
                [
                    tick.symbol,
                    tick.bid_price,
                    tick.bid_size,
                    tick.ask_price,
                    tick.ask_size,
                    "" if tick.last_price is None else tick.last_price,
                    "" if tick.last_size is None else tick.last_size,
                    at,
                    tick.sequence,
                ]
            )
    return ticks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.marketdata.sample", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, default=Path("services/marketdata/samples/regime-sample.csv"))
    parser.add_argument("--symbols", default="BTC-USD,ETH-USD,SOL-USD,AAPL")
    parser.add_argument("--ticks", type=int, default=4000, help="rows in all (symbols round-robin)")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--rate", type=float, default=50.0, help="ticks per second in all")
    args = parser.parse_args(argv)
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    rows = write_sample(args.out, symbols=symbols, ticks=args.ticks, seed=args.seed, rate=args.rate)
    print(f"{rows} rows of {', '.join(symbols)} written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
