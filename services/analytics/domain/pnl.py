"""A tenant's PnL series and trade statistics: sampling snapshots per step,
the time-weighted exposure and drawdown of a path, win rate and profit
factor (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from services.analytics.domain.units import EXACT, ZERO, divide


@dataclass(frozen=True, slots=True)
class PnlSample:
    """The tenant's figures as of one snapshot."""

    at_ns: int
    currency: str
    equity: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    fees: Decimal


def pnl_series(
    samples: Sequence[PnlSample], start_ns: int, end_ns: int, step_ns: int
) -> list[tuple[int, PnlSample]]:
    """The value at the end of each step [start + k*step, ...) within [start, end):
    the last sample at or before that moment (carried forward), steps before the
    first sample left out. `samples` are ordered by time and may begin before start."""
    out: list[tuple[int, PnlSample]] = []
    index = 0
    current: PnlSample | None = None
    point = start_ns + step_ns
    # The last step ends at `end` at most (a partial last step ends at `end`).
    while point - step_ns < end_ns:
        at = min(point, end_ns)
        while index < len(samples) and samples[index].at_ns <= at:
            current = samples[index]
            index += 1
        if current is not None:
            out.append((at, current))
        point += step_ns
    return out


@dataclass(frozen=True, slots=True)
class ExposurePoint:
    """Gross exposure and equity (or a symbol's PnL) from `at_ns` on."""

    at_ns: int
    exposure: Decimal
    equity: Decimal


@dataclass(frozen=True, slots=True)
class PathStats:
    average_exposure: Decimal
    max_exposure: Decimal
    max_drawdown: Decimal
    max_drawdown_ratio: Decimal | None


def path_stats(points: Sequence[ExposurePoint], start_ns: int, end_ns: int) -> PathStats:
    """Time-weighted average and maximum of gross exposure, and the largest
    fall of equity from a previous peak, over [start, end).

    `points` are ordered by time; the last one at or before `start` (the state
    carried in) counts from `start` on. The period before the first known
    point counts for nothing (the exposure there is unknown, not zero)."""
    carried = [p for p in points if p.at_ns <= start_ns][-1:]
    inside = [p for p in points if start_ns < p.at_ns < end_ns]
    path = [ExposurePoint(start_ns, p.exposure, p.equity) for p in carried] + inside
    weighted = ZERO
    covered = 0
    max_exposure = ZERO
    peak: Decimal | None = None
    max_dd = ZERO
    dd_ratio: Decimal | None = None
    for i, point in enumerate(path):
        until = path[i + 1].at_ns if i + 1 < len(path) else end_ns
        weighted = EXACT.add(weighted, EXACT.multiply(point.exposure, Decimal(until - point.at_ns)))
        covered += until - point.at_ns
        max_exposure = max(max_exposure, point.exposure)
        if peak is None or point.equity > peak:
            peak = point.equity
        fall = EXACT.subtract(peak, point.equity)
        if fall > max_dd:
            max_dd = fall
            dd_ratio = divide(fall, peak) if peak > 0 else None
    average = divide(weighted, Decimal(covered)) if covered else ZERO
    if max_dd == 0:
        dd_ratio = ZERO if peak is not None and peak > 0 else None
    return PathStats(average, max_exposure, max_dd, dd_ratio)


def symbol_points(
    rows: Iterable[tuple[int, Sequence[str], Sequence[Decimal], Sequence[Decimal], Sequence[Decimal]]],
    symbol: str,
) -> list[ExposurePoint]:
    """One symbol's exposure (|market value|) and PnL path from portfolio
    snapshots (at, symbols, market values, realised - fees, unrealised). A
    snapshot without the symbol means its position was flat: no exposure, no
    unrealised PnL, and the realised part as it last was (the snapshot lists
    open positions only, so a close between two snapshots is not seen)."""
    out: list[ExposurePoint] = []
    locked = ZERO
    for at_ns, symbols, values, realized_net, unrealized in rows:
        try:
            i = list(symbols).index(symbol)
        except ValueError:
            out.append(ExposurePoint(at_ns, ZERO, locked))
            continue
        locked = realized_net[i]
        out.append(ExposurePoint(at_ns, abs(values[i]), EXACT.add(realized_net[i], unrealized[i])))
    return out


def win_rate(winning: int, trades: int) -> Decimal | None:
    return divide(Decimal(winning), Decimal(trades)) if trades else None


def profit_factor(gross_profit: Decimal, gross_loss: Decimal) -> Decimal | None:
    """Gross profit over the absolute gross loss; None without a losing trade."""
    return divide(gross_profit, abs(gross_loss)) if gross_loss else None
